"""Deterministic OpenAI-compatible stub LLM server for tests and benchmarks.

Pipelex reaches it through its real ``openai`` backend: set ``OPENAI_BASE_URL`` to ``StubLLM.base_url``
(``http://127.0.0.1:<port>/v1``) and ``OPENAI_API_KEY`` to anything. Pure standard library: a raw
``asyncio`` HTTP/1.1 server (keep-alive, ``Content-Length`` bodies, ``TCP_NODELAY`` on every accepted
socket), bound to 127.0.0.1 only.

Endpoints
---------
* ``POST /v1/responses``          Responses API. Pipelex's OpenAI models (sdk ``openai_responses``) use it
                                  for text, and instructor (mode ``responses_tools``) uses it for structured
                                  output: ``tools=[{type: function, name, parameters}]`` + forced
                                  ``tool_choice={type: function, name}`` (+ a ``text.format`` json_schema).
* ``POST /v1/chat/completions``   Chat Completions (``response_format`` json_schema/json_object, ``tools``).
* ``GET  /v1/models``, ``GET /v1/models/{id}``.
* ``stream: true`` is supported on both POST endpoints (SSE, sent in one body). Pipelex 0.92.2 never streams.
* Admin: ``POST /_stub/config``, ``GET /_stub/stats``, ``POST /_stub/reset``, ``GET /_stub/health``.

Answer rules (deterministic)
----------------------------
* "prompt"      = text of the LAST user message (``input_text``/``text`` parts joined with "\\n"; a
                  plain-string ``input`` counts as a user message).
* "echo tokens" = every match of ``ECHO_TOKEN_RE`` (``TOKEN-[A-Za-z0-9_]+``, e.g. ``TOKEN-17``) in the
                  whole request text (system/instructions + all messages), de-duplicated, in order.
* Text answer   = ``"STUB: " + prompt_snippet`` where ``prompt_snippet`` is the prompt with whitespace runs
                  collapsed to one space, stripped, cut to 60 chars; then, if there are echo tokens,
                  ``" [" + " ".join(tokens) + "]"``.  See ``text_answer()``.
* Structured    = ``generate_from_schema(schema, tokens)``: an instance valid against the requested JSON
                  Schema. Objects get ALL properties; plain strings are ``"stub-<field name>"`` (+
                  ``"-" + "-".join(tokens)`` when the request carries echo tokens); integers 1, numbers 1.0
                  (clamped to minimum/maximum), booleans true, arrays exactly max(1, minItems) items, enum ->
                  first value, const -> const, anyOf/oneOf -> first non-null branch, ``$ref`` into
                  ``$defs``/``definitions`` followed, formats date "2024-01-01", date-time
                  "2024-01-01T00:00:00Z", time "00:00:00", email, uri, uuid.
  - Responses API with ``tools``: output is ONE ``function_call`` item for the forced tool (or the first
    tool), ``arguments`` = JSON of the instance of its ``parameters``. Without tools but with
    ``text.format`` json_schema: a message whose text is the JSON instance.
  - Chat Completions with ``tools`` (and ``tool_choice`` not "none"): one tool call to the forced/first
    function, ``finish_reason="tool_calls"``. With ``response_format`` json_schema: content is the JSON.
* Usage         = input tokens ``ceil(len(all request text) / 4)``, output tokens ``ceil(len(output) / 4)``
                  (each at least 1); cached/reasoning tokens 0.

Knobs (startup kwargs / CLI flags, or at runtime via ``POST /_stub/config`` / ``StubLLM.configure``)
----------------------------------------------------------------------------------------------------
``{"latency_ms": 0,                       # asyncio.sleep before every LLM answer (non-blocking)
   "fail": {"status": 429, "count": 2,     # count: null -> always; each matching call consumes 1
            "match": "substr",             # optional substring of the request text
            "message": "...", "should_retry": null, "retry_after_ms": 10},
   "timeout": {"seconds": 30, "count": null, "match": null}}   # hang N s, then answer normally``
``fail`` and ``timeout`` accept a rule, a list of rules, or null (clears). Only the keys given are changed.
Failures return OpenAI-style bodies ``{"error": {"message", "type", "code", "param"}}`` with the status,
so the SDK raises AuthenticationError (401), PermissionDeniedError (403), NotFoundError (404),
BadRequestError (400), RateLimitError (429), InternalServerError (>=500). ``should_retry`` true/false sets
the ``x-should-retry`` header (the SDK obeys it); ``retry_after_ms`` (default 10, null to omit) sets
``retry-after-ms`` so the SDK's retries do not wait its default 0.5-8 s backoff.

Stats and SDK retries
---------------------
``GET /_stub/stats`` -> ``{"total_calls", "by_endpoint", "by_status", "by_prompt": {prompt: n},
"by_model", "failed_calls", "recent": [last 200 {endpoint, model, prompt, status, tool}]}``.
Every HTTP call to an LLM endpoint is counted, including the SDK's own retries: the openai SDK retries
408/409/429/5xx and connection errors (pipelex sets ``max_retries = inference.transport_max_retries``,
2 by default), so one failing pipelex LLM call usually shows up as 3 calls with ``count: null``.
Admin and ``/v1/models`` calls are not counted.

Usage
-----
In-process (background thread)::

    with StubLLM(latency_ms=0) as stub:        # port=0 -> free port
        os.environ["OPENAI_BASE_URL"] = stub.base_url
        stub.configure(fail={"status": 429, "count": 1})
        stub.stats(); stub.reset()

Subprocess::

    python -m tests.support.stub_llm --port 8765 [--latency-ms 50]
    # prints: STUB_LLM_READY http://127.0.0.1:8765/v1   (port 0 picks a free one; the line tells which)

``StubLLMProcess`` wraps that subprocess with the same ``configure/stats/reset`` API (over HTTP).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import math
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from typing import Any

ECHO_TOKEN_RE = re.compile(r"TOKEN-[A-Za-z0-9_]+")
READY_PREFIX = "STUB_LLM_READY"
TEXT_SNIPPET_LEN = 60
RECENT_MAX = 200

_STATUS_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    409: "Conflict",
    413: "Payload Too Large",
    422: "Unprocessable Entity",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}

_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("invalid_request_error", "permission_denied"),
    404: ("invalid_request_error", "model_not_found"),
    409: ("invalid_request_error", "conflict"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("requests", "rate_limit_exceeded"),
}


# ---------------------------------------------------------------------------------------------------------
# Answer rules
# ---------------------------------------------------------------------------------------------------------


def text_answer(prompt: str, tokens: list[str]) -> str:
    """The text answer for a request whose last user message is ``prompt`` (see module docstring)."""
    snippet = " ".join(prompt.split())[:TEXT_SNIPPET_LEN]
    answer = f"STUB: {snippet}"
    if tokens:
        answer += " [" + " ".join(tokens) + "]"
    return answer


def find_echo_tokens(text: str) -> list[str]:
    return list(dict.fromkeys(ECHO_TOKEN_RE.findall(text)))


def count_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))


def _content_text(content: Any) -> str:
    """Text of a message ``content``: a string, or a list of parts (text/input_text/output_text)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
        return "\n".join(texts)
    return ""


