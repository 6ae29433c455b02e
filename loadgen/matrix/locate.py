"""Where a key lives in a TOML file: key path -> line number, for error messages.

``tomllib`` (the standard library's reader, used to parse experiment files) returns plain
dicts without source positions, and tomlkit keeps the formatting but exposes no line numbers
either. A validation error such as ``("exclude", 2, "model")`` therefore gets its line from
this small scan of the source text, which follows TOML's structure closely enough for that:

- ``[a.b]`` sets the current table; ``[[a.b]]`` appends to the array of tables ``a.b`` (the
  n-th header of that name is index n, as tomllib numbers it);
- ``k = v`` and dotted ``k.j = v`` define ``current + key`` on their line;
- multi-line strings and multi-line arrays/inline tables are skipped until they close, so
  their content is never mistaken for keys.

Keys inside an inline table or an array (``options = { threads = 1 }``) are not located one by
one: ``line_of`` then answers the line of the nearest enclosing key that is, which is the line
a reader needs.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]

_BARE = r"[A-Za-z0-9_-]+"
_KEY_PART = rf'(?:{_BARE}|"(?:[^"\\]|\\.)*"|\'[^\']*\')'
_KEY = rf"{_KEY_PART}(?:\s*\.\s*{_KEY_PART})*"
_HEADER_RE = re.compile(rf"^\s*(\[\[?)\s*({_KEY})\s*(\]\]?)\s*(#.*)?$")
_ASSIGN_RE = re.compile(rf"^\s*({_KEY})\s*=\s*(.*)$")
_PART_RE = re.compile(_KEY_PART)


def split_key(key: str) -> tuple[str, ...]:
    """``a."b.c".d`` -> ("a", "b.c", "d")."""
    parts = []
    for m in _PART_RE.finditer(key):
        p = m.group(0)
        if p[0] in "\"'":
            p = p[1:-1]
        parts.append(p)
    return tuple(parts)


def _open_brackets(value: str) -> tuple[int, str | None]:
    """Net bracket depth opened by ``value`` (strings and comments skipped) and the
    multi-line string delimiter left open at its end, if any."""
    depth, i, n = 0, 0, len(value)
    while i < n:
        c = value[i]
        if value.startswith('"""', i) or value.startswith("'''", i):
            delim = value[i:i + 3]
            j = value.find(delim, i + 3)
            if j < 0:
                return depth, delim
            i = j + 3
            continue
        if c in "\"'":
            j = i + 1
            while j < n and value[j] != c:
                j += 2 if (c == '"' and value[j] == "\\") else 1
            i = j + 1
            continue
        if c == "#":
            break
        if c in "[{":
            depth += 1
        elif c in "]}":
            depth -= 1
        i += 1
    return depth, None


def _resolve(parts: tuple[str, ...], is_aot: bool, aot_count: dict[Path, int]) -> Path:
    """A header's key path with array-of-tables indices: under ``[[a]]``, ``[a.b]`` is
    ("a", <last index of a>, "b"); a new ``[[a.b]]`` gets the next index under its parent."""
    out: list[str | int] = []
    for i, p in enumerate(parts):
        out.append(p)
        key = tuple(out)
        if i == len(parts) - 1 and is_aot:
            aot_count[key] = aot_count.get(key, -1) + 1
            out.append(aot_count[key])
        elif key in aot_count:
            out.append(aot_count[key])
    return tuple(out)


def key_lines(text: str) -> dict[Path, int]:
    """Every table and key path defined in ``text`` -> its 1-based line (first definition)."""
    lines: dict[Path, int] = {}
    current: Path = ()
    aot_count: dict[Path, int] = {}
    open_string: str | None = None
    depth = 0
    for no, line in enumerate(text.splitlines(), start=1):
        if open_string is not None:  # inside a multi-line string
            if open_string in line:
                rest = line[line.index(open_string) + 3:]
                open_string = None
                d, open_string = _open_brackets(rest)
                depth += d
            continue
        if depth > 0:  # inside a multi-line array or inline table
            d, open_string = _open_brackets(line)
            depth = max(depth + d, 0)
            continue
        m = _HEADER_RE.match(line)
        if m and (m.group(1) == "[[") == (m.group(3) == "]]"):
            current = _resolve(split_key(m.group(2)), m.group(1) == "[[", aot_count)
            for i in range(1, len(current) + 1):
                lines.setdefault(current[:i], no)
            continue
        m = _ASSIGN_RE.match(line)
        if m:
            path = (*current, *split_key(m.group(1)))
            for i in range(len(current) + 1, len(path) + 1):
                lines.setdefault(path[:i], no)
            d, open_string = _open_brackets(m.group(2))
            depth = max(d, 0)
    return lines


def line_of(text: str, path: Path, index: dict[Path, int] | None = None) -> int | None:
    """The line of ``path``, or of its nearest located ancestor; None if nothing matches."""
    idx = key_lines(text) if index is None else index
    p = tuple(path)
    while p:
        if p in idx:
            return idx[p]
        p = p[:-1]
    return None
