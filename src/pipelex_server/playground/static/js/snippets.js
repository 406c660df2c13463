// "Copy as curl" and "Copy as Python (SDK)" for the exact request the page sends.

const shellQuote = (text) => `'${String(text).replace(/'/g, "'\\''")}'`;

export function curlCommand(path, body, { withToken }) {
  const lines = [`curl -s ${shellQuote(location.origin + path)}`, `  -H 'Content-Type: application/json'`];
  if (withToken) lines.push(`  -H "Authorization: Bearer $PIPELEX_API_KEY"`);
  lines.push(`  -d ${shellQuote(JSON.stringify(body))}`);
  return lines.join(" \\\n");
}

function pyLiteral(value, indent = "") {
  if (value === null || value === undefined) return "None";
  if (value === true) return "True";
  if (value === false) return "False";
  if (typeof value === "number") return String(value);
  if (typeof value === "string") return JSON.stringify(value);
  const inner = `${indent}    `;
  if (Array.isArray(value)) return value.length ? `[\n${value.map((item) => `${inner}${pyLiteral(item, inner)},`).join("\n")}\n${indent}]` : "[]";
  const entries = Object.entries(value);
  return entries.length ? `{\n${entries.map(([key, item]) => `${inner}${JSON.stringify(key)}: ${pyLiteral(item, inner)},`).join("\n")}\n${indent}}` : "{}";
}

export function pythonSnippet(body) {
  const files = body.files || Object.fromEntries((body.mthds_contents || []).map((text, index) => [`bundle_${index}.mthds`, text]));
  const args = [`files=${pyLiteral(files, "        ")}`, `inputs=${pyLiteral(body.inputs || {}, "        ")}`];
  if (body.pipe_code) args.unshift(`pipe_code=${JSON.stringify(body.pipe_code)}`);
  if (body.dry_run) args.push("extra={\"dry_run\": True}");
  return [
    "import asyncio",
    "import os",
    "",
    "from pipelex_sdk.client import PipelexAPIClient",
    "",
    "",
    "async def main() -> None:",
    `    async with PipelexAPIClient(base_url=${JSON.stringify(location.origin)}, api_key=os.environ.get("PIPELEX_API_KEY", "")) as client:`,
    "        result = await client.execute(",
    ...args.map((arg) => `            ${arg},`),
    "        )",
    "        print(result.main_stuff)",
    "",
    "",
    "asyncio.run(main())",
  ].join("\n");
}