def _messages_text(messages: list[Any]) -> tuple[str, str]:
    """(last user message text, all text) of a chat ``messages`` list or a Responses ``input`` list."""
    last_user = ""
    all_texts: list[str] = []
    for msg in messages:
        if not isinstance(msg, dict):
            continue
        text = _content_text(msg.get("content"))
        if not text and isinstance(msg.get("output"), str):  # function_call_output (re-ask)
            text = msg["output"]
        if text:
            all_texts.append(text)
        if msg.get("role") == "user":
            last_user = text
    return last_user, "\n".join(all_texts)


# ---------------------------------------------------------------------------------------------------------
# JSON Schema instance generator
# ---------------------------------------------------------------------------------------------------------

_MAX_DEPTH = 12


def generate_from_schema(schema: dict[str, Any], tokens: list[str] | None = None, name: str = "value") -> Any:
    """A deterministic instance valid against ``schema`` (see the module docstring for the rules)."""
    return _SchemaGen(root=schema, tokens=tokens or []).gen(schema, name=name, depth=0)


class _SchemaGen:
    def __init__(self, root: dict[str, Any], tokens: list[str]):
        self.root = root
        self.suffix = ("-" + "-".join(tokens)) if tokens else ""

    def resolve(self, ref: str) -> dict[str, Any]:
        if not ref.startswith("#"):
            return {}
        node: Any = self.root
        for part in ref.lstrip("#").strip("/").split("/"):
            if not part:
                continue
            part = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, dict) or part not in node:
                return {}
            node = node[part]
        return node if isinstance(node, dict) else {}

    def gen(self, schema: Any, *, name: str, depth: int) -> Any:
        if schema is True or not isinstance(schema, dict) or not schema:
            return f"stub-{name}"
        if "$ref" in schema:
            target = self.resolve(schema["$ref"])
            merged = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
            if depth > _MAX_DEPTH:
                return None
            return self.gen(merged, name=name, depth=depth + 1)
        if "const" in schema:
            return schema["const"]
        if schema.get("enum"):
            return schema["enum"][0]
        for key in ("anyOf", "oneOf"):
            if isinstance(schema.get(key), list) and schema[key]:
                branches = schema[key]
                non_null = [b for b in branches if not (isinstance(b, dict) and b.get("type") == "null")]
                if depth > _MAX_DEPTH and len(non_null) < len(branches):
                    return None
                base = {k: v for k, v in schema.items() if k not in (key, "default")}
                branch = non_null[0] if non_null else branches[0]
                return self.gen({**base, **branch} if isinstance(branch, dict) else branch, name=name, depth=depth + 1)
        if isinstance(schema.get("allOf"), list) and schema["allOf"]:
            merged = {k: v for k, v in schema.items() if k != "allOf"}
            for sub in schema["allOf"]:
                if isinstance(sub, dict) and "$ref" in sub:
                    sub = self.resolve(sub["$ref"])
                if isinstance(sub, dict):
                    for k, v in sub.items():
                        if k == "properties":
                            merged["properties"] = {**merged.get("properties", {}), **v}
                        elif k == "required":
                            merged["required"] = [*merged.get("required", []), *v]
                        else:
                            merged.setdefault(k, v)
            return self.gen(merged, name=name, depth=depth + 1)

        typ = schema.get("type")
        if isinstance(typ, list):
            non_null_types = [t for t in typ if t != "null"]
            if not non_null_types:
                return None
            if depth > _MAX_DEPTH and "null" in typ:
                return None
            typ = non_null_types[0]
        if typ is None:
            if "properties" in schema:
                typ = "object"
            elif "items" in schema:
                typ = "array"
            else:
                typ = "string"

        if typ == "null":
            return None
        if typ == "object":
            return self.gen_object(schema, name=name, depth=depth)
        if typ == "array":
            return self.gen_array(schema, name=name, depth=depth)
        if typ == "string":
            return self.gen_string(schema, name=name)
        if typ == "integer":
            return int(self.gen_number(schema, integer=True))
        if typ == "number":
            return float(self.gen_number(schema, integer=False))
        if typ == "boolean":
            return True
        return f"stub-{name}"

    def gen_object(self, schema: dict[str, Any], *, name: str, depth: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        props = schema.get("properties") or {}
        for prop_name, prop_schema in props.items():
            result[prop_name] = self.gen(prop_schema, name=prop_name, depth=depth + 1)
        for req in schema.get("required") or []:
            if req not in result:
                result[req] = f"stub-{req}"
        additional = schema.get("additionalProperties")
        if not props and isinstance(additional, dict) and depth <= _MAX_DEPTH:
            result[f"stub-{name}-key"] = self.gen(additional, name=name, depth=depth + 1)
        return result

    def gen_array(self, schema: dict[str, Any], *, name: str, depth: int) -> list[Any]:
        min_items = int(schema.get("minItems", 0) or 0)
        n_items = max(1, min_items)
        if depth > _MAX_DEPTH:
            n_items = min_items
        if "maxItems" in schema:
            n_items = min(n_items, int(schema["maxItems"]))
        prefix = schema.get("prefixItems")
        if isinstance(prefix, list) and prefix:
            return [self.gen(s, name=name, depth=depth + 1) for s in prefix]
        items = schema.get("items", {})
        return [self.gen(items, name=name, depth=depth + 1) for _ in range(n_items)]

    def gen_string(self, schema: dict[str, Any], *, name: str) -> str:
        fmt = schema.get("format")
        if fmt == "date-time":
            value = "2024-01-01T00:00:00Z"
        elif fmt == "date":
            value = "2024-01-01"
        elif fmt == "time":
            value = "00:00:00"
        elif fmt == "duration":
            value = "P1D"
        elif fmt == "email":
            value = "stub@example.com"
        elif fmt in ("uri", "url", "iri", "uri-reference"):
            value = "https://example.com/stub"
        elif fmt == "uuid":
            digest = hashlib.sha256(name.encode()).hexdigest()
            value = f"{digest[:8]}-{digest[8:12]}-4{digest[13:16]}-8{digest[17:20]}-{digest[20:32]}"
        elif fmt in ("ipv4",):
            value = "127.0.0.1"
        elif fmt in ("ipv6",):
            value = "::1"
        else:
            value = f"stub-{name}{self.suffix}"
            min_len = int(schema.get("minLength", 0) or 0)
            if len(value) < min_len:
                value = value + "x" * (min_len - len(value))
            if "maxLength" in schema:
                value = value[: int(schema["maxLength"])]
        return value

    @staticmethod
    def gen_number(schema: dict[str, Any], *, integer: bool) -> float:
        value: float = 1
        step = 1 if integer else 0.5
        if "minimum" in schema and value < schema["minimum"]:
            value = math.ceil(schema["minimum"]) if integer else schema["minimum"]
        if "exclusiveMinimum" in schema and isinstance(schema["exclusiveMinimum"], (int, float)) and value <= schema["exclusiveMinimum"]:
            value = math.floor(schema["exclusiveMinimum"]) + 1 if integer else schema["exclusiveMinimum"] + step
        if "maximum" in schema and value > schema["maximum"]:
            value = math.floor(schema["maximum"]) if integer else schema["maximum"]
        if "exclusiveMaximum" in schema and isinstance(schema["exclusiveMaximum"], (int, float)) and value >= schema["exclusiveMaximum"]:
            value = math.ceil(schema["exclusiveMaximum"]) - 1 if integer else schema["exclusiveMaximum"] - step
        multiple = schema.get("multipleOf")
        if isinstance(multiple, (int, float)) and multiple > 0 and value % multiple:
            value = math.ceil(value / multiple) * multiple
        return value


# ---------------------------------------------------------------------------------------------------------
# State (knobs + stats), shared between the server loop and the controlling thread
# ---------------------------------------------------------------------------------------------------------


def _normalize_rules(value: Any) -> list[dict[str, Any]]:
    if value is None or value is False:
        return []
    if isinstance(value, dict):
        return [dict(value)]
    if isinstance(value, list):
        return [dict(v) for v in value if isinstance(v, dict)]
    msg = f"Invalid rule(s): {value!r}"
    raise ValueError(msg)


class StubState:
    def __init__(self, latency_ms: int = 0, fail: Any = None, timeout: Any = None):
        self.lock = threading.Lock()
        self.arrived = threading.Condition(threading.Lock())
        self.in_flight_by_generation: dict[int, int] = {}
        self.latency_ms = int(latency_ms)
        self.fail_rules = _normalize_rules(fail)
        self.timeout_rules = _normalize_rules(timeout)
        self._id_counter = 0
        self.reset_stats()

    @property
    def in_flight(self) -> int:
        """LLM calls being answered that arrived since the last reset (a call still hung from before does not count)."""
        return self.in_flight_by_generation.get(self.generation, 0)

    def wait_in_flight(self, count: int, timeout: float) -> bool:
        """Block until at least ``count`` LLM calls that arrived since the last reset are being answered."""
        with self.arrived:
            return self.arrived.wait_for(lambda: self.in_flight >= count, timeout)

    def reset_stats(self) -> None:
        with self.lock:
            # calls still in flight from before the reset (a hung request) are not counted when they end
            self.generation = getattr(self, "generation", 0) + 1
            self.total_calls = 0
            self.failed_calls = 0
            self.by_endpoint: dict[str, int] = {}
            self.by_status: dict[str, int] = {}
            self.by_prompt: dict[str, int] = {}
            self.by_model: dict[str, int] = {}
            self.recent: list[dict[str, Any]] = []

    def reset(self) -> None:
        """Clear the stats AND the knobs (latency 0, no failure, no hang)."""
        with self.lock:
            self.latency_ms = 0
            self.fail_rules = []
            self.timeout_rules = []
        self.reset_stats()

    def configure(self, **kwargs: Any) -> dict[str, Any]:
        unknown = set(kwargs) - {"latency_ms", "fail", "timeout"}
        if unknown:
            msg = f"Unknown stub config keys: {sorted(unknown)}"
            raise ValueError(msg)
        with self.lock:
            if "latency_ms" in kwargs:
                self.latency_ms = int(kwargs["latency_ms"] or 0)
            if "fail" in kwargs:
                self.fail_rules = _normalize_rules(kwargs["fail"])
            if "timeout" in kwargs:
                self.timeout_rules = _normalize_rules(kwargs["timeout"])
        return self.config()

    def config(self) -> dict[str, Any]:
        with self.lock:
            return {
                "latency_ms": self.latency_ms,
                "fail": [dict(r) for r in self.fail_rules],
                "timeout": [dict(r) for r in self.timeout_rules],
            }

    def next_id(self) -> int:
        with self.lock:
            self._id_counter += 1
            return self._id_counter

    @staticmethod
    def _take_rule(rules: list[dict[str, Any]], text: str) -> dict[str, Any] | None:
        for rule in rules:
            match = rule.get("match")
            if match and match not in text:
                continue
            count = rule.get("count")
            if count is not None:
                if count <= 0:
                    continue
                rule["count"] = count - 1
            return rule
        return None

    def decide(self, text: str) -> tuple[float, dict[str, Any] | None, float]:
        """(latency s, failure rule or None, hang s) for a request whose whole text is ``text``."""
        with self.lock:
            fail = self._take_rule(self.fail_rules, text)
            fail = dict(fail) if fail else None
            hang = self._take_rule(self.timeout_rules, text)
            hang_s = float(hang.get("seconds", 3600)) if hang else 0.0
            return self.latency_ms / 1000.0, fail, hang_s

    def record(self, *, endpoint: str, model: str, prompt: str, status: int, tool: str | None, generation: int | None = None) -> None:
        with self.lock:
            if generation is not None and generation != self.generation:
                return
            self.total_calls += 1
            if status >= 400:
                self.failed_calls += 1
            self.by_endpoint[endpoint] = self.by_endpoint.get(endpoint, 0) + 1
            key = str(status)
            self.by_status[key] = self.by_status.get(key, 0) + 1
            self.by_prompt[prompt] = self.by_prompt.get(prompt, 0) + 1
            self.by_model[model] = self.by_model.get(model, 0) + 1
            self.recent.append({"endpoint": endpoint, "model": model, "prompt": prompt, "status": status, "tool": tool})
            if len(self.recent) > RECENT_MAX:
                del self.recent[: len(self.recent) - RECENT_MAX]

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "total_calls": self.total_calls,
                "failed_calls": self.failed_calls,
                "by_endpoint": dict(self.by_endpoint),
                "by_status": dict(self.by_status),
                "by_prompt": dict(self.by_prompt),
                "by_model": dict(self.by_model),
                "recent": list(self.recent),
            }


