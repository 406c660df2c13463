"""A bound on how deeply a bundle's TOML nests, found by a cheap scan before any parser sees the text.

A TOML parser recurses once per nested inline array or table, and the runtime walks the parsed document
recursively again (deep copies, schema validation), so ten thousand levels end in a ``RecursionError``. No real
bundle nests past a handful of levels; ``MAX_TOML_DEPTH`` is far above that and far below what recursion survives.

The scan never parses values. It tokenizes with one regular expression: strings (basic, literal and both
multi-line forms) and comments are skipped whole, so brackets and dots inside them never count. What it counts
is an upper bound on the nesting of the document the text describes:

- every open ``[`` / ``{`` of a value: one level;
- every dot of a key, in key position (``a.b.c = 1`` or ``{ a.b = 1 }``): one table level;
- a table header ``[a.b]`` / ``[[a.b]]``: two levels per key segment (an array of tables is an array holding a table).

The bound only needs to hold for the text a parser reads before its first syntax error: a parser stops there, so an
unclosed string ends the scan.
"""

from __future__ import annotations

import re

MAX_TOML_DEPTH = 100

_KEY = r"[A-Za-z0-9_-]+"
_SIMPLE = r"""(?:"(?!"")[^"\\\n]*"|'(?!'')[^'\n]*'|[A-Za-z0-9_:.+-]+)"""  # a string without escapes, or a bare scalar
_HEADER_PATH = rf"[ \t]*{_KEY}(?:[ \t]*\.[ \t]*{_KEY})*[ \t]*"
_QUOTED = re.compile(r"\"[^\"]*\"|'[^']*'")  # the strings of a group token (they hold no escapes)
_TOKENS = re.compile(
    # what never matters (bare keys, numbers, spaces) is consumed in front of each token, at C speed
    r"[^\"'#\[\]{}.=,\n]*(?:"
    # multi-line strings, skipped whole (one may end with up to two extra quotes)
    r'(?P<skip>"""[^"\\]*(?:(?:\\[\s\S]|"(?!""))[^"\\]*)*"""(?:""?)?'
    r"|'''[\s\S]*?'''(?:''?)?)"
    # a multi-line opener that never closes: the parser stops at it, and so does the scan
    r"|(?P<stop>\"\"\"|''')"
    # one-line strings and comments, skipped whole
    r'|(?P<skip_line>"[^"\\\n]*(?:\\[^\n][^"\\\n]*)*"'
    r"|'[^'\n]*'"
    r"|\#[^\n]*)"
    r"|(?P<stop_line>[\"'])"
    # the common shapes as one token each (most lines of a bundle): a line `key = simple value`, a line that
    # starts `key =`, a line break, a bracket group without nesting ([table], [[table]], [1, "a"]), a flat
    # inline table ({ a = "x", b = 1 })
    rf"|(?P<line>\n[ \t\r\n]*{_KEY}[ \t]*=[ \t]*{_SIMPLE}[ \t]*(?=[\r\n#]|\Z))"
    rf"|(?P<assign>\n[ \t\r\n]*{_KEY}[ \t]*=)"
    r"|(?P<newline>\n[ \t\r\n]*)"
    rf"|(?P<group>\[\[{_HEADER_PATH}\]\]|\[{_HEADER_PATH}\]"
    rf"|\[[ \t]*(?:{_SIMPLE}(?:[ \t]*,[ \t]*{_SIMPLE})*[ \t]*,?[ \t]*)?\])"
    rf"|(?P<table>\{{[ \t]*(?:{_KEY}[ \t]*=[ \t]*{_SIMPLE}(?:[ \t]*,[ \t]*{_KEY}[ \t]*=[ \t]*{_SIMPLE})*[ \t]*)?\}})"
    # structure, one character at a time
    r"|(?P<mark>[\[\]{}.=,])"
    r"|(?P<end>\Z))"
)


def _cheap_bound(text: str) -> int:
    """A bound that needs no scan: each level costs at least one bracket or dot (a header's up to two)."""
    return 1 + 2 * text.count("[") + text.count("{") + 2 * text.count(".")


def toml_excess(text: str, limit: int = MAX_TOML_DEPTH) -> int | None:
    """The offset in ``text`` where the document's nesting passes ``limit``, or None when it stays within it."""
    if _cheap_bound(text) <= limit:
        return None
    stack: list[tuple[str, int]] = []  # open inline containers: (bracket, key levels outside it)
    outer = 0  # table levels made by the dotted keys of enclosing inline tables
    key_dots = 0  # dots of the key being read at the current level
    header_levels = 0  # levels of the current [table] header
    header_dots = -1  # >= 0 while reading a header one character at a time
    in_key = True
    for match in _TOKENS.finditer(text):
        kind = match.lastgroup
        if kind in ("skip", "skip_line"):
            continue
        if kind in ("line", "assign", "newline"):
            if header_dots >= 0:  # a header cannot span lines: the parser stops here
                return None
            if not stack:
                key_dots = 0
                in_key = kind == "newline"
            elif kind != "newline":
                in_key = False
            continue
        if kind == "group" or kind == "table":
            group = match.group(kind)
            if kind == "group" and in_key and not stack and header_dots < 0:  # a table header
                dots = _QUOTED.sub("", group).count(".") if "'" in group or '"' in group else group.count(".")
                header_levels = 2 * (dots + 1)
                depth = 1 + header_levels
            else:  # a value that opens and closes its brackets: 1 level, or 2 for [[...]]
                depth = 1 + header_levels + outer + key_dots + len(stack) + (2 if group.startswith("[[") else 1)
            if depth > limit:
                return match.start(kind)
            in_key, key_dots = False, 0
            continue
        if kind != "mark":  # an unclosed string, or the end
            return None
        at = match.end() - 1
        char = text[at]
        if header_dots >= 0:  # inside [a.b.c] or [[a.b.c]], read one character at a time
            if char == ".":
                header_dots += 1
                if 1 + 2 * (header_dots + 1) > limit:
                    return at
            elif char == "]":
                header_levels = 2 * (header_dots + 1)
                header_dots = -1
                in_key = False
            continue
        if char == ".":
            if in_key:
                key_dots += 1
                if 1 + header_levels + outer + key_dots + len(stack) > limit:
                    return at
        elif char == "=":
            in_key = False
        elif char == ",":
            in_key = bool(stack) and stack[-1][0] == "{"
            key_dots = 0
        elif char in "[{":
            if char == "[" and in_key and not stack:  # a table header opens a statement
                header_dots = 0
                if 1 + 2 > limit:
                    return at
                continue
            stack.append((char, outer))
            outer += key_dots
            key_dots = 0
            in_key = char == "{"
            if 1 + header_levels + outer + len(stack) > limit:
                return at
        elif stack:  # "]" or "}"
            outer = stack.pop()[1]
            key_dots = 0
            in_key = False
    return None
