"""Terminal transcripts in the docs (``$ command`` then its output), and their shape.

A transcript is compared with what the command prints by *shape*: names, columns, states,
keys and messages must be the same words; what differs from one machine or run to the next
(URLs, ports, ids, hashes, paths, times, counts) is replaced by a placeholder on both sides.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# Variable parts, most specific first.
_VARIABLE = [
    (re.compile(r"https?://[^\s\"']+"), "<url>"),
    (re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"), "<uuid>"),
    (re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(?:[+-]\d\d:\d\d|Z)?"), "<time>"),
    (re.compile(r"\b[0-9a-f]{16}\b"), "<hash>"),
    (re.compile(r"\b[0-9a-f]{8}\b"), "<id>"),
    (re.compile(r"(?<![\w.])/[^\s\"']+"), "<path>"),
    (re.compile(r"\d+"), "<n>"),
]


def shape(text: str) -> list[str]:
    """A text's lines with variable parts replaced and runs of blanks collapsed.

    Args:
        text: a command's output, or a transcript's.

    Returns:
        The non-empty lines, normalized.
    """
    out = []
    for line in text.splitlines():
        for pattern, placeholder in _VARIABLE:
            line = pattern.sub(placeholder, line)
        line = " ".join(line.split())
        if line:
            out.append(line)
    return out


def json_shape(value: Any) -> Any:
    """A JSON value's shape: the same structure and keys, strings normalized like ``shape``,
    numbers by type.

    Args:
        value: parsed JSON.

    Returns:
        A comparable value.
    """
    if isinstance(value, dict):
        return [(k, json_shape(v)) for k, v in value.items()]
    if isinstance(value, list):
        return [json_shape(v) for v in value]
    if isinstance(value, str):
        return " ".join(shape(value))
    if isinstance(value, bool) or value is None:
        return value
    return type(value).__name__


def plain_blocks(doc: str) -> list[str]:
    """The code blocks without a language of a Markdown file, in order.

    Args:
        doc: path relative to the repository.

    Returns:
        The blocks' text.
    """
    blocks: list[str] = []
    lang: str | None = None  # inside a block: its language ("" for none)
    lines: list[str] = []
    indent = 0  # a block in a list item is indented: its lines lose that indent
    for line in (ROOT / doc).read_text().splitlines():
        if lang is None and line.lstrip().startswith("```"):
            lang, lines = line.strip()[3:].strip(), []
            indent = len(line) - len(line.lstrip())
        elif lang is not None and line.strip() == "```":
            if not lang:
                blocks.append("\n".join(lines))
            lang = None
        elif lang is not None:
            lines.append(line[indent:] if not line[:indent].strip() else line)
    return blocks


def transcripts(doc: str) -> list[tuple[str, str]]:
    """The ``$ command`` / output pairs of a Markdown file's plain code blocks, in order (a
    command continued with a trailing backslash spans lines; a trailing `# comment` is not part
    of the command).

    Args:
        doc: path relative to the repository.

    Returns:
        [(command, expected output)].
    """
    out: list[tuple[str, str]] = []
    for block in plain_blocks(doc):
        command: list[str] | None = None
        output: list[str] = []
        continued = False
        for line in block.splitlines():
            if continued and command is not None:
                command.append(line)
                continued = line.endswith("\\")
                continue
            if line.startswith("$ "):
                if command is not None:
                    out.append(("\n".join(command), "\n".join(output)))
                first = re.sub(r"\s+# .*$", "", line[2:])
                command, output, continued = [first], [], line.endswith("\\")
            elif command is not None:
                output.append(line)
        if command is not None:
            out.append(("\n".join(command), "\n".join(output)))
    return out


def expected(doc: str, command: str, nth: int = 0) -> str:
    """The output a doc shows for a command (its ``nth`` transcript of that command).

    Args:
        doc: path relative to the repository.
        command: the command exactly as shown (after ``$ ``, without a trailing comment).
        nth: which of several transcripts of the same command.

    Returns:
        The output shown.
    """
    shown = [out for cmd, out in transcripts(doc) if cmd == command]
    assert len(shown) > nth, f"{doc} shows no transcript #{nth} of `{command}`"
    return shown[nth]


def assert_same_shape(command: str, shown: str, printed: str) -> None:
    """Asserts a command printed what the doc shows, up to variable parts (JSON by structure).

    Args:
        command: the command (for the message).
        shown: the doc's output.
        printed: what the command printed.
    """
    try:
        same = json_shape(json.loads(shown)) == json_shape(json.loads(printed))
        assert same, f"`{command}`: the doc shows\n{shown}\nbut it printed\n{printed}"
        return
    except ValueError:
        pass
    assert shape(shown) == shape(printed), (
        f"`{command}`: the doc shows\n{shown}\nbut it printed\n{printed}"
    )
