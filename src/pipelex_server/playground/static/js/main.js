// The playground page: write or open a method, validate it, fill its inputs, run it and watch it.

import { el, clear, safePath } from "./dom.js";
import { call, describeProblem, getToken, setToken } from "./api.js";
import { Editor } from "./editor.js";
import { renderGraph } from "./graph.js";
import { InputsForm } from "./form.js";
import { RunController } from "./run.js";
import { History } from "./history.js";
import { CatalogPanel } from "./catalog.js";

const EXAMPLE_BUNDLE = `domain = "hello"
main_pipe = "summarize"

[pipe.summarize]
type = "PipeLLM"
description = "Summarize the input text in one sentence"
inputs = { text = "Text" }
output = "Text"
prompt = "Summarize in one sentence:\\n@text"
`;
const EXAMPLE_TEXT = "Pipelex turns plain-language pipeline definitions into reproducible AI workflows that run as HTTP endpoints.";

const $ = (id) => document.getElementById(id);
const notice = $("notice");

function notify(message, isError = false) {
  notice.textContent = message;
  notice.classList.toggle("error", isError);
  notice.hidden = !message;
}

// -- theme and auth -------------------------------------------------------------------------------------------------
const THEME_KEY = "pipelex-playground-theme";
function applyTheme(theme) {
  document.documentElement.dataset.theme = theme;
}
applyTheme(sessionStorage.getItem(THEME_KEY) || (matchMedia("(prefers-color-scheme: dark)").matches ? "dark" : "light"));
$("theme-toggle").addEventListener("click", () => {
  const next = document.documentElement.dataset.theme === "dark" ? "light" : "dark";
  sessionStorage.setItem(THEME_KEY, next);
  applyTheme(next);
});
const tokenField = $("auth-token");
tokenField.value = getToken();
tokenField.addEventListener("input", () => {
  setToken(tokenField.value.trim());
  rebuildRequest();
});

// -- editor, verdict, graph -----------------------------------------------------------------------------------------
const editor = new Editor($("bundle-editor"), $("editor-highlight"), $("file-select"));
const verdict = $("verdict");
const pipeSelect = $("pipe-select");
let forms = {};
let defaultPipe = null;
let stale = true;
editor.onChange(() => {
  stale = true;
  rebuildRequest();
});

function where(location) {
  if (!location) return "";
  const parts = [];
  if (location.file) parts.push(location.file);
  if (location.line) parts.push(`line ${location.line}${location.column ? `:${location.column}` : ""}`);
  if (location.pipe) parts.push(`pipe ${location.pipe}`);
  if (location.field && location.field !== `pipe.${location.pipe}`) parts.push(`field ${location.field}`);
  return parts.join(", ");
}

function showVerdict(result) {
  if (!result.ok) {
    clear(verdict, el("p", { class: "bad", "data-testid": "verdict-state", text: "Not checked" }), el("p", { text: describeProblem(result) }), errorList(result.data?.errors));
    return;
  }
  const answer = result.data;
  if (answer.is_valid) {
    const warnings = answer.warnings || [];
    clear(verdict, el("p", { class: "ok", "data-testid": "verdict-state", text: `Valid${answer.is_runnable === false ? " (not runnable yet)" : ""}` }),
      warnings.length ? el("ul", {}, warnings.map((warning) => el("li", { text: typeof warning === "string" ? warning : warning.detail || JSON.stringify(warning) }))) : null);
  } else {
    clear(verdict, el("p", { class: "bad", "data-testid": "verdict-state", text: "Invalid" }), errorList(answer.errors));
  }
  const located = (answer.errors || []).filter((error) => error.location?.line);
  editor.setMarks(located.map((error) => ({ file: error.location.file, line: error.location.line })));
}

function errorList(errors) {
  if (!errors?.length) return null;
  return el("ul", { "data-testid": "verdict-errors" }, errors.map((error) => {
    const location = error.location || {};
    const go = location.line ? el("button", { type: "button", text: "Go to", onclick: () => editor.goTo(location.file, location.line, location.column) }) : null;
    return el("li", { "data-testid": "verdict-error" }, el("strong", { text: error.code || "error" }), " ", el("span", { text: error.detail || "" }), " ",
      el("span", { class: "where", "data-testid": "verdict-location", text: where(location) }), go);
  }));
}

