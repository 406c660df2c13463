// The one door to the server: same-origin fetch with the tab's token, problem documents, Server-Sent Events.

const TOKEN_KEY = "pipelex-playground-token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

function headers(extra) {
  const result = { Accept: "application/json", ...extra };
  const token = getToken();
  if (token) result.Authorization = `Bearer ${token}`;
  return result;
}

/** A request to this server. Resolves to {ok, status, data}; data is the JSON body (a problem document on failure). */
export async function call(method, path, body, { signal } = {}) {
  const init = { method, headers: headers(), credentials: "omit", signal };
  if (body instanceof FormData) init.body = body;
  else if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    if (error.name === "AbortError") throw error;
    return { ok: false, status: 0, data: { title: "The server did not answer", detail: String(error) } };
  }
  let data = null;
  const text = await response.text();
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = { detail: text };
    }
  }
  return { ok: response.ok, status: response.status, data };
}

/** One line for a problem document: its code and detail. */
export function describeProblem(result) {
  const data = result.data || {};
  if (result.status === 401 || result.status === 403) {
    const hint = result.status === 401 ? " Paste a valid API key or JWT in the field at the top." : "";
    return `${result.status} ${data.code || ""}: ${data.detail || data.title || "refused"}.${hint}`.replace("..", ".");
  }
  return `${result.status || "network"} ${data.code || ""}: ${data.detail || data.title || "failed"}`;
}

/**
 * Follow a run's events over SSE (fetch, so the Authorization header goes along; EventSource cannot send it).
 * Calls onEvent({id, event, data}) per event; resolves when the stream ends or the signal aborts.
 */
export async function followEvents(runId, onEvent, { signal, lastEventId } = {}) {
  const extra = { Accept: "text/event-stream" };
  if (lastEventId) extra["Last-Event-ID"] = String(lastEventId);
  const response = await fetch(`/api/v1/runs/${encodeURIComponent(runId)}/events`, { headers: headers(extra), signal, credentials: "omit" });
  if (!response.ok || !response.body) {
    let data = null;
    try {
      data = await response.json();
    } catch {
      data = null;
    }
    return { ok: false, status: response.status, data };
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let frame = { data: [] };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, newline).replace(/\r$/, "");
      buffer = buffer.slice(newline + 1);
      if (line === "") {
        if (frame.data.length) {
          let data;
          try {
            data = JSON.parse(frame.data.join("\n"));
          } catch {
            data = frame.data.join("\n");
          }
          onEvent({ id: frame.id, event: frame.event || "message", data });
        }
        frame = { data: [] };
      } else if (!line.startsWith(":")) {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") frame.data.push(text);
        else if (field === "event") frame.event = text;
        else if (field === "id") frame.id = text;
      }
    }
  }
  return { ok: true, status: response.status };
}
