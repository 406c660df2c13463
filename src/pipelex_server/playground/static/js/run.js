// A background run followed over SSE: the live timeline of pipes, cancel, and the result once it ends.

import { el, clear, copyText } from "./dom.js";
import { call, describeProblem, followEvents, getToken } from "./api.js";
import { renderRun } from "./output.js";
import { curlCommand, pythonSnippet } from "./snippets.js";

const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "ERROR"]);
const REQUESTS_KEY = "pipelex-playground-requests";

/** The requests this tab started, by run id, so a run can be re-run with the same inputs. */
export function rememberRequest(runId, body) {
  const known = JSON.parse(sessionStorage.getItem(REQUESTS_KEY) || "{}");
  known[runId] = body;
  const ids = Object.keys(known);
  for (const old of ids.slice(0, Math.max(0, ids.length - 30))) delete known[old];
  try {
    sessionStorage.setItem(REQUESTS_KEY, JSON.stringify(known));
  } catch {
    /* a very large request is not kept */
  }
}

export function knownRequest(runId) {
  return JSON.parse(sessionStorage.getItem(REQUESTS_KEY) || "{}")[runId] || null;
}

function seconds(from, to) {
  const delta = (Date.parse(to) - Date.parse(from)) / 1000;
  return Number.isFinite(delta) ? `${delta.toFixed(2)} s` : "";
}

/** Renders a run's events as a timeline; returns a handler for each event. */
export function timeline(list) {
  clear(list);
  const open = [];
  return (event) => {
    const data = event.data || {};
    if (event.event === "state") {
      list.append(el("li", { class: "state-line", dataset: { state: data.pipeline_state } }, el("span", { class: "mark" }), el("span", { text: data.pipeline_state }), el("span", { class: "metrics", text: data.usage?.cost_usd != null ? `$${Number(data.usage.cost_usd).toFixed(6)}` : "" })));
    } else if (event.event === "pipe_started") {
      const item = el("li", { class: `running depth-${Math.min(open.length, 3)}`, dataset: { pipe: data.pipe_code, testid: "progress-pipe" } },
        el("span", { class: "mark" }), el("span", { text: `${data.pipe_code} · ${data.pipe_type || ""}` }), el("span", { class: "metrics", text: "running" }));
      list.append(item);
      open.push({ item, data });
    } else if (event.event === "pipe_finished" || event.event === "pipe_failed") {
      let index = open.length - 1;
      while (index >= 0 && open[index].data.pipe_code !== data.pipe_code) index -= 1;
      if (index < 0) return;
      const [{ item, data: started }] = open.splice(index, 1);
      item.classList.remove("running");
      item.classList.add(event.event === "pipe_failed" ? "failed" : "finished");
      const tokens = data.usage?.tokens;
      const parts = [seconds(started.at, data.at)];
      if (tokens) parts.push(`${tokens.input ?? 0}→${tokens.output ?? 0} tok`);
      if (data.error) parts.push(data.error.code || "failed");
      item.lastChild.textContent = parts.filter(Boolean).join(" · ");
    }
  };
}

/** Add each pipe's cost (known once the run ended) to its timeline lines. */
function addCosts(list, usage) {
  const cost = {};
  for (const row of usage?.by_pipe || []) cost[row.pipe_code] = (cost[row.pipe_code] || 0) + Number(row.cost || 0);
  for (const item of list.querySelectorAll("li[data-pipe]")) {
    if (cost[item.dataset.pipe]) item.lastChild.textContent += ` · $${cost[item.dataset.pipe].toFixed(6)}`;
  }
}

export async function fetchRunWithOutput(runId) {
  const got = await call("GET", `/api/v1/runs/${encodeURIComponent(runId)}`);
  if (!got.ok) return { problem: got };
  let output = got.data.pipe_output;
  if (!output && got.data.output_url) {
    const stored = await call("GET", got.data.output_url);
    if (stored.ok) output = stored.data;
  }
  return { run: got.data, output };
}

