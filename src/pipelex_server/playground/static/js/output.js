// A run's result rendered by type (text, markdown, JSON tree, images, documents), its working memory and usage.
// Every value is written as text: a model's answer holding markup is shown, never interpreted.

import { el, clear } from "./dom.js";
import { call } from "./api.js";

export function jsonTree(value, key, open = true) {
  const label = key === undefined ? [] : [el("span", { class: "k", text: key }), ": "];
  if (value === null || typeof value !== "object") {
    const cls = typeof value === "string" ? "s" : "n";
    return el("div", { class: "row" }, label, el("span", { class: cls, text: JSON.stringify(value) }));
  }
  const entries = Array.isArray(value) ? value.map((item, index) => [String(index), item]) : Object.entries(value);
  const kind = Array.isArray(value) ? `[${entries.length}]` : `{${entries.length}}`;
  const details = el("details", { open: open || undefined }, el("summary", {}, label, el("span", { class: "muted", text: kind })));
  for (const [name, item] of entries) details.append(jsonTree(item, name, false));
  return details;
}

/** A small, safe markdown view: headings, lists, code fences, paragraphs, `code` and **bold**, all as text nodes. */
export function markdownView(text) {
  const root = el("div", { class: "markdown" });
  const lines = String(text).split("\n");
  let list = null;
  for (let index = 0; index < lines.length; index += 1) {
    const line = lines[index];
    if (line.startsWith("```")) {
      const code = [];
      for (index += 1; index < lines.length && !lines[index].startsWith("```"); index += 1) code.push(lines[index]);
      root.append(el("pre", {}, el("code", { text: code.join("\n") })));
      list = null;
      continue;
    }
    const heading = /^(#{1,6})\s+(.*)$/.exec(line);
    const bullet = /^\s*(?:[-*+]|\d+[.)])\s+(.*)$/.exec(line);
    if (heading) {
      root.append(el(`h${Math.min(heading[1].length + 2, 6)}`, {}, inline(heading[2])));
      list = null;
    } else if (bullet) {
      if (!list) root.append((list = el("ul")));
      list.append(el("li", {}, inline(bullet[1])));
    } else if (line.trim()) {
      root.append(el("p", {}, inline(line)));
      list = null;
    } else list = null;
  }
  return root;
}