# ---------------------------------------------------------------------------------------------------------
# Response builders
# ---------------------------------------------------------------------------------------------------------


def _error_body(status: int, rule: dict[str, Any]) -> dict[str, Any]:
    err_type, code = _ERROR_KINDS.get(status, ("server_error", "server_error"))
    message = rule.get("message") or f"Stub LLM injected error {status}"
    return {"error": {"message": message, "type": rule.get("type", err_type), "code": rule.get("code", code), "param": None}}


def _pick_tool(tools: list[Any], tool_choice: Any, *, responses_api: bool) -> dict[str, Any] | None:
    """The function tool to call, or None for a plain answer."""
    functions = [t for t in tools if isinstance(t, dict) and t.get("type", "function") == "function"]
    if not functions or tool_choice == "none":
        return None
    forced_name = None
    if isinstance(tool_choice, dict):
        forced_name = tool_choice.get("name") or (tool_choice.get("function") or {}).get("name")
    candidates = [t if responses_api or "function" not in t else t["function"] for t in functions]
    for fn in candidates:
        if forced_name is None or fn.get("name") == forced_name:
            return fn
    return candidates[0]


def _sse(events: list[dict[str, Any]], *, done_marker: bool) -> bytes:
    chunks = []
    for event in events:
        event_type = event.get("type")
        prefix = f"event: {event_type}\n" if event_type and not done_marker else ""
        chunks.append(f"{prefix}data: {json.dumps(event, separators=(',', ':'))}\n\n")
    if done_marker:
        chunks.append("data: [DONE]\n\n")
    return "".join(chunks).encode()


