// The inputs form, generated from the entry pipe's input_form (/v1/pipe-io): text, numbers, structured concepts as
// nested fields, lists with add/remove, Document/Image by upload or URL. Each field yields its JSON value.

import { el, clear, safePath } from "./dom.js";
import { call, describeProblem } from "./api.js";

let counter = 0;
const nextId = (name) => `in-${String(name).replace(/[^A-Za-z0-9_-]/g, "_")}-${(counter += 1)}`;

function labelFor(field, id, path) {
  return el("label", { for: id }, el("span", { text: field.name ?? path }), field.required === false ? el("span", { class: "hint", text: " (optional)" }) : null,
    field.description ? el("span", { class: "hint", text: ` — ${field.description}` }) : null);
}

/** A control for one field; returns {node, value()} where value() is the JSON value or undefined when left empty. */
function control(field, path, onChange) {
  const id = nextId(path);
  const testid = `input-${path}`;
  switch (field.kind) {
    case "prose":
    case "text": {
      const multiline = field.kind === "prose";
      const input = multiline
        ? el("textarea", { id, "data-testid": testid, rows: 3, oninput: onChange })
        : el("input", { id, "data-testid": testid, type: "text", oninput: onChange });
      return { node: el("div", { class: "field" }, labelFor(field, id, path), input), value: () => (input.value === "" ? undefined : input.value) };
    }
    case "number": {
      const input = el("input", { id, "data-testid": testid, type: "number", step: field.integer ? "1" : "any", oninput: onChange });
      const value = () => (input.value === "" ? undefined : field.integer ? parseInt(input.value, 10) : Number(input.value));
      return { node: el("div", { class: "field" }, labelFor(field, id, path), input), value };
    }
    case "boolean": {
      const input = el("input", { id, "data-testid": testid, type: "checkbox", onchange: onChange });
      return { node: el("div", { class: "field" }, el("label", { class: "check", for: id }, input, field.name)), value: () => input.checked };
    }
    case "choice": {
      const options = (field.options || field.choices || field.values || []).map((option) => (typeof option === "object" ? option.value : option));
      const select = el("select", { id, "data-testid": testid, onchange: onChange }, el("option", { value: "", text: "—" }), options.map((option) => el("option", { value: option, text: option })));
      return { node: el("div", { class: "field" }, labelFor(field, id, path), select), value: () => (select.value === "" ? undefined : select.value) };
    }
    case "document":
    case "image":
      return fileControl(field, path, id, testid, onChange);
    case "object": {
      const children = (field.fields || []).map((child) => [child.name, control(child, `${path}.${child.name}`, onChange)]);
      const node = el("fieldset", { "data-testid": testid }, el("legend", { text: `${field.name ?? path} · ${field.concept_ref || "object"}` }), children.map(([, child]) => child.node));
      const value = () => {
        const result = {};
        for (const [name, child] of children) {
          const item = child.value();
          if (item !== undefined) result[name] = item;
        }
        return Object.keys(result).length ? result : undefined;
      };
      return { node, value };
    }
    case "list":
      return listControl(field, path, testid, onChange);
    default: {
      const input = el("textarea", { id, "data-testid": testid, rows: 3, placeholder: "JSON value", oninput: onChange });
      const value = () => {
        if (input.value.trim() === "") return undefined;
        try {
          return JSON.parse(input.value);
        } catch {
          return input.value;
        }
      };
      return { node: el("div", { class: "field" }, labelFor(field, id, path), input, el("span", { class: "hint", text: `kind ${field.kind}: JSON` })), value };
    }
  }
}

