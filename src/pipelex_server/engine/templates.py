"""The compiled prompt-template cache patched into the runtime, bounded by TEMPLATE_CACHE_MAX_MIB."""

from __future__ import annotations

from typing import Any

from pipelex_server.engine.caches import ByteLRU

TEMPLATE_CACHE_MAX_ENTRIES = 2048

# What one cached template costs, measured once with tracemalloc (pipelex 0.92.2, 100 compiled prompt templates per
# size, retained bytes after gc): 93.9 KB for a 39-character template, 97.3 KB for 178, 102.5 KB for 518, 122.7 KB
# for 2,001 and 203.1 KB for 8,025 characters. The runtime compiles every template in its own fresh Jinja environment
# (filters, globals, lexer), which the template keeps alive: that is a fixed ~92 KiB per entry, plus ~14 bytes per
# character of source (the code object, the AST-derived module, the key). Length times a factor alone would
# undercount a short prompt some 100-fold (a ratio of 2,415 at 39 characters, 25 at 8,025), so the estimate is both.
TEMPLATE_ENTRY_OVERHEAD_BYTES = 92 * 1024
TEMPLATE_BYTES_PER_SOURCE_CHAR = 14

TEMPLATES = ByteLRU(max_bytes=32 * 1024 * 1024, max_entries=TEMPLATE_CACHE_MAX_ENTRIES)


def estimated_template_bytes(template_source: str) -> int:
    return TEMPLATE_ENTRY_OVERHEAD_BYTES + TEMPLATE_BYTES_PER_SOURCE_CHAR * len(template_source)


def install_template_cache(max_bytes: int) -> None:
    """Reuse compiled prompt templates across runs, within ``max_bytes`` (estimated) and 2,048 entries.

    The runtime compiles every prompt template again on every run, each time in a fresh Jinja environment (~15% of
    a run's CPU under load). A compiled template depends only on its source and its environment's settings, and
    its render budget is per render, so the same template is safe to reuse. Only the plain case is cached (no
    template registry for includes, no custom finalize); everything else compiles as before. The cache is the
    process's (the runtime is); installing it again only changes its budget.
    """
    from pipelex.tools.jinja2 import jinja2_rendering

    TEMPLATES.resize(max_bytes=max_bytes, max_entries=TEMPLATE_CACHE_MAX_ENTRIES)
    original = jinja2_rendering._compile_jinja2_template
    if getattr(original, "_pipelex_server_cached", False):
        return

    def compile_cached(template_source: str, **options: Any) -> Any:
        if options.get("use_registry") or options.get("finalize") is not None:
            return original(template_source, **options)
        key = (
            template_source,
            options.get("template_category"),
            options.get("enable_async", True),
            options.get("is_undefined_strict", False),
        )
        template = TEMPLATES.get(key)
        if template is not None:
            return template
        template = original(template_source, **options)  # raises for a bad template: nothing is cached
        TEMPLATES.put(key, template, estimated_template_bytes(template_source))
        return template

    compile_cached._pipelex_server_cached = True  # type: ignore[attr-defined]
    jinja2_rendering._compile_jinja2_template = compile_cached  # type: ignore[assignment]