function inline(text) {
  return String(text).split(/(`[^`]+`|\*\*[^*]+\*\*)/).filter(Boolean).map((part) => {
    if (part.startsWith("`") && part.endsWith("`") && part.length > 1) return el("code", { text: part.slice(1, -1) });
    if (part.startsWith("**") && part.endsWith("**") && part.length > 3) return el("strong", { text: part.slice(2, -2) });
    return document.createTextNode(part);
  });
}

const looksLikeMarkdown = (text) => /(^|\n)(#{1,6} |\s*[-*] |```)|\*\*[^*]+\*\*/.test(text);

function urlView(content, concept) {
  const url = String(content.url || "");
  const name = content.filename || content.title || url.split("/").pop() || "file";
  if (/Image/.test(concept) && /^data:image\/(png|jpeg|gif|webp);base64,/.test(url)) {
    return el("figure", {}, el("img", { src: url, alt: content.caption || name, "data-testid": "output-image" }), content.caption ? el("figcaption", { text: content.caption }) : null);
  }
  if (url.startsWith("pipelex-storage://")) {
    // resolved to a signed link after rendering (resolveStoredFiles)
    return el("p", { class: "stored-file", "data-testid": "stored-file", dataset: { uri: url, concept, name } }, el("code", { text: url }), el("span", { class: "muted", text: ` ${concept}` }));
  }
  if (/^https?:\/\//.test(url)) return el("p", {}, el("a", { href: url, rel: "noopener noreferrer", target: "_blank", text: name }), el("span", { class: "muted", text: ` ${concept}` }));
  return el("p", {}, el("code", { text: url.length > 200 ? `${url.slice(0, 200)}…` : url }), el("span", { class: "muted", text: ` ${concept}` }));
}

/** One stuff's content by type. */
export function contentView(content, concept = "") {
  if (content && typeof content === "object" && !Array.isArray(content)) {
    const keys = Object.keys(content);
    if (keys.length === 1 && typeof content.text === "string") {
      const pre = el("pre", { class: "text", "data-testid": "output-text", text: content.text });
      if (!looksLikeMarkdown(content.text)) return pre;
      const rendered = markdownView(content.text);
      rendered.hidden = true;
      const toggle = el("button", { type: "button", text: "Show as markdown", onclick: () => {
        rendered.hidden = !rendered.hidden;
        pre.hidden = !rendered.hidden ? true : false;
        toggle.textContent = rendered.hidden ? "Show as markdown" : "Show as text";
      } });
      return el("div", {}, toggle, pre, rendered);
    }
    if (typeof content.url === "string") return urlView(content, concept);
    if (Array.isArray(content.items)) return el("ol", {}, content.items.map((item) => el("li", {}, contentView(item, concept))));
  }
  return el("div", { class: "json-tree" }, jsonTree(content));
}

function usageView(usage) {
  if (!usage) return null;
  const tokens = usage.tokens || {};
  const line = `tokens in ${tokens.input ?? 0} · out ${tokens.output ?? 0}` + (usage.cost_usd != null ? ` · cost $${Number(usage.cost_usd).toFixed(6)}` : "");
  const rows = (usage.by_pipe || []).map((row) => el("li", { text: `${row.pipe_code}: ${row.inference_model_name || row.model_type} — in ${row.nb_tokens_by_category?.input ?? 0}, out ${row.nb_tokens_by_category?.output ?? 0}, $${Number(row.cost || 0).toFixed(6)}` }));
  return el("div", { class: "usage", "data-testid": "usage" }, el("p", { text: line }), rows.length ? el("ul", {}, rows) : null);
}

/** Render a run document (and its output when stored apart) into the container. */
export function renderRun(container, run, output, extras = []) {
  const state = run.pipeline_state;
  const parts = [el("p", {}, "State: ", el("span", { class: `state ${state}`, "data-testid": "output-state", text: state }), run.dry_run ? el("span", { class: "muted", text: " (dry run)" }) : null)];
  if (run.error) {
    parts.push(el("div", { class: "error-doc", "data-testid": "output-error" }, el("p", { text: `${run.error.code || ""}: ${run.error.detail || run.error.title || ""}` })));
  }
  const memory = output?.working_memory;
  const main = memory?.root?.[run.main_stuff_name];
  if (main) {
    parts.push(el("h4", { text: `Main result: ${run.main_stuff_name} · ${main.concept}` }), el("div", { class: "main", "data-testid": "output-main" }, contentView(main.content, main.concept)));
  }
  parts.push(usageView(run.usage));
  if (memory?.root) {
    const stuffs = Object.entries(memory.root).map(([name, stuff]) => el("details", {}, el("summary", { text: `${name} · ${stuff.concept}` }), el("div", { class: "json-tree" }, jsonTree(stuff.content))));
    parts.push(el("details", { "data-testid": "working-memory" }, el("summary", { text: `Working memory (${stuffs.length})` }), stuffs));
  }
  clear(container, parts, extras);
  resolveStoredFiles(container);
}

/**
 * Turn each stored file shown (a `pipelex-storage://` address) into a link from POST /v1/resolve-storage-url/bulk.
 * A link on this server shows an image inline; a link elsewhere (S3) is not fetched by the page: it is offered as a
 * link that opens outside it.
 */
export async function resolveStoredFiles(container) {
  const nodes = [...container.querySelectorAll('[data-testid="stored-file"][data-uri]')];
  if (!nodes.length) return;
  const uris = [...new Set(nodes.map((node) => node.dataset.uri))].slice(0, 100);
  const result = await call("POST", "/v1/resolve-storage-url/bulk", { uris });
  const items = {};
  for (const item of result.ok ? result.data.items || [] : []) items[item.uri] = item;
  for (const node of nodes) {
    const { uri, concept, name } = node.dataset;
    const item = items[uri];
    delete node.dataset.uri;
    if (!item?.url) {
      const why = item?.error?.detail || (result.ok ? "no link" : `${result.status} ${result.data?.code || ""}`);
      node.append(el("span", { class: "bad", "data-testid": "stored-file-error", text: ` — no link: ${why}` }));
      continue;
    }
    let sameOrigin = false;
    try {
      sameOrigin = new URL(item.url, location.href).origin === location.origin;
    } catch {
      /* not a URL: shown as a link below, which the browser will refuse */
    }
    const link = el("a", { href: item.url, rel: "noopener noreferrer", target: "_blank", "data-testid": "stored-file-link", text: `Open ${name}` });
    const until = item.expires_at ? el("span", { class: "muted", text: ` (link valid until ${new Date(item.expires_at).toLocaleTimeString()})` }) : null;
    const isImage = /Image/.test(concept) || /^image\/(png|jpeg|gif|webp)$/.test(item.content_type || "");
    if (isImage && sameOrigin) {
      clear(node, el("img", { src: item.url, alt: name, "data-testid": "output-image" }), link, until);
    } else if (!sameOrigin) {
      clear(node, link, until, el("span", { class: "muted", "data-testid": "stored-file-remote", text: " — stored in the object store (S3): the page does not fetch it; the link opens it in a new tab." }));
    } else clear(node, link, until);
  }
}
