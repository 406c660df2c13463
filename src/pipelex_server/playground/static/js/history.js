// The caller's runs: filters, one run opened (output, events, callback deliveries), delete, redeliver, re-run.

import { el, clear } from "./dom.js";
import { call, describeProblem, followEvents } from "./api.js";
import { renderRun } from "./output.js";
import { fetchRunWithOutput, knownRequest, snippetBlock, timeline } from "./run.js";

const TERMINAL = new Set(["COMPLETED", "FAILED", "CANCELLED", "ERROR"]);

export class History {
  constructor({ list, detail, more, filter, state, pipe, buttons, notify, rerun, prefill }) {
    Object.assign(this, { list, detail, more, state, pipe, buttons, notify, rerunHandler: rerun, prefillHandler: prefill });
    this.cursor = null;
    this.current = null;
    filter.addEventListener("submit", (event) => {
      event.preventDefault();
      this.refresh();
    });
    more.addEventListener("click", () => this.load(false));
    buttons.remove.addEventListener("click", () => this.remove());
    buttons.redeliver.addEventListener("click", () => this.redeliver());
    buttons.rerun.addEventListener("click", () => this.rerun());
  }

  refresh() {
    this.cursor = null;
    return this.load(true);
  }

  async load(fresh) {
    const query = new URLSearchParams({ limit: "25" });
    if (this.state.value) query.set("state", this.state.value);
    if (this.pipe.value.trim()) query.set("pipe_code", this.pipe.value.trim());
    if (!fresh && this.cursor) query.set("cursor", this.cursor);
    const result = await call("GET", `/api/v1/runs?${query}`);
    if (!result.ok) {
      this.notify(describeProblem(result), true);
      clear(this.list, el("li", { class: "muted", text: describeProblem(result) }));
      return;
    }
    const rows = result.data.runs.map((run) => el("li", {}, el("button", {
      type: "button",
      "data-testid": "run-row",
      dataset: { runId: run.pipeline_run_id },
      "aria-current": run.pipeline_run_id === this.current ? "true" : undefined,
      onclick: () => this.open(run.pipeline_run_id),
    }, el("span", { class: `state ${run.pipeline_state}`, text: run.pipeline_state }), el("span", { class: "id", text: run.pipeline_run_id }),
    el("span", { class: "muted", text: `${run.dry_run ? "dry · " : ""}${new Date(run.created_at).toLocaleString()}` }))));
    if (fresh) clear(this.list, rows.length ? rows : [el("li", { class: "muted", text: "No run yet." })]);
    else this.list.append(...rows);
    this.cursor = result.data.next_cursor;
    this.more.hidden = !this.cursor;
  }

  async open(runId) {
    this.current = runId;
    for (const button of this.list.querySelectorAll("button[data-run-id]")) button.setAttribute("aria-current", String(button.dataset.runId === runId));
    const { run, output, problem } = await fetchRunWithOutput(runId);
    if (problem) {
      clear(this.detail, el("p", { class: "error-doc", text: describeProblem(problem) }));
      return;
    }
    this.run = run;
    this.output = output;
    const request = knownRequest(runId);
    const events = el("ol", { class: "timeline", "data-testid": "run-events" });
    const callbacks = (run.callbacks || []).length
      ? el("table", { class: "callbacks" }, el("tr", {}, ["URL", "attempts", "last status", "delivered"].map((head) => el("th", { text: head }))),
        run.callbacks.map((cb) => el("tr", {}, [cb.url, cb.attempts, cb.last_status ?? cb.last_error ?? "", cb.delivered_at || "no"].map((cell) => el("td", { text: cell })))))
      : el("p", { class: "muted", text: "No callback URL." });
    const extras = [
      el("h4", { text: "Inputs" }),
      request ? el("pre", { class: "snippet", "data-testid": "run-inputs", text: JSON.stringify(request.inputs || {}, null, 2) })
        : el("p", { class: "muted", text: "Sent from another tab or client: “Re-run with the same inputs” prefills them from the run record." }),
      el("h4", { text: "Events" }), events,
      el("h4", { text: "Callback deliveries" }), callbacks,
      request ? snippetBlock(request) : null,
    ];
    renderRun(this.detail, run, output, extras);
    const ended = TERMINAL.has(run.pipeline_state);
    this.buttons.remove.disabled = !ended;
    this.buttons.redeliver.disabled = !ended || !(run.callbacks || []).length;
    this.buttons.rerun.disabled = false;
    // an ended run's stream replays its events and closes; a live one is followed while it is on screen
    const onEvent = timeline(events);
    this.abort?.abort();
    this.abort = new AbortController();
    followEvents(runId, onEvent, { signal: this.abort.signal }).catch(() => {});
  }

  async remove() {
    if (!this.current) return;
    const result = await call("DELETE", `/api/v1/runs/${encodeURIComponent(this.current)}`);
    if (!result.ok) {
      this.notify(describeProblem(result), true);
      return;
    }
    this.notify(`Run ${this.current} deleted.`);
    this.current = null;
    clear(this.detail, el("p", { class: "muted", text: "Deleted." }));
    Object.values(this.buttons).forEach((button) => (button.disabled = true));
    await this.refresh();
  }

  async redeliver() {
    const result = await call("POST", `/api/v1/runs/${encodeURIComponent(this.current)}/callbacks/redeliver`);
    this.notify(result.ok ? "Callbacks queued for delivery again." : describeProblem(result), !result.ok);
    if (result.ok) await this.open(this.current);
  }

  /** The same request again when this tab started the run; else the run's recorded method and inputs, prefilled. */
  async rerun() {
    const runId = this.current;
    const request = knownRequest(runId);
    if (request) return this.rerunHandler(request);
    const got = await call("GET", `/v1/runs/${encodeURIComponent(runId)}`);
    if (!got.ok) return this.notify(`Cannot re-run ${runId}: ${describeProblem(got)}`, true);
    const detail = got.data;
    if (!detail.inputs || typeof detail.inputs !== "object") {
      return this.notify(`Cannot re-run ${runId} with the same inputs: the run record does not hold them (the values are in its working memory above).`, true);
    }
    const body = { inputs: detail.inputs, pipe_code: detail.pipe_code || undefined, dry_run: this.run?.dry_run || undefined };
    let method = null;
    if (detail.method_id && detail.method_version != null) method = { method_id: detail.method_id, version: String(detail.method_version) };
    else if (detail.mthds_contents?.length) body.mthds_contents = detail.mthds_contents;
    return this.prefillHandler({ runId, body, method, treeOf: detail.method_id || null });
  }
}
