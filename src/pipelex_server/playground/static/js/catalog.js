// The methods catalog in the playground: list and search the caller's methods, open a draft or a published version
// into the editor (its files come as signed links on this server), save the editor as the draft (compare-and-swap on
// the draft's token, a 409 shown as a conflict), publish (published / unchanged / refused with its verdict).
// While the editor holds what was opened, validate and run name the method by id (mt_x@draft, mt_x@3).

import { el, clear, safePath } from "./dom.js";
import { call, describeProblem } from "./api.js";

/** A signed link this page may fetch: same-origin as is, or a method-file link re-pointed at this server; else null. */
export function sameOriginLink(url, marker = "/v1/method-files/") {
  let parsed;
  try {
    parsed = new URL(url, location.href);
  } catch {
    return null;
  }
  if (parsed.origin === location.origin) return parsed.href;
  const at = parsed.pathname.indexOf(marker);
  return at >= 0 ? `${location.origin}${parsed.pathname.slice(at)}${parsed.search}` : null;
}

/** The method's files as text; a file that is not UTF-8 text (an image, a PDF) is listed in `binary`, not edited. */
async function readFiles(entries) {
  const files = {};
  const binary = [];
  for (const entry of entries || []) {
    const link = sameOriginLink(entry.url);
    if (!link) throw new Error(`the link to ${entry.path} is not on this server`);
    const response = await fetch(link, { credentials: "omit", cache: "no-store" });
    if (!response.ok) throw new Error(`${entry.path}: ${response.status} (the link may have expired: open the method again)`);
    const bytes = new Uint8Array(await response.arrayBuffer());
    let text;
    try {
      text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
    } catch {
      text = null;
    }
    if (text === null || text.includes("\u0000")) binary.push(entry.path);
    else files[safePath(entry.path) || "file"] = text;
  }
  return { files, binary };
}

export class CatalogPanel {
  constructor({ root, editor, notify, onOpened, onSelector }) {
    Object.assign(this, { root, editor, notify, onOpened });
    this.method = null; // {method_id, name, updated_at, latest_version}
    this.version = null; // "draft" or a number
    this.snapshot = null; // the tree as opened or saved: the editor is "as opened" while it matches
    this.$ = (testid) => root.querySelector(`[data-testid="${testid}"]`);
    root.querySelector("form").addEventListener("submit", (event) => {
      event.preventDefault();
      this.search();
    });
    this.$("save-draft").addEventListener("click", () => this.saveDraft());
    this.$("publish-button").addEventListener("click", () => this.publish());
    this.$("catalog-create").addEventListener("click", () => this.create());
    this.$("catalog-close").addEventListener("click", () => this.close());
    root.addEventListener("toggle", () => root.open && !this.listed && this.search());
    editor.onChange(() => this.showCurrent());
    this.showCurrent();
    this.onSelector = onSelector; // told from now on when the selector may have changed
  }

  /** The editor's method as a tree (what a draft holds). */
  tree() {
    if (this.editor.files) return { ...this.editor.files };
    const paths = Object.keys(this.snapshot || {});
    const path = paths.length === 1 ? paths[0] : "bundle.mthds";
    return { [path]: this.editor.textarea.value };
  }

  edited() {
    return this.snapshot !== null && JSON.stringify(this.tree()) !== JSON.stringify(this.snapshot);
  }

  /** The selector validate and run send while the editor holds the opened method unchanged; else null. */
  selector() {
    if (!this.method || this.edited()) return null;
    return `${this.method.method_id}@${this.version}`;
  }