export function snippetBlock(body) {
  const curl = curlCommand("/api/v1/pipeline/execute", body, { withToken: Boolean(getToken()) });
  const python = pythonSnippet(body);
  const curlPre = el("pre", { class: "snippet", "data-testid": "curl-snippet", text: curl });
  const pythonPre = el("pre", { class: "snippet", "data-testid": "python-snippet", text: python });
  const copyCurl = el("button", { type: "button", "data-testid": "copy-curl", text: "Copy as curl", onclick: () => copyText(curl, copyCurl) });
  const copyPython = el("button", { type: "button", "data-testid": "copy-python", text: "Copy as Python (SDK)", onclick: () => copyText(python, copyPython) });
  return el("details", { class: "snippets" }, el("summary", { text: "This request as curl or Python" }),
    el("div", { class: "toolbar" }, copyCurl, copyPython), el("p", { class: "muted", text: "The same body, on the synchronous route (it answers with the result)." }), curlPre, pythonPre);
}

export class RunController {
  constructor({ progress, output, stateLabel, runButton, cancelButton, notify }) {
    Object.assign(this, { progress, output, stateLabel, runButton, cancelButton, notify });
    this.runId = null;
    this.abort = null;
    cancelButton.addEventListener("click", () => this.cancel());
  }

  setState(state) {
    this.stateLabel.textContent = state || "";
    this.stateLabel.className = `state ${state || ""}`;
  }

  async start(body) {
    this.abort?.abort();
    this.setState("submitting");
    this.runButton.disabled = true;
    const started = await call("POST", "/api/v1/pipeline/start", body);
    if (!started.ok) {
      this.runButton.disabled = false;
      this.setState("refused");
      this.notify(describeProblem(started), true);
      clear(this.output, el("div", { class: "error-doc", "data-testid": "output-error" }, el("p", { text: describeProblem(started) }), problemDetails(started.data)));
      return null;
    }
    const runId = started.data.pipeline_run_id;
    this.runId = runId;
    rememberRequest(runId, body);
    this.cancelButton.disabled = false;
    clear(this.output, el("p", { class: "muted", text: `Run ${runId} started…` }));
    await this.follow(runId);
    await this.finish(runId, body);
    return runId;
  }

  async follow(runId) {
    const onEvent = timeline(this.progress);
    this.abort = new AbortController();
    let state = "STARTED";
    let lastId = null;
    for (let attempt = 0; attempt < 5 && !TERMINAL.has(state); attempt += 1) {
      try {
        const result = await followEvents(runId, (event) => {
          lastId = event.id || lastId;
          if (event.data?.pipeline_state) state = event.data.pipeline_state;
          this.setState(state);
          onEvent(event);
        }, { signal: this.abort.signal, lastEventId: lastId });
        if (!result.ok) break;
      } catch (error) {
        if (error.name === "AbortError") return;
      }
    }
  }

  async finish(runId, body) {
    this.cancelButton.disabled = true;
    this.runButton.disabled = false;
    const { run, output, problem } = await fetchRunWithOutput(runId);
    if (problem) {
      this.notify(describeProblem(problem), true);
      return;
    }
    this.setState(run.pipeline_state);
    addCosts(this.progress, run.usage);
    renderRun(this.output, run, output, [snippetBlock(body)]);
  }

  async cancel() {
    if (!this.runId) return;
    this.cancelButton.disabled = true;
    const result = await call("POST", `/api/v1/runs/${encodeURIComponent(this.runId)}/cancel`);
    if (!result.ok && result.status !== 409) this.notify(describeProblem(result), true);
  }
}

export function problemDetails(problem) {
  const errors = problem?.errors || [];
  if (!errors.length) return null;
  return el("ul", {}, errors.map((error) => el("li", { text: `${error.code || ""}: ${error.detail || ""}${error.location ? ` (${JSON.stringify(error.location)})` : ""}` })));
}
