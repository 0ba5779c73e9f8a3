"""MkDocs hook: serve a few files that live outside ``docs/`` (figures, CLAIMS.md, benchmarks).

A page links them as it would on GitHub, relative to its own place in the repository
(``../paper_figures/CLAIMS.md`` from ``docs/experiments.md``). The hook adds each such file to the
site under ``repo/<path in the repository>`` and rewrites those links to it, so the same Markdown
reads correctly on GitHub and in the built site, and ``mkdocs build --strict`` still fails on a
link to a file that exists in neither place.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "repo"
EXTERNAL = (
    "paper_figures/CLAIMS.md",
    "paper_figures/out/*.png",
    "paper_figures/out/gpu/*.png",
    "benchmarks/README.md",
)
_LINK = re.compile(r"(\]\()(\.\./[^)\s#]+)")


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


def on_page_markdown(markdown: str, page, config, files: Files) -> str:
    """Point ``../path`` links that leave ``docs/`` at the copies under ``repo/``."""
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