def build_chat_completion(body: dict[str, Any], *, req_id: int, tokens: list[str], prompt: str, all_text: str) -> tuple[Any, str | None]:
    model = body.get("model") or "stub-model"
    tool = _pick_tool(body.get("tools") or [], body.get("tool_choice"), responses_api=False)
    message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
    tool_name = None
    if tool is not None:
        tool_name = tool.get("name", "function")
        arguments = json.dumps(generate_from_schema(tool.get("parameters") or {}, tokens), separators=(",", ":"))
        message["tool_calls"] = [{"id": f"call_stub_{req_id}", "type": "function", "function": {"name": tool_name, "arguments": arguments}}]
        output_text = arguments
        finish = "tool_calls"
    else:
        response_format = body.get("response_format") or {}
        if response_format.get("type") == "json_schema":
            schema = (response_format.get("json_schema") or {}).get("schema") or {}
            output_text = json.dumps(generate_from_schema(schema, tokens), separators=(",", ":"))
        elif response_format.get("type") == "json_object":
            output_text = json.dumps({"answer": text_answer(prompt, tokens)})
        else:
            output_text = text_answer(prompt, tokens)
        message["content"] = output_text
        finish = "stop"
    in_tok, out_tok = count_tokens(all_text), count_tokens(output_text)
    usage = {
        "prompt_tokens": in_tok,
        "completion_tokens": out_tok,
        "total_tokens": in_tok + out_tok,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }
    completion_id = f"chatcmpl-stub{req_id}"
    created = int(time.time())
    if not body.get("stream"):
        return {
            "id": completion_id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            "usage": usage,
            "system_fingerprint": "fp_stub",
            "service_tier": "default",
        }, tool_name
    base = {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": "fp_stub",
    }
    delta: dict[str, Any] = {"role": "assistant"}
    if "tool_calls" in message:
        call = message["tool_calls"][0]
        delta["tool_calls"] = [{"index": 0, **call}]
    else:
        delta["content"] = message["content"]
    events = [
        {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish, "logprobs": None}]},
    ]
    if (body.get("stream_options") or {}).get("include_usage"):
        events.append({**base, "choices": [], "usage": usage})
    return _sse(events, done_marker=True), tool_name


