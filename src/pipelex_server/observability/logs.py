"""Process logs: LOG_FORMAT=json|text for the server's, uvicorn's and the runtime's records, with the request and run ids.

JSON lines use the pipelex runtime's own schema (``time``, ``severity``, ``logger``, ``message``, then ``exception``,
``trace_id``/``span_id`` when an OpenTelemetry span is current), plus ``request_id`` (the X-Request-ID the server
echoes), ``run_id`` (the public id) and ``caller`` when the line is written on behalf of one. The runtime formats its
own lines; a log-record factory stamps the same three ids on them, so every line of the process shares one schema.
uvicorn's access lines also carry ``method``, ``path`` (without its query string unless LOG_PAYLOADS=true: signed
upload URLs and query parameters stay out of logs), ``status`` and ``client``.
"""

from __future__ import annotations

import contextvars
import copy
import json
import logging
from datetime import UTC, datetime
from typing import Any

from opentelemetry import trace

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("pipelex_server_request_id", default=None)
RUN_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("pipelex_server_run_id", default=None)
CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("pipelex_server_caller", default=None)
_CONTEXT = (("request_id", REQUEST_ID), ("run_id", RUN_ID), ("caller", CALLER))


def bind_request(request_id: str) -> None:
    """The request this task serves (the runs it starts inherit it)."""
    REQUEST_ID.set(request_id)


def bind_run(run_id: str, caller: str) -> None:
    """The run this task executes, by its public id, and its caller."""
    RUN_ID.set(run_id)
    CALLER.set(caller)


def context_fields() -> dict[str, str]:
    return {name: value for name, var in _CONTEXT if (value := var.get()) is not None}


def trace_fields() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": trace.format_trace_id(context.trace_id), "span_id": trace.format_span_id(context.span_id)}


def install_context_stamps() -> None:
    """Stamp the request, run and caller ids on every record this process creates (the runtime's JSON sink writes a
    record's extra attributes as fields, so its lines carry them under the same names). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "_pipelex_server_stamps", False):
        return

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        # inside a run the runtime stamps the request id we handed it on its own lines: not a second time
        runtime_in_run = RUN_ID.get() is not None and record.name.startswith("pipelex.")
        for name, var in _CONTEXT:
            value = var.get()
            if value is not None and not hasattr(record, name) and not (runtime_in_run and name == "request_id"):
                setattr(record, name, value)
        return record

    factory._pipelex_server_stamps = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, in the runtime's schema plus the request, run and caller ids."""

    def __init__(self, *args: Any, payloads: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.payloads = payloads

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "severity": record.levelname,
            "logger": record.name,
            "message": self._message(record),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        line.update(trace_fields())
        line.update(context_fields())
        for name, _ in _CONTEXT:  # stamped by the factory (a record made in another context keeps its own)
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.name == "uvicorn.access":
            line.update(self._access_fields(record))
        return json.dumps(line, ensure_ascii=False, default=str)

    def _message(self, record: logging.LogRecord) -> str:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            _, method, path, version, status = record.args
            return f"{method} {self._path(str(path))} HTTP/{version} {status}"
        return record.getMessage()

    def _path(self, path: str) -> str:
        return path if self.payloads else path.split("?", 1)[0]

    def _access_fields(self, record: logging.LogRecord) -> dict[str, Any]:
        if not (isinstance(record.args, tuple) and len(record.args) == 5):
            return {}
        client, method, path, _, status = record.args
        return {"method": method, "path": self._path(str(path)), "status": int(status), "client": client}


class TextFormatter(logging.Formatter):
    """The plain-text line, with the request and run ids appended when there are any; access paths without queries."""

    def __init__(self, *args: Any, payloads: bool = False, **kwargs: Any) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.payloads = payloads

    def format(self, record: logging.LogRecord) -> str:
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5 and not self.payloads:
            client, method, path, version, status = record.args
            record = copy.copy(record)
            record.args = (client, method, str(path).split("?", 1)[0], version, status)
        text = super().format(record)
        ids = " ".join(f"{name}={value}" for name, value in context_fields().items())
        return f"{text} [{ids}]" if ids else text


def log_config(*, log_format: str, payloads: bool, level: str = "info") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn (applied in every worker process): the server's, alembic's and
    uvicorn's loggers through one formatter on stderr."""
    formatter = JsonFormatter if log_format == "json" else TextFormatter
    handler = {"class": "logging.StreamHandler", "formatter": "server", "stream": "ext://sys.stderr"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"server": {"()": f"{formatter.__module__}.{formatter.__qualname__}", "payloads": payloads}},
        "handlers": {"server": handler},
        "loggers": {
            "uvicorn": {"handlers": ["server"], "level": level.upper(), "propagate": False},
            "uvicorn.error": {"level": level.upper()},
            "uvicorn.access": {"handlers": ["server"], "level": "INFO", "propagate": False},
            "pipelex_server": {"handlers": ["server"], "level": "INFO", "propagate": False},
            "alembic": {"handlers": ["server"], "level": "WARNING", "propagate": False},
        },
    }


def configure(*, log_format: str, payloads: bool, level: str = "info") -> dict[str, Any]:
    """Configure this process's loggers and the record stamps; returns the config for uvicorn's worker processes."""
    import logging.config

    config = log_config(log_format=log_format, payloads=payloads, level=level)
    logging.config.dictConfig(config)
    install_context_stamps()
    return config
