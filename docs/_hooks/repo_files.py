"""MkDocs hook: files from outside ``docs/``, and the table of top-level names.

A page links them as it would on GitHub, relative to its own place in the repository
(``../paper_figures/CLAIMS.md`` from ``docs/experiments.md``). The hook adds each such file to the
site under ``repo/<path in the repository>`` and rewrites those links to it, so the same Markdown
reads correctly on GitHub and in the built site, and ``mkdocs build --strict`` still fails on a
link to a file that exists in neither place.

It also writes the table of ``hessian_lr.__all__`` into ``api/index.md`` where the page says
``<!-- top-level names -->``: each name links to its entry on its room's API page (an autoref,
so the strict build fails when a top-level name is missing from every room's ``__all__`` page).
"""

from __future__ import annotations

import importlib
import posixpath
import re
import sys
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "repo"
EXTERNAL = (
    "CHANGELOG.md",
    "paper_figures/CLAIMS.md",
    "paper_figures/out/*.png",
    "paper_figures/out/gpu/*.png",
    "benchmarks/README.md",
)
_LINK = re.compile(r"(\]\()(\.\./[^)\s#]+)")
_TOP_LEVEL = "<!-- top-level names -->"
ROOMS = ("curvature", "lr", "schedules", "range_test", "training", "integrations", "demo")


def _external_paths() -> list[str]:
    paths = []
    for pattern in EXTERNAL:
        paths += sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob(pattern))
    return paths


def on_files(files: Files, config) -> Files:
    """Add the repository files named in ``EXTERNAL`` under ``repo/``."""
    for path in _external_paths():
        files.append(File.generated(config, f"{PREFIX}/{path}", abs_src_path=str(ROOT / path)))
    return files


def top_level_table() -> str:
    """A Markdown table of ``hessian_lr.__all__``: each name, its room, a link to its entry."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    package = importlib.import_module("hessian_lr")
    rooms = {  # real subpackages only (an import hook may answer for old flat paths)
        room: importlib.import_module(f"hessian_lr.{room}")
        for room in ROOMS
        if (ROOT / "hessian_lr" / room / "__init__.py").exists()
    }
    rows = ["| name | documented in |", "| --- | --- |"]
    for name in (n for n in package.__all__ if not n.startswith("__")):
        room = next((r for r, m in rooms.items() if name in getattr(m, "__all__", ())), None)
        if room is None:
            module = getattr(getattr(package, name), "__module__", "hessian_lr")
            rows.append(f"| `{name}` | `{module}` (not in a room's `__all__`) |")
        else:
            # A name that is also a submodule's (curvature.lanczos) is documented under it.
            shadowed = (ROOT / "hessian_lr" / room / f"{name}.py").exists()
            target = f"hessian_lr.{room}.{name}" + (f".{name}" if shadowed else "")
            rows.append(f"| [`{name}`][{target}] | [{room}]({room}.md) |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    """Point ``../path`` links that leave ``docs/`` at the copies under ``repo/``."""
    if _TOP_LEVEL in markdown:
        markdown = markdown.replace(_TOP_LEVEL, top_level_table())
    page_dir = posixpath.dirname(page.file.src_uri)
    if page_dir.split("/")[0] == PREFIX:
        return markdown
    known = set(_external_paths())

    def rewrite(match: re.Match) -> str:
        target = posixpath.normpath(posixpath.join("docs", page_dir, match.group(2)))
        if target not in known:
            return match.group(0)  # left for mkdocs to resolve (and --strict to reject)
        return match.group(1) + posixpath.relpath(f"{PREFIX}/{target}", page_dir or ".")

    return _LINK.sub(rewrite, markdown)