async function validate() {
  $("validate-button").disabled = true;
  clear(verdict, el("p", { class: "muted", text: "Validating…" }));
  try {
    const method = methodPart();
    const [checked, io] = await Promise.all([call("POST", "/v1/validate", method), call("POST", "/v1/pipe-io", { ...method, all_pipes: true })]);
    showVerdict(checked);
    if (checked.ok && checked.data.is_valid) renderGraph($("graph"), checked.data.graph_spec);
    else clear($("graph"), el("p", { class: "muted", text: checked.ok ? "No graph: the method does not validate." : "No graph: the method was not checked." }));
    if (io.ok && io.data.is_valid) {
      forms = io.data.input_form || {};
      defaultPipe = io.data.default_pipe_ref || Object.keys(forms)[0] || null;
      const previous = pipeSelect.value;
      clear(pipeSelect, Object.keys(forms).map((ref) => el("option", { value: ref, text: ref === defaultPipe ? `${ref} (main)` : ref })));
      pipeSelect.value = previous in forms ? previous : defaultPipe;
      $("pipe-bar").hidden = false;
      inputs.build(forms[pipeSelect.value]); // kept as filled when the pipe's inputs did not change
      stale = false;
    } else {
      forms = {};
      clear(pipeSelect);
      $("pipe-bar").hidden = true;
      inputs.reset(checked.ok ? "Fix the method: its inputs appear once it validates." : "The method was not checked: see the verdict.");
    }
    if (!checked.ok && (checked.status === 401 || checked.status === 403)) notify(describeProblem(checked), true);
    else notify("");
  } finally {
    $("validate-button").disabled = false;
  }
}

$("validate-button").addEventListener("click", validate);
$("format-button").addEventListener("click", async () => {
  const formatted = await call("POST", "/v1/format", { content: editor.textarea.value });
  if (formatted.ok) {
    if (formatted.data.changed) editor.setText(formatted.data.formatted);
    notify(formatted.data.changed ? "Formatted." : "Already formatted.");
  } else notify(`Format: ${describeProblem(formatted)}`, true);
});
$("example-button").addEventListener("click", async () => {
  editor.setBundle(EXAMPLE_BUNDLE);
  await validate();
  const field = document.querySelector('[data-testid="input-text"]');
  if (field) {
    field.value = EXAMPLE_TEXT;
    rebuildRequest();
  }
});

async function openFiles(fileList) {
  const files = {};
  for (const file of fileList) {
    const path = safePath(file.webkitRelativePath ? file.webkitRelativePath.split("/").slice(1).join("/") : file.name);
    if (!path || path.split("/").some((part) => part.startsWith(".")) || file.size > 2 * 1024 * 1024) continue;
    files[path] = await file.text();
  }
  if (!Object.keys(files).length) {
    notify("No readable file in that selection (hidden files and files over 2 MiB are left out).", true);
    return;
  }
  editor.setFiles(files);
  await validate();
}
for (const picker of [$("open-files"), $("open-folder")]) {
  picker.addEventListener("change", async () => {
    await openFiles(picker.files);
    picker.value = ""; // picking the same files again reloads them
  });
}

// -- inputs, request JSON, run --------------------------------------------------------------------------------------
const requestJson = $("request-json");
const requestState = $("request-state");
let requestEdited = false;
const inputs = new InputsForm($("inputs-form"), () => rebuildRequest());
pipeSelect.addEventListener("change", () => inputs.build(forms[pipeSelect.value], { force: true }));

function builtRequest() {
  const body = { ...methodPart(), inputs: inputs.inputs() };
  if (pipeSelect.value && pipeSelect.value !== defaultPipe) body.pipe_code = pipeSelect.value;
  if ($("dry-run-toggle").checked) body.dry_run = true;
  return body;
}

function rebuildRequest(force = false) {
  if (requestEdited && !force) return;
  requestEdited = false;
  requestJson.value = JSON.stringify(builtRequest(), null, 2);
  requestState.textContent = "Built from the form.";
}
requestJson.addEventListener("input", () => {
  requestEdited = true;
  requestState.textContent = "Edited by hand: this JSON is sent as is.";
});
$("request-reset").addEventListener("click", () => rebuildRequest(true));

// -- the methods catalog: while the editor holds an opened method unchanged, requests name it by method_id -----------
const catalog = new CatalogPanel({ root: $("catalog"), editor, notify, onOpened: () => validate(), onSelector: () => rebuildRequest() });

function methodPart() {
  const selector = catalog.selector();
  return selector ? { method_id: selector } : editor.method();
}

/** Put a run's recorded inputs in the form's simple fields (text, numbers) where the form has them. */
function fillInputs(values) {
  for (const [name, value] of Object.entries(values || {})) {
    const field = document.querySelector(`#inputs-form [data-testid="input-${CSS.escape(name)}"]`);
    if (!field || !("value" in field) || field.type === "file") continue;
    const content = value && typeof value === "object" && !Array.isArray(value) ? value.content : value;
    const plain = content && typeof content === "object" ? content.text ?? content.number ?? content.url : content;
    if (typeof plain === "string" || typeof plain === "number") field.value = String(plain);
  }
}