  showCurrent() {
    this.onSelector?.();
    const current = this.$("catalog-current");
    const opened = Boolean(this.method);
    this.$("save-draft").disabled = !opened;
    this.$("publish-button").disabled = !opened;
    this.$("catalog-close").hidden = !opened;
    if (!opened) {
      clear(current, el("span", { class: "muted", text: "The editor's text is sent with each request (no catalog method open)." }));
      return;
    }
    const selector = this.selector();
    const binaryNote = this.binary?.length ? el("span", { class: "muted", text: ` Not in the editor (not text): ${this.binary.join(", ")}.` }) : null;
    const name = `${this.method.name} (${this.method.method_id}, ${this.version === "draft" ? "draft" : `version ${this.version}`})`;
    clear(current, el("strong", { text: name }), " ",
      selector ? el("span", { "data-testid": "catalog-selector", text: `validated and run as method_id ${selector}` })
        : el("span", { class: "warn", "data-testid": "catalog-selector", text: "edited since opened: the editor's text is sent; Save as draft to run it by id" }), binaryNote);
  }

  async search() {
    this.listed = true;
    // searches may overlap (opening the catalog lists everything while a query is typed): only the latest one shows
    const ticket = (this.searches = (this.searches || 0) + 1);
    const list = this.$("catalog-list");
    const q = this.$("catalog-search").value.trim();
    clear(list, el("li", { class: "muted", text: "Searching…" }));
    const query = new URLSearchParams({ limit: "50" });
    if (q) query.set("q", q);
    const result = await call("GET", `/v1/methods?${query}`);
    if (ticket !== this.searches) return;
    if (!result.ok) {
      clear(list, el("li", { class: "bad", text: describeProblem(result) }));
      return;
    }
    const items = result.data.items || [];
    clear(list, items.length ? items.map((method) => this.row(method)) : [el("li", { class: "muted", text: q ? "No method matches." : "No method yet: write one, then “Save as new method”." })]);
  }

  row(method) {
    const versions = el("select", { "aria-label": `Version of ${method.name}`, "data-testid": "catalog-version" }, el("option", { value: "draft", text: "draft" }));
    const latest = typeof method.latest_version === "number" ? method.latest_version : method.latest_version?.version;
    for (let number = latest || 0; number >= 1; number -= 1) versions.append(el("option", { value: String(number), text: `version ${number}` }));
    const open = el("button", { type: "button", "data-testid": "catalog-open", text: "Open", onclick: () => this.open(method.method_id, versions.value) });
    const pending = method.deletion_state ? el("span", { class: "bad", text: ` (${method.deletion_state === "failed" ? "deletion failed" : "being deleted"})` }) : null;
    return el("li", { "data-testid": "catalog-item", dataset: { methodId: method.method_id } },
      el("span", { class: "name", text: method.name }), pending, " ",
      el("span", { class: "muted", text: `${method.method_id}${latest ? ` · v${latest}` : " · not published"}${method.description ? ` · ${method.description}` : ""}` }),
      el("span", { class: "toolbar" }, versions, open));
  }

  /** Open `mt_x` at "draft" or a version number into the editor; resolves to true when the editor holds it. */
  async open(methodId, version = "draft") {
    const got = await call("GET", `/v1/methods/${encodeURIComponent(methodId)}`);
    if (!got.ok) return this.fail(describeProblem(got));
    let entries = got.data.files;
    if (version !== "draft") {
      const read = await call("GET", `/v1/methods/${encodeURIComponent(methodId)}/versions/${encodeURIComponent(version)}`);
      if (!read.ok) return this.fail(describeProblem(read));
      entries = read.data.files;
    }
    let files;
    let binary;
    try {
      ({ files, binary } = await readFiles(entries));
    } catch (error) {
      return this.fail(`Could not read the method's files: ${error.message}.`);
    }
    if (!Object.keys(files).length) return this.fail(`${got.data.name}: this ${version === "draft" ? "draft" : "version"} is empty.`);
    this.method = got.data;
    this.version = version === "draft" ? "draft" : Number(version);
    this.snapshot = files;
    this.binary = binary;
    this.editor.setFiles(files);
    this.say("");
    this.notify(`Opened ${got.data.name} (${this.selector()}).`);
    this.showCurrent();
    await this.onOpened();
    return true;
  }

  fail(message) {
    this.say(message, true);
    this.notify(message, true);
    return false;
  }

  say(message, bad = false, ...more) {
    const box = this.$("catalog-result");
    clear(box, message ? el("p", { class: bad ? "bad" : "ok", text: message }) : null, more);
  }