function fileControl(field, path, id, testid, onChange) {
  const url = el("input", { id, "data-testid": `${testid}-url`, type: "url", placeholder: "https://…, data:… or pipelex-storage://…", oninput: onChange });
  const status = el("span", { class: "hint", "data-testid": `${testid}-status` });
  const file = el("input", { type: "file", "data-testid": `${testid}-file`, "aria-label": `Upload a file for ${field.name ?? path}`, accept: field.kind === "image" ? "image/*" : undefined });
  file.addEventListener("change", async () => {
    const chosen = file.files[0];
    if (!chosen) return;
    const shown = safePath(chosen.name) || "file";
    status.textContent = `Uploading ${shown}…`;
    const form = new FormData();
    form.append("file", chosen, shown);
    const result = await call("POST", "/api/v1/uploads", form);
    if (result.ok) {
      url.value = result.data.uri;
      status.textContent = `Uploaded ${shown} (${result.data.size_bytes} bytes)`;
      onChange();
    } else {
      status.textContent = `Upload refused: ${describeProblem(result)}`;
    }
  });
  const node = el("div", { class: "field" }, labelFor(field, id, path), url, el("div", { class: "toolbar" }, file, status));
  return { node, value: () => (url.value ? { url: url.value } : undefined), fileInput: file };
}

function listControl(field, path, testid, onChange) {
  const items = [];
  const holder = el("div", { class: "list-items" });
  const itemField = { ...(field.item || { kind: "json" }), name: undefined };
  const add = () => {
    const index = items.length;
    const child = control({ ...itemField, name: `item ${index + 1}` }, `${path}.${index}`, onChange);
    const entry = { child, node: null };
    const remove = el("button", { type: "button", "data-testid": `${testid}-remove-${index}`, text: "Remove", onclick: () => {
      items.splice(items.indexOf(entry), 1);
      entry.node.remove();
      onChange();
    } });
    entry.node = el("div", { class: "list-item" }, child.node, remove);
    items.push(entry);
    holder.append(entry.node);
    onChange();
  };
  const node = el("fieldset", { "data-testid": testid }, el("legend", { text: `${field.name ?? path} · list of ${field.concept_ref || itemField.kind}` }),
    field.description ? el("p", { class: "hint", text: field.description }) : null, holder,
    el("button", { type: "button", "data-testid": `${testid}-add`, text: "Add item", onclick: add }));
  add();
  const value = () => {
    const values = items.map((entry) => entry.child.value()).filter((item) => item !== undefined);
    return values.length ? values : undefined;
  };
  return { node, value };
}

/** The value sent for a top-level input: a plain string for Text, else {concept, content}. */
function topValue(field, raw) {
  if (raw === undefined) return undefined;
  const concept = field.concept_ref;
  if (field.kind === "prose" && (!concept || concept === "native.Text")) return raw;
  if (field.kind === "number" && concept === "native.Number") return { concept, content: { number: raw } };
  if (field.kind === "list" && field.item?.kind === "prose" && (!concept || concept === "native.Text")) return raw;
  return concept ? { concept, content: raw } : raw;
}

export class InputsForm {
  constructor(form, onChange) {
    this.form = form;
    this.onChange = onChange;
    this.fields = [];
    form.addEventListener("submit", (event) => event.preventDefault());
  }

  build(inputForm, { force = false } = {}) {
    const key = JSON.stringify(inputForm || null);
    if (!force && key === this.key && this.fields.length) return; // same inputs: keep what the user typed
    this.key = key;
    const fields = inputForm?.fields || [];
    this.fields = fields.map((field) => ({ field, ...control(field, field.name, () => this.onChange()) }));
    if (!fields.length) clear(this.form, el("p", { class: "muted", text: "This pipe takes no inputs." }));
    else clear(this.form, this.fields.map((entry) => entry.node));
    this.onChange();
  }

  reset(message) {
    this.fields = [];
    this.key = null;
    clear(this.form, el("p", { class: "muted", text: message }));
  }

  inputs() {
    const result = {};
    for (const entry of this.fields) {
      const value = topValue(entry.field, entry.value());
      if (value !== undefined) result[entry.field.name] = value;
    }
    return result;
  }
}
