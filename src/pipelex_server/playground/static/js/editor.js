// The method editor: a textarea over a highlighted copy of its text (MTHDS is TOML), and the files of a method tree.

import { el, clear } from "./dom.js";

const BARE_KEY = /^[A-Za-z0-9_\-.]+/;
const NUMBER = /^[+-]?(?:0x[0-9a-fA-F_]+|\d[\d_]*(?:\.\d[\d_]*)?(?:[eE][+-]?\d+)?)(?![A-Za-z_])/;
const WORD = /^(?:true|false|inf|nan)(?![A-Za-z0-9_])/;

/** TOML tokens as [class, text] pairs (class null for plain text); covers comments, tables, keys, strings incl. multi-line. */
export function tokenize(source) {
  const tokens = [];
  let i = 0;
  let lineStart = true; // at the start of a line, ignoring spaces: a key or a table header may come
  let depth = 0; // inside [...] or {...} of a value
  const push = (cls, text) => {
    if (text) tokens.push([cls, text]);
  };
  while (i < source.length) {
    const rest = source.slice(i, i + 400);
    const ch = source[i];
    if (ch === "\n") {
      push(null, "\n");
      i += 1;
      if (depth === 0) lineStart = true;
      continue;
    }
    if (ch === " " || ch === "\t" || ch === "\r") {
      const match = /^[ \t\r]+/.exec(rest)[0];
      push(null, match);
      i += match.length;
      continue;
    }
    if (ch === "#") {
      const end = source.indexOf("\n", i);
      const stop = end < 0 ? source.length : end;
      push("tok-com", source.slice(i, stop));
      i = stop;
      continue;
    }
    if (lineStart && depth === 0 && ch === "[") {
      const end = source.indexOf("\n", i);
      const line = source.slice(i, end < 0 ? source.length : end);
      const close = line.lastIndexOf("]");
      const header = close >= 0 ? line.slice(0, close + 1) : line;
      push("tok-table", header);
      i += header.length;
      lineStart = false;
      continue;
    }
    if (source.startsWith('"""', i) || source.startsWith("'''", i)) {
      const quote = source.slice(i, i + 3);
      let end = source.indexOf(quote, i + 3);
      while (quote === '"""' && end > 0 && isEscaped(source, end)) end = source.indexOf(quote, end + 1);
      let stop = end < 0 ? source.length : end + 3;
      while (source[stop] === quote[0] && stop - i < source.length) stop += 1; // up to two quotes may close the string
      push("tok-str", source.slice(i, stop));
      i = stop;
      lineStart = false;
      continue;
    }
    if (ch === '"' || ch === "'") {
      let j = i + 1;
      while (j < source.length && source[j] !== ch && source[j] !== "\n") j += ch === '"' && source[j] === "\\" ? 2 : 1;
      const stop = Math.min(j + 1, source.length);
      const text = source.slice(i, stop);
      const isKey = (lineStart || source[i - 1] === "{" || /[{,]\s*$/.test(source.slice(Math.max(0, i - 20), i))) && /^\s*=/.test(source.slice(stop, stop + 20));
      push(isKey ? "tok-key" : "tok-str", text);
      i = stop;
      lineStart = false;
      continue;
    }
    if ("[{".includes(ch)) depth += 1;
    if ("]}".includes(ch)) depth = Math.max(0, depth - 1);
    if ("[]{}=,".includes(ch)) {
      push("tok-punct", ch);
      i += 1;
      if (ch !== "=" && ch !== ",") lineStart = false;
      continue;
    }
    const key = BARE_KEY.exec(rest);
    if (key && /^\s*=/.test(source.slice(i + key[0].length, i + key[0].length + 20)) && (lineStart || /[{,]\s*$/.test(source.slice(Math.max(0, i - 40), i)))) {
      push("tok-key", key[0]);
      i += key[0].length;
      lineStart = false;
      continue;
    }
    const number = NUMBER.exec(rest) || WORD.exec(rest);
    if (number) {
      push("tok-num", number[0]);
      i += number[0].length;
      lineStart = false;
      continue;
    }
    const plain = /^[^\s#"'[\]{}=,]+/.exec(rest);
    const text = plain ? plain[0] : ch;
    push(null, text);
    i += text.length;
    lineStart = false;
  }
  return tokens;
}

function isEscaped(source, index) {
  let backslashes = 0;
  for (let j = index - 1; j >= 0 && source[j] === "\\"; j -= 1) backslashes += 1;
  return backslashes % 2 === 1;
}

export class Editor {
  constructor(textarea, highlight, fileSelect) {
    this.textarea = textarea;
    this.highlight = highlight;
    this.fileSelect = fileSelect;
    this.files = null; // a method tree: path -> text; null while the editor holds one bundle
    this.current = null;
    this.listeners = [];
    textarea.addEventListener("input", () => this.changed());
    textarea.addEventListener("scroll", () => this.syncScroll());
    fileSelect.addEventListener("change", () => this.showFile(fileSelect.value));
    this.render();
  }

  onChange(listener) {
    this.listeners.push(listener);
  }

  changed() {
    if (this.files && this.current) this.files[this.current] = this.textarea.value;
    this.marks = [];
    this.render();
    for (const listener of this.listeners) listener();
  }

  render() {
    const fragment = document.createDocumentFragment();
    for (const [cls, text] of tokenize(this.textarea.value)) fragment.append(cls ? el("span", { class: cls, text }) : document.createTextNode(text));
    fragment.append("\n");
    clear(this.highlight, fragment);
    this.drawMarks();
    this.syncScroll();
  }

  /** Mark the lines a verdict located errors on: {file or null, line} pairs; cleared by the next edit. */
  setMarks(marks) {
    this.marks = marks;
    this.drawMarks();
  }

  drawMarks() {
    const style = getComputedStyle(this.highlight);
    const lineHeight = parseFloat(style.lineHeight) || 20;
    const top = parseFloat(style.paddingTop) || 0;
    for (const mark of this.marks || []) {
      if (mark.file && this.files && mark.file !== this.current) continue;
      const bar = el("span", { class: "error-line", "data-testid": "error-line", title: `line ${mark.line}` });
      bar.style.top = `${top + (mark.line - 1) * lineHeight}px`;
      bar.style.height = `${lineHeight}px`;
      this.highlight.append(bar);
    }
  }

  syncScroll() {
    this.highlight.scrollTop = this.textarea.scrollTop;
    this.highlight.scrollLeft = this.textarea.scrollLeft;
  }

  setBundle(text) {
    this.files = null;
    this.current = null;
    this.fileSelect.hidden = true;
    this.textarea.value = text;
    this.changed();
  }

  setFiles(files) {
    const paths = Object.keys(files).sort();
    if (paths.length === 1 && paths[0].endsWith(".mthds")) {
      this.setBundle(files[paths[0]]);
      return;
    }
    this.files = { ...files };
    clear(this.fileSelect, paths.map((path) => el("option", { value: path, text: path })));
    this.fileSelect.hidden = false;
    this.showFile(paths.find((path) => path.endsWith(".mthds")) || paths[0]);
    for (const listener of this.listeners) listener();
  }

  showFile(path) {
    this.current = path;
    this.fileSelect.value = path;
    this.textarea.value = this.files[path] ?? "";
    this.render();
  }

  setText(text) {
    this.textarea.value = text;
    this.changed();
  }

  /** The method part of a request: `files` for a tree, `mthds_contents` for one bundle. */
  method() {
    if (this.files) return { files: { ...this.files } };
    return { mthds_contents: [this.textarea.value] };
  }

  goTo(file, line, column) {
    if (file && this.files && file in this.files && file !== this.current) this.showFile(file);
    const lines = this.textarea.value.split("\n");
    let offset = 0;
    for (let index = 0; index < Math.min(line - 1, lines.length); index += 1) offset += lines[index].length + 1;
    offset += Math.max(0, (column || 1) - 1);
    this.textarea.focus();
    this.textarea.setSelectionRange(offset, offset);
    const lineHeight = parseFloat(getComputedStyle(this.textarea).lineHeight) || 20;
    this.textarea.scrollTop = Math.max(0, (line - 4) * lineHeight);
    this.syncScroll();
  }
}