  close() {
    this.method = null;
    this.snapshot = null;
    this.binary = [];
    this.say("");
    this.showCurrent();
  }

  async create() {
    const name = this.$("catalog-name").value.trim();
    if (!name) return this.fail("Name the new method first.");
    const tree = this.tree();
    const created = await call("POST", "/v1/methods", { name, files: tree });
    if (!created.ok) return this.fail(`Not saved: ${describeProblem(created)}`);
    Object.assign(this, { method: created.data, version: "draft", snapshot: tree, binary: [] });
    this.say(`Saved as ${created.data.method_id}: the editor is its draft.`);
    this.showCurrent();
    await this.onOpened();
    await this.search();
    return true;
  }

  async saveDraft(overwrite = false) {
    if (this.binary?.length) return this.fail(`Not saved: this method holds files the editor cannot hold (${this.binary.join(", ")}); edit it with the SDK or the API.`);
    const tree = this.tree();
    const body = { files: tree };
    if (!overwrite) body.expected_updated_at = this.method.updated_at;
    const saved = await call("PUT", `/v1/methods/${encodeURIComponent(this.method.method_id)}/draft`, body);
    if (saved.status === 409 && saved.data?.code === "pipelex.catalog.update_conflict") {
      const reopen = el("button", { type: "button", "data-testid": "conflict-reopen", text: "Open their draft (drops your edits)", onclick: () => this.open(this.method.method_id, "draft") });
      const force = el("button", { type: "button", "data-testid": "conflict-overwrite", class: "danger", text: "Overwrite their draft with mine", onclick: () => this.saveDraft(true) });
      this.say("Conflict: the draft was saved elsewhere since you opened it. Nothing was written; your text is still in the editor.", true,
        el("p", { "data-testid": "conflict", class: "muted", text: describeProblem(saved) }), el("div", { class: "toolbar" }, reopen, force));
      return false;
    }
    if (!saved.ok) return this.fail(`Not saved: ${describeProblem(saved)}`);
    Object.assign(this, { method: { ...this.method, ...saved.data }, version: "draft", snapshot: tree });
    this.say(`Draft saved (${saved.data.method_id}@draft).`);
    this.showCurrent();
    await this.onOpened(); // the verdict and the form follow the saved draft
    return true;
  }

  async publish() {
    if (this.edited() || this.version !== "draft") {
      return this.fail(this.edited() ? "The editor holds unsaved edits: Save as draft first, then publish the draft." : "Open the draft to publish it (a published version is already published).");
    }
    const answer = await call("POST", `/v1/methods/${encodeURIComponent(this.method.method_id)}/publish`, { expected_draft_updated_at: this.method.updated_at });
    if (!answer.ok) {
      const conflict = answer.status === 409 && answer.data?.code === "pipelex.catalog.update_conflict";
      return this.fail(conflict ? `Conflict: the draft changed since you opened it; open it again before publishing. (${describeProblem(answer)})` : `Not published: ${describeProblem(answer)}`);
    }
    const { outcome, version, reason, message, validation } = answer.data;
    this.method = { ...this.method, ...answer.data.method };
    const box = (text, bad, extra = null) => this.say(text, bad, el("p", { "data-testid": "publish-outcome", class: "muted", text: outcome }), extra);
    if (outcome === "published") box(`Published as version ${version.version}: run it as ${this.method.method_id} or ${this.method.method_id}@${version.version}.`);
    else if (outcome === "unchanged") box(`Unchanged: the draft is already version ${version?.version}.`);
    else {
      const errors = (validation?.errors || []).map((error) => el("li", { "data-testid": "publish-error", text: `${error.code || "error"}: ${error.detail || ""}${error.location?.line ? ` (line ${error.location.line})` : ""}` }));
      box(`Refused (${reason}): ${message || ""}`, true, errors.length ? el("ul", {}, errors) : null);
    }
    this.showCurrent();
    await this.search();
    return outcome;
  }
}