def build_response(body: dict[str, Any], *, req_id: int, tokens: list[str], prompt: str, all_text: str) -> tuple[Any, str | None]:
    model = body.get("model") or "stub-model"
    tools = body.get("tools") or []
    tool = _pick_tool(tools, body.get("tool_choice"), responses_api=True)
    tool_name = None
    item: dict[str, Any]
    if tool is not None:
        tool_name = tool.get("name", "function")
        output_text = json.dumps(generate_from_schema(tool.get("parameters") or {}, tokens), separators=(",", ":"))
        item = {
            "id": f"fc_stub_{req_id}",
            "type": "function_call",
            "call_id": f"call_stub_{req_id}",
            "name": tool_name,
            "arguments": output_text,
            "status": "completed",
        }
    else:
        text_format = (body.get("text") or {}).get("format") or {}
        if text_format.get("type") == "json_schema":
            output_text = json.dumps(generate_from_schema(text_format.get("schema") or {}, tokens), separators=(",", ":"))
        elif text_format.get("type") == "json_object":
            output_text = json.dumps({"answer": text_answer(prompt, tokens)})
        else:
            output_text = text_answer(prompt, tokens)
        item = {
            "id": f"msg_stub_{req_id}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": output_text, "annotations": [], "logprobs": []}],
        }
    in_tok, out_tok = count_tokens(all_text), count_tokens(output_text)
    echoed_tools = [{**t, "strict": t.get("strict", False)} if isinstance(t, dict) and t.get("type") == "function" else t for t in tools]
    response: dict[str, Any] = {
        "id": f"resp_stub_{req_id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": model,
        "output": [item],
        "parallel_tool_calls": bool(body.get("parallel_tool_calls", True)),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": echoed_tools,
        "usage": {
            "input_tokens": in_tok,
            "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": out_tok,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": in_tok + out_tok,
        },
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "metadata": body.get("metadata") or {},
        "temperature": body.get("temperature", 1.0),
        "top_p": body.get("top_p", 1.0),
        "max_output_tokens": body.get("max_output_tokens"),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning") or {"effort": None, "summary": None},
        "text": body.get("text") or {"format": {"type": "text"}},
        "truncation": body.get("truncation", "disabled"),
        "store": bool(body.get("store", False)),
        "service_tier": "default",
    }
    if not body.get("stream"):
        return response, tool_name
    in_progress = {**response, "status": "in_progress", "output": [], "usage": None}
    seq = iter(range(1_000_000))
    events: list[dict[str, Any]] = [
        {"type": "response.created", "sequence_number": next(seq), "response": in_progress},
        {"type": "response.in_progress", "sequence_number": next(seq), "response": in_progress},
    ]
    if item["type"] == "function_call":
        events += [
            {
                "type": "response.output_item.added",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": {**item, "arguments": "", "status": "in_progress"},
            },
            {
                "type": "response.function_call_arguments.delta",
                "sequence_number": next(seq),
                "output_index": 0,
                "item_id": item["id"],
                "delta": output_text,
            },
            {
                "type": "response.function_call_arguments.done",
                "sequence_number": next(seq),
                "output_index": 0,
                "item_id": item["id"],
                "arguments": output_text,
                "name": tool_name,
            },
        ]
    else:
        part = item["content"][0]
        events += [
            {
                "type": "response.output_item.added",
                "sequence_number": next(seq),
                "output_index": 0,
                "item": {**item, "content": [], "status": "in_progress"},
            },
            {
                "type": "response.content_part.added",
                "sequence_number": next(seq),
                "output_index": 0,
                "content_index": 0,
                "item_id": item["id"],
                "part": {**part, "text": ""},
            },
            {
                "type": "response.output_text.delta",
                "sequence_number": next(seq),
                "output_index": 0,
                "content_index": 0,
                "item_id": item["id"],
                "delta": output_text,
                "logprobs": [],
            },
            {
                "type": "response.output_text.done",
                "sequence_number": next(seq),
                "output_index": 0,
                "content_index": 0,
                "item_id": item["id"],
                "text": output_text,
                "logprobs": [],
            },
            {
                "type": "response.content_part.done",
                "sequence_number": next(seq),
                "output_index": 0,
                "content_index": 0,
                "item_id": item["id"],
                "part": part,
            },
        ]
    events += [
        {"type": "response.output_item.done", "sequence_number": next(seq), "output_index": 0, "item": item},
        {"type": "response.completed", "sequence_number": next(seq), "response": response},
    ]
    return _sse(events, done_marker=False), tool_name


