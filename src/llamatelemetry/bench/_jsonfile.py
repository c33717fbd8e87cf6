"""Reading the JSON files a benchmark is given (``--prompts-file``, ``--baseline``) so that
whatever is wrong with one is said at once, in a line that names the file and where in
it: text that is not UTF-8 (a byte order mark is fine), JSON that is not JSON, nesting
deeper than anything a request or report holds, values no request can carry.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

__all__ = ["MAX_DEPTH", "loads", "read_json", "show_number", "undecodable", "unsendable"]

#: Deeper nesting than any chat message (or report) has; a request's JSON encoder may
#: meet its recursion limit long before the parser does, mid-run.
MAX_DEPTH = 100
PATH_DEPTH = 4  # levels a message names: messages[0]['content'][1]['text']
BOM = b"\xef\xbb\xbf"
#: A JSON string (skipped whole), a bracket, or a line's end.
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}\n]', re.DOTALL)


def undecodable(path: Path) -> str:
    """Where ``path`` stops being UTF-8: ``"{path}:{line}: not UTF-8 text (...)"``."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return f"{path}:{line}: not UTF-8 text (byte {data[exc.start]:#04x}); save it as UTF-8"
    return f"{path}: not UTF-8 text; save it as UTF-8"


def _deep_line(text: str) -> int | None:
    """The line on which ``text``'s brackets nest deeper than `MAX_DEPTH`."""
    depth, line = 0, 1
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token == "\n":
            line += 1
        elif token in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                return line
        elif token in "]}":
            depth -= 1
        else:
            line += token.count("\n")
    return None


def loads(text: str, where: str, whole_file: bool = False) -> Any:
    """``json.loads``, its errors a ``ValueError`` that starts with ``where`` (a file's
    line, or with ``whole_file`` the file, and then the line is named too); nesting too
    deep for the parser is one too."""
    try:
        return json.loads(text)
    except RecursionError:
        line = _deep_line(text) if whole_file else None
        at = where if line is None else f"{where}:{line}"
        raise ValueError(f"{at}: JSON nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise ValueError(f"{where}: not JSON ({exc})") from None


def read_json(path: Path) -> Any:
    """The JSON document in ``path``: UTF-8 text, with or without a byte order mark.

    Raises ``ValueError`` naming the file (and the line, where there is one)."""
    data = path.read_bytes()
    try:
        text = data.removeprefix(BOM).decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(undecodable(path)) from None
    return loads(text, str(path), whole_file=True)


def show_number(value: Any) -> str:
    """A value for a message: a huge int as its count of digits, the rest cut short."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**16:
        try:
            return f"a number of {len(str(abs(value)))} digits"
        except ValueError:  # more digits than Python turns into text
            return "a number of thousands of digits"
    return repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."


def unsendable(value: Any, where: str) -> str | None:
    """What in ``value`` (parsed JSON) a request cannot carry, and where (``where``, then
    ``['key'][0]``...): nesting deeper than `MAX_DEPTH`, NaN or infinity, text that is
    not UTF-8 (a lone surrogate). None when it can all go."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, at, depth = stack.pop()
        if depth > MAX_DEPTH:
            return f"{at} is nested deeper than {MAX_DEPTH} levels"
        if isinstance(item, float) and not math.isfinite(item):
            return f"{at} is {item!r}, which JSON cannot carry (NaN or infinity)"
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError as exc:
                return f"{at} is not UTF-8 text (character {exc.start}: a lone surrogate)"
        elif isinstance(item, dict):
            children: list[tuple[Any, str, int]] = []
            for key, child in item.items():
                children.append((key, f"{at} key {show_number(key)}", depth + 1))
                children.append((child, _inside(at, repr(key), depth), depth + 1))
            stack.extend(reversed(children))
        elif isinstance(item, list):
            children = [(v, _inside(at, str(i), depth), depth + 1) for i, v in enumerate(item)]
            stack.extend(reversed(children))
    return None


def _inside(at: str, key: str, depth: int) -> str:
    """Where a member is: named down to a few levels (then ``[...]``)."""
    if depth < PATH_DEPTH:
        return f"{at}[{key}]"
    return at if at.endswith("[...]") else f"{at}[...]"
