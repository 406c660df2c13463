"""The OpenAI SDK's request-parameter transform, skipped for parameters it would give back unchanged.

Before each call the SDK walks the parameters against their declared types to rename aliased keys, format dates and
files, dump pydantic models, turn iterables into lists and drop omitted values. A Responses input item is declared as
a union of ~20 typed dicts and the SDK transforms the item against every one of them: ~0.25 ms of CPU per LLM call
of the seed method (py-spy over bursts: 4.8 % of the event loop thread), for parameters that come out equal to what
went in. Equal, that is, when no declared type on the way renames a key (decided once per type, by walking it) and
the values are plain JSON (exact ``dict``/``list``/``str``/``int``/``float``/``bool``/``None``, string keys): nothing
to format, dump or convert. Then the answer is the parameters without their omitted (top-level) values, which is
what the SDK's walk returns; anything else takes the SDK's own walk.
"""

from __future__ import annotations

import typing
from typing import Any

_MARK = "_pipelex_server_plain_params"
# the SDK modules whose calls pipelex's OpenAI workers make (Responses, Chat Completions)
MODULES = ("openai.resources.responses.responses", "openai.resources.chat.completions.completions")
_PLAIN_SCALARS = frozenset({str, int, float, bool, type(None)})
_renames: dict[Any, bool] = {}


def _is_plain(value: Any) -> bool:
    kind = type(value)
    if kind in _PLAIN_SCALARS:
        return True
    if kind is dict:
        return all(type(key) is str and _is_plain(item) for key, item in value.items())
    if kind is list:
        return all(_is_plain(item) for item in value)
    return False


def _may_rename(declared: Any, transform: Any) -> bool:
    """Whether the SDK's transform may rename a key anywhere under ``declared``: whether an alias is reachable from it
    through the types it is made of (unknown shapes count as one). Decided once per top-level type."""
    try:
        known = _renames.get(declared)
    except TypeError:  # an unhashable annotation: assume the worst
        return True
    if known is None:
        known = _renames[declared] = _reaches_alias(declared, transform)
    return known


def _reaches_alias(root: Any, transform: Any) -> bool:
    pending, seen = [root], set()
    while pending:
        declared = pending.pop()
        if id(declared) in seen:
            continue
        seen.add(id(declared))
        if isinstance(declared, (str, typing.ForwardRef, typing.TypeVar)):
            return True  # an unresolved or generic annotation: nothing is known about it
        origin = typing.get_origin(declared)
        if origin is typing.Annotated:
            if any(isinstance(meta, transform.PropertyInfo) and meta.alias is not None for meta in declared.__metadata__):
                return True
            pending.append(typing.get_args(declared)[0])
        elif origin is typing.Literal:
            continue
        elif transform.is_typeddict(declared):
            pending.extend(transform.get_type_hints(declared, include_extras=True).values())
        else:
            pending.extend(typing.get_args(declared))
    return False


def plain_params(data: Any, expected_type: Any) -> dict[str, Any] | None:
    """The SDK transform's answer for ``data`` when it can be told without the walk, else None."""
    from openai._utils import _transform as transform

    if type(data) is not dict or not transform.is_typeddict(expected_type):
        return None
    given = {key: value for key, value in data.items() if transform.is_given(value)}
    if not _is_plain(given) or _may_rename(expected_type, transform):
        return None
    return given


def _skipping(original: Any) -> Any:
    async def async_maybe_transform(data: Any, expected_type: Any) -> Any:
        plain = plain_params(data, expected_type)
        return plain if plain is not None else await original(data, expected_type)

    setattr(async_maybe_transform, _MARK, True)
    return async_maybe_transform


def install_plain_params() -> None:
    """Patch the SDK's call modules this process imported (idempotent; a module not imported is not imported)."""
    import sys

    for name in MODULES:
        module = sys.modules.get(name)
        if module is None:
            continue
        original = module.async_maybe_transform
        if not getattr(original, _MARK, False):
            module.async_maybe_transform = _skipping(original)
