"""Griffe extension: read two docstring habits of this codebase as Google sections.

- ``Example:`` (singular) holds doctests; griffe reads only ``Examples:`` as an examples section
  and would render the ``>>>`` lines as prose (their ``[...]`` outputs then look like broken
  cross-references to ``mkdocs build --strict``).
- ``a, b: text`` in ``Args:`` documents two parameters at once; griffe expects one name per
  entry, so the entry is split into ``a: text`` and ``b: text``.

Only the rendered documentation changes; the source and ``help()`` are as written.
"""

from __future__ import annotations

import re

import griffe

_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", flags=re.M)
_PAIR = re.compile(r"^(\s+)(\w+(?:, \w+)+): (.*)$")


def _split_pairs(text: str) -> str:
    out, in_args, indent = [], False, ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped in ("Args:", "Arguments:", "Parameters:"):
            in_args, indent = True, line[: len(line) - len(line.lstrip())]
        elif stripped and not line.startswith(indent + " "):
            in_args = False
        match = _PAIR.match(line) if in_args else None
        if match:
            indent_, names, text_ = match.groups()
            out += [f"{indent_}{name}: {text_}" for name in names.split(", ")]
        else:
            out.append(line)
    return "\n".join(out)


class CodebaseDocstrings(griffe.Extension):
    """Rewrite ``Example:`` to ``Examples:`` and split ``a, b:`` argument entries."""

    def on_instance(self, *, node, obj: griffe.Object, agent, **kwargs) -> None:  # noqa: D102
        if obj.docstring is not None:
            text = _EXAMPLE.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _split_pairs(text)