/** Re-run of a run this tab did not start: open its method, prefill its inputs, and let the user press Run. */
async function prefillFromRun({ runId, body, method, treeOf }) {
  showView("build");
  let missing = "";
  if (method) {
    const opened = await catalog.open(method.method_id, method.version);
    if (!opened) missing = ` Its method ${method.method_id}@${method.version} could not be opened (see above).`;
  } else if (body.mthds_contents?.length) {
    catalog.close();
    if (body.mthds_contents.length === 1) editor.setBundle(body.mthds_contents[0]);
    else editor.setFiles(Object.fromEntries(body.mthds_contents.map((text, index) => [`bundle_${index + 1}.mthds`, text])));
    await validate();
  } else {
    const of = treeOf ? ` (a tree recorded as ${treeOf}'s)` : "";
    missing = ` The run's method was sent as a file tree${of}, which the run record does not keep: open the same method in the editor first.`;
  }
  fillInputs(body.inputs);
  $("dry-run-toggle").checked = Boolean(body.dry_run);
  const prefilled = { ...methodPart(), inputs: body.inputs };
  const isDefault = body.pipe_code === defaultPipe || String(defaultPipe).endsWith(`.${body.pipe_code}`);
  if (body.pipe_code && !isDefault) prefilled.pipe_code = body.pipe_code;
  if (body.dry_run) prefilled.dry_run = true;
  requestJson.value = JSON.stringify(prefilled, null, 2);
  requestEdited = true;
  requestState.textContent = `The inputs of run ${runId}; edit them or rebuild from the form.`;
  $("request-details").open = true;
  const draftNote = method?.version === "draft" ? " It ran the draft as it was then: the draft opened is the one saved now." : "";
  notify(`Prefilled from run ${runId}: check the method and the inputs, then press Run.${draftNote}${missing}`, Boolean(missing));
}
$("dry-run-toggle").addEventListener("change", () => {
  if (!requestEdited) return rebuildRequest();
  try {
    const body = JSON.parse(requestJson.value);
    if ($("dry-run-toggle").checked) body.dry_run = true;
    else delete body.dry_run;
    requestJson.value = JSON.stringify(body, null, 2);
  } catch {
    /* the hand-edited JSON does not parse; the run button says so */
  }
});

const runner = new RunController({
  progress: $("progress"),
  output: $("output"),
  stateLabel: $("run-state"),
  runButton: $("run-button"),
  cancelButton: $("cancel-button"),
  notify,
});

export async function runBody(body) {
  notify("");
  return runner.start(body);
}

$("run-button").addEventListener("click", async () => {
  if (stale && !requestEdited && editor.textarea.value.trim()) await validate();
  let body;
  try {
    body = requestEdited ? JSON.parse(requestJson.value) : builtRequest();
  } catch (error) {
    notify(`The request JSON does not parse: ${error.message}`, true);
    return;
  }
  await runBody(body);
});

// -- views ----------------------------------------------------------------------------------------------------------
const history = new History({
  list: $("runs-list"),
  detail: $("run-detail"),
  more: $("runs-more"),
  filter: $("runs-filter"),
  state: $("filter-state"),
  pipe: $("filter-pipe"),
  buttons: { rerun: $("detail-rerun"), redeliver: $("detail-redeliver"), remove: $("detail-delete") },
  notify,
  rerun: (body) => {
    showView("build");
    requestJson.value = JSON.stringify(body, null, 2);
    requestEdited = true;
    requestState.textContent = "The request of the run you re-ran; edit it or rebuild from the form.";
    $("request-details").open = true;
    runBody(body);
  },
  prefill: (found) => prefillFromRun(found),
});

function showView(name) {
  for (const view of ["build", "history"]) {
    $(`view-${view}`).hidden = view !== name;
    $(`tab-${view}`).setAttribute("aria-selected", String(view === name));
  }
  if (name === "history") history.refresh();
}
$("tab-build").addEventListener("click", () => showView("build"));
$("tab-history").addEventListener("click", () => showView("history"));
document.querySelector(".tabs").addEventListener("keydown", (event) => {
  if (event.key === "ArrowRight" || event.key === "ArrowLeft") {
    const next = $("tab-build").getAttribute("aria-selected") === "true" ? "history" : "build";
    showView(next);
    $(`tab-${next}`).focus();
  }
});

async function start() {
  rebuildRequest();
  // a server without a provider key runs dry only: say so, and start with "Dry run" ticked
  const health = await call("GET", "/health/ready");
  const live = health.data?.checks?.inference?.live;
  if (live === false) {
    $("dry-run-toggle").checked = true;
    rebuildRequest();
    notify("This server has no inference provider configured: runs are dry runs (every model call is mocked). New here? Press “Load example”, then “Run”.");
  } else if (!editor.textarea.value) {
    notify("New here? Press “Load example”, then “Run”.");
  }
  document.body.dataset.ready = "true";
}
start();