# ---------------------------------------------------------------------------------------------------------
# HTTP server
# ---------------------------------------------------------------------------------------------------------

_MODELS = ["gpt-4o", "gpt-4o-mini", "gpt-5.4", "gpt-5.4-mini", "gpt-5.4-nano", "gpt-5.6-terra", "gpt-5.6-sol", "gpt-5.6-luna"]


class StubServer:
    """The asyncio HTTP/1.1 server. Run ``serve()`` inside an event loop."""

    def __init__(self, state: StubState, host: str = "127.0.0.1", port: int = 0):
        self.state = state
        self.host = host
        self.port = port
        self._server: asyncio.base_events.Server | None = None
        self._stopping: asyncio.Event | None = None

    async def start(self) -> None:
        self._stopping = asyncio.Event()
        self._server = await asyncio.start_server(self._handle_conn, self.host, self.port, backlog=1024, reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]

    async def serve_until_stopped(self) -> None:
        assert self._stopping is not None
        await self._stopping.wait()
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), timeout=2)

    def request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _handle_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                lines = head.decode("latin-1").split("\r\n")
                try:
                    method, target, version = lines[0].split(" ", 2)
                except ValueError:
                    return
                headers: dict[str, str] = {}
                for line in lines[1:]:
                    if not line:
                        continue
                    key, _, value = line.partition(":")
                    headers[key.strip().lower()] = value.strip()
                if headers.get("transfer-encoding", "").lower() == "chunked":
                    body = await self._read_chunked(reader)
                else:
                    length = int(headers.get("content-length", "0") or 0)
                    body = await reader.readexactly(length) if length else b""
                keep_alive = headers.get("connection", "").lower() != "close" and version.upper() == "HTTP/1.1"
                status, payload, content_type, extra_headers = await self._dispatch(method.upper(), target.split("?", 1)[0], body)
                if isinstance(payload, (bytes, bytearray)):
                    data = bytes(payload)
                else:
                    data = json.dumps(payload, separators=(",", ":")).encode()
                head_lines = [
                    f"HTTP/1.1 {status} {_STATUS_REASONS.get(status, 'Status')}",
                    f"Content-Type: {content_type}",
                    f"Content-Length: {len(data)}",
                    f"Connection: {'keep-alive' if keep_alive else 'close'}",
                ]
                head_lines += [f"{k}: {v}" for k, v in extra_headers.items()]
                writer.write(("\r\n".join(head_lines) + "\r\n\r\n").encode("latin-1") + data)
                await writer.drain()
                if not keep_alive:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except asyncio.CancelledError:
            return
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
        parts = []
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return b"".join(parts)
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)

    async def _dispatch(self, method: str, path: str, body: bytes) -> tuple[int, Any, str, dict[str, str]]:
        json_ct = "application/json"
        path = path.rstrip("/") or "/"
        try:
            if path in ("/v1/chat/completions", "/chat/completions") and method == "POST":
                return await self._llm_call("chat.completions", body)
            if path in ("/v1/responses", "/responses") and method == "POST":
                return await self._llm_call("responses", body)
            if path in ("/v1/models", "/models") and method == "GET":
                data = [{"id": m, "object": "model", "created": 1700000000, "owned_by": "stub"} for m in _MODELS]
                return 200, {"object": "list", "data": data}, json_ct, {}
            if path.startswith(("/v1/models/", "/models/")) and method == "GET":
                model_id = path.split("/models/", 1)[1]
                return 200, {"id": model_id, "object": "model", "created": 1700000000, "owned_by": "stub"}, json_ct, {}
            if path == "/_stub/config":
                if method == "POST":
                    cfg = json.loads(body or b"{}")
                    return 200, self.state.configure(**cfg), json_ct, {}
                return 200, self.state.config(), json_ct, {}
            if path == "/_stub/stats" and method == "GET":
                return 200, self.state.stats(), json_ct, {}
            if path == "/_stub/reset" and method == "POST":
                self.state.reset()
                return 200, {"ok": True}, json_ct, {}
            if path == "/_stub/health":
                return 200, {"ok": True}, json_ct, {}
            return (
                404,
                {
                    "error": {
                        "message": f"No route {method} {path}",
                        "type": "invalid_request_error",
                        "code": "not_found",
                        "param": None,
                    }
                },
                json_ct,
                {},
            )
        except (ValueError, TypeError) as exc:
            return (
                400,
                {
                    "error": {
                        "message": f"Stub LLM: bad request: {exc}",
                        "type": "invalid_request_error",
                        "code": None,
                        "param": None,
                    }
                },
                json_ct,
                {},
            )

    async def _llm_call(self, endpoint: str, raw: bytes) -> tuple[int, Any, str, dict[str, str]]:
        body = json.loads(raw or b"{}")
        if not isinstance(body, dict):
            raise ValueError("body must be a JSON object")
        model = str(body.get("model") or "")
        if endpoint == "responses":
            items = body.get("input")
            if isinstance(items, str):
                items = [{"role": "user", "content": items}]
            prompt, msgs_text = _messages_text(items or [])
            instructions = body.get("instructions")
            all_text = (instructions + "\n" if isinstance(instructions, str) and instructions else "") + msgs_text
        else:
            prompt, all_text = _messages_text(body.get("messages") or [])
        generation = self.state.generation
        latency_s, fail, hang_s = self.state.decide(all_text)
        in_flight = self.state.in_flight_by_generation
        with self.state.arrived:
            in_flight[generation] = in_flight.get(generation, 0) + 1
            self.state.arrived.notify_all()
        try:
            if latency_s > 0:
                await asyncio.sleep(latency_s)
            if hang_s > 0:
                await asyncio.sleep(hang_s)
        finally:
            with self.state.arrived:
                in_flight[generation] -= 1
                if not in_flight[generation]:
                    del in_flight[generation]
        if fail is not None:
            status = int(fail.get("status", 500))
            self.state.record(endpoint=endpoint, model=model, prompt=prompt, status=status, tool=None, generation=generation)
            extra: dict[str, str] = {"x-request-id": f"req_stub_{self.state.next_id()}"}
            retry_after_ms = fail.get("retry_after_ms", 10)
            if retry_after_ms is not None:
                extra["retry-after-ms"] = str(retry_after_ms)
            should_retry = fail.get("should_retry")
            if should_retry is not None:
                extra["x-should-retry"] = "true" if should_retry else "false"
            return status, _error_body(status, fail), "application/json", extra
        tokens = find_echo_tokens(all_text)
        req_id = self.state.next_id()
        builder = build_response if endpoint == "responses" else build_chat_completion
        payload, tool_name = builder(body, req_id=req_id, tokens=tokens, prompt=prompt, all_text=all_text)
        self.state.record(endpoint=endpoint, model=model, prompt=prompt, status=200, tool=tool_name, generation=generation)
        content_type = "text/event-stream" if body.get("stream") else "application/json"
        return 200, payload, content_type, {"x-request-id": f"req_stub_{req_id}"}


# ---------------------------------------------------------------------------------------------------------
# Python API
# ---------------------------------------------------------------------------------------------------------


class StubLLM:
    """The stub server in a background thread (its own event loop). ``port=0`` picks a free port."""

    def __init__(self, port: int = 0, *, host: str = "127.0.0.1", latency_ms: int = 0, fail: Any = None, timeout: Any = None):
        self.state = StubState(latency_ms=latency_ms, fail=fail, timeout=timeout)
        self.host = host
        self.port = port
        self._server: StubServer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def root_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> StubLLM:
        if self._thread is not None:
            return self
        ready = threading.Event()
        errors: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            server = StubServer(self.state, host=self.host, port=self.port)
            try:
                loop.run_until_complete(server.start())
            except BaseException as exc:
                errors.append(exc)
                ready.set()
                loop.close()
                return
            self._server = server
            self.port = server.port
            ready.set()
            try:
                loop.run_until_complete(server.serve_until_stopped())
                pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name=f"stub-llm-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(timeout=10)
        if errors:
            self._thread = None
            raise errors[0]
        return self

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._loop is not None and self._server is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._server.request_stop)
        self._thread.join(timeout=5)
        self._thread = None
        self._server = None
        self._loop = None

    def configure(self, **kwargs: Any) -> dict[str, Any]:
        """Change knobs: ``latency_ms``, ``fail``, ``timeout`` (see module docstring). Returns the config."""
        return self.state.configure(**kwargs)

    def wait_in_flight(self, count: int = 1, timeout: float = 30) -> bool:
        return self.state.wait_in_flight(count, timeout)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def reset(self) -> None:
        """Clear stats and knobs."""
        self.state.reset()

    def __enter__(self) -> StubLLM:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class StubLLMProcess:
    """The stub server as a subprocess (``python -m tests.support.stub_llm``), driven over its admin API."""

    def __init__(self, port: int = 0, *, latency_ms: int = 0, python: str | None = None):
        self.port = port
        self.latency_ms = latency_ms
        self.python = python or sys.executable
        self.proc: subprocess.Popen[str] | None = None

    @property
    def root_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def start(self) -> StubLLMProcess:
        cmd = [self.python, __file__, "--port", str(self.port), "--latency-ms", str(self.latency_ms)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith(READY_PREFIX):
            self.stop()
            msg = f"Stub LLM subprocess did not start: {line!r}"
            raise RuntimeError(msg)
        self.port = int(line.rsplit(":", 1)[1].split("/", 1)[0])
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)
        self.proc = None

    def _call(self, method: str, path: str, payload: Any = None) -> Any:
        data = json.dumps(payload).encode() if payload is not None else (b"{}" if method == "POST" else None)
        req = urllib.request.Request(self.root_url + path, data=data, method=method, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def configure(self, **kwargs: Any) -> dict[str, Any]:
        return self._call("POST", "/_stub/config", kwargs)

    def stats(self) -> dict[str, Any]:
        return self._call("GET", "/_stub/stats")

    def reset(self) -> None:
        self._call("POST", "/_stub/reset")

    def __enter__(self) -> StubLLMProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deterministic OpenAI-compatible stub LLM server")
    parser.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (0 = pick a free one; the ready line tells)")
    parser.add_argument("--latency-ms", type=int, default=0)
    parser.add_argument("--config", default=None, help="initial knobs as JSON, same shape as POST /_stub/config")
    args = parser.parse_args(argv)

    state = StubState(latency_ms=args.latency_ms)
    if args.config:
        state.configure(**json.loads(args.config))

    async def run() -> None:
        server = StubServer(state, host=args.host, port=args.port)
        await server.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, server.request_stop)
        print(f"{READY_PREFIX} http://{args.host}:{server.port}/v1", flush=True)
        await server.serve_until_stopped()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
