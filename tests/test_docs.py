"""Every code block of the documentation pages (docs/**/*.md) runs, as the README's do.

A fenced block says its language: ``python`` blocks are executed in a temporary folder,
``bash`` blocks run with ``bash -euo pipefail`` in a temporary folder that links the checkout's
script folders (``hessian-lr`` is the console script, installed or not), ``text`` blocks are not
code (layout trees, formulas, printed output). A block that cannot run on a CPU in seconds is
preceded by ``<!-- skip: reason -->``: it is still checked for syntax, and reported as a skip
with its reason, so the count of skipped blocks shows in every test run.
"""

import ast
import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
LANGUAGES = ("python", "bash", "text")
_FENCE = re.compile(r"^```(\S*)\s*$")
_SKIP = re.compile(r"^<!--\s*skip:\s*(.*?)\s*-->\s*$")
# Folders a bash block may use by their checkout path (relative to the repository root).
_LINKED = ("experiments", "paper_figures", "benchmarks", "results_cpu", "results_gpu", "tests")


def _blocks(path: Path):
    """Yield (line, language, code, skip reason or None) for each fenced block of a page."""
    lines = path.read_text().split("\n")
    i, skip = 0, None
    while i < len(lines):
        marker, fence = _SKIP.match(lines[i]), _FENCE.match(lines[i])
        if marker:
            skip = (marker.group(1), i)
        elif fence:
            start, body = i + 1, []
            i += 1
            while i < len(lines) and lines[i] != "```":
                body.append(lines[i])
                i += 1
            reason = skip[0] if skip and skip[1] == start - 2 else None
            yield start, fence.group(1), "\n".join(body) + "\n", reason
            skip = None
        i += 1


# docs/demo/ holds the demo's generated output (report.md), not hand-written pages.
# (Parts below docs/: a checkout whose own path holds "demo" keeps its pages.)
PAGES = sorted(
    p for p in DOCS.rglob("*.md") if not {"_hooks", "demo"} & set(p.relative_to(DOCS).parts)
)
BLOCKS = [(p.relative_to(DOCS).as_posix(), *b) for p in PAGES for b in _blocks(p)]
CODE = [b for b in BLOCKS if b[2] != "text"]


def _run_python(code: str, name: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    try:
        exec(compile(code, name, "exec"), {"__name__": "docs"})
    finally:
        plt.close("all")


def _run_bash(code: str, name: str, folder: Path) -> None:
    bin_dir = folder / "_bin"
    bin_dir.mkdir()
    script = bin_dir / "hessian-lr"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m hessian_lr.cli "$@"\n')
    script.chmod(0o755)
    for name_ in _LINKED:
        if (ROOT / name_).exists():
            (folder / name_).symlink_to(ROOT / name_)
    env = dict(os.environ, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    env["PATH"] = f"{bin_dir}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"


@pytest.mark.parametrize("page,line,language,code,skip", CODE, ids=[f"{b[0]}:{b[1]}" for b in CODE])
def test_docs_block_runs(page, line, language, code, skip, tmp_path, monkeypatch):
    name = f"docs/{page}:{line}"
    if language == "python":
        ast.parse(code, name)  # a skipped block must still be valid Python
    else:
        syntax = subprocess.run(["bash", "-n", "-c", code], capture_output=True, text=True)
        assert syntax.returncode == 0, f"{name}: {syntax.stderr}"
    if skip:
        pytest.skip(f"{name}: {skip}")
    monkeypatch.chdir(tmp_path)
    if language == "python":
        _run_python(code, name)
    else:
        _run_bash(code, name, tmp_path)


def test_every_block_is_labelled_and_most_run():
    """Each fence names a known language; skip markers carry a reason and sit on a block."""
    assert PAGES and CODE
    unknown = [(p, line, lang) for p, line, lang, _, _ in BLOCKS if lang not in LANGUAGES]
    assert not unknown, f"fences without a known language (python, bash, text): {unknown}"
    for page in PAGES:
        lines = page.read_text().split("\n")
        for i, text in enumerate(lines):
            marker = _SKIP.match(text)
            if marker:
                assert marker.group(1), f"{page}:{i + 1}: a skip marker needs a reason"
                nxt = lines[i + 1] if i + 1 < len(lines) else ""
                assert _FENCE.match(nxt), f"{page}:{i + 1}: a skip marker must precede a fence"
    skipped = [b for b in CODE if b[4]]
    python = [b for b in CODE if b[2] == "python"]
    assert len([b for b in python if not b[4]]) >= 20  # the pages' examples really run
    assert len(skipped) < len(CODE) / 2, f"{len(skipped)} of {len(CODE)} code blocks skipped"


def _rooms():
    """Subpackages of hessian_lr whose ``__init__`` declares a public ``__all__``."""
    for init in sorted((ROOT / "hessian_lr").glob("*/__init__.py")):
        for node in ast.parse(init.read_text()).body:
            targets = node.targets if isinstance(node, ast.Assign) else []
            targets += [node.target] if isinstance(node, ast.AnnAssign) else []
            if "__all__" in [getattr(t, "id", None) for t in targets]:
                yield init.parent.name
                break


def test_every_room_has_an_api_page():
    """Each room with a public ``__all__`` is rendered by one ``::: hessian_lr.<room>`` line."""
    api = "\n".join(p.read_text() for p in (DOCS / "api").glob("*.md"))
    rooms = list(_rooms())
    assert {"curvature", "lr", "schedules", "training"} <= set(rooms)
    missing = [r for r in rooms if not re.search(rf"^::: hessian_lr\.{r}\s*$", api, flags=re.M)]
    assert not missing, f"rooms without an API reference page under docs/api/: {missing}"
    nav = (ROOT / "mkdocs.yml").read_text()
    for page in sorted((DOCS / "api").glob("*.md")):
        assert f"api/{page.name}" in nav, f"docs/api/{page.name} is not in mkdocs.yml's nav"


def test_cited_tests_exist():
    """Every ``tests/...py`` and ``::test_name`` a page cites as evidence exists."""
    cited = 0
    for page in PAGES:
        last = None
        for match in re.finditer(r"`(tests/[\w/]+\.py)?(::\w+)?`", page.read_text()):
            path, name = match.groups()
            last = path or last
            if not (path or name):
                continue
            cited += 1
            assert (ROOT / last).is_file(), f"{page.name} cites {last}, which does not exist"
            if name:
                source = (ROOT / last).read_text()
                assert f"def {name[2:]}(" in source, f"{page.name} cites {last}{name}: not found"
    assert cited >= 20


def test_cited_checkout_files_exist():
    """Files a page names in code spans (``benchmarks/results/...txt``, ``curvature/trace.py``)."""
    top = r"(?:benchmarks|experiments|paper_figures|hessian_lr|docs)/[\w/.-]+\.\w+"
    room = r"(?:curvature|lr|schedules|range_test|training)/[\w/.-]+\.py"
    missing, cited = [], 0
    for page in PAGES:
        text = page.read_text()
        for path in re.findall(rf"`({top})`", text):
            cited += 1
            missing += [] if (ROOT / path).exists() else [f"{page.name}: {path}"]
        for path in re.findall(rf"`({room})`", text):
            cited += 1
            missing += [] if (ROOT / "hessian_lr" / path).exists() else [f"{page.name}: {path}"]
    assert cited >= 10 and not missing, missing


def _resolve(dotted: str):
    """Import the longest module prefix of ``dotted``, then read the rest as attributes."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_dotted_names_in_the_pages_resolve():
    """Every ``hessian_lr.x.y`` a page or the README names in a code span exists."""
    names = set()
    for page in [*PAGES, ROOT / "README.md"]:
        for span in re.findall(r"`([^`\n]+)`", page.read_text()):
            names |= {(page.name, n) for n in re.findall(r"(?<![\w.])hessian_lr(?:\.\w+)+", span)}
    broken = []
    for page, name in sorted(names):
        try:
            _resolve(name)
        except (ImportError, AttributeError) as err:
            broken.append(f"{page}: {name} ({err})")
    assert len(names) >= 15 and not broken, broken


def test_demo_section_quotes_the_committed_report():
    # The home page's demo numbers are the committed report's (docs/demo/report.md, written by
    # `hessian-lr demo`), and every figure it shows is committed beside it.
    import re

    index = (DOCS / "index.md").read_text()
    report = (DOCS / "demo" / "report.md").read_text()
    for image in re.findall(r"!\[[^\]]*\]\((demo/[^)]+\.png)\)", index):
        assert (DOCS / image).stat().st_size > 10_000, image
    assert len(re.findall(r"!\[[^\]]*\]\(demo/", index)) == 4

    def bold(row_start: str) -> list[str]:
        row = next(line for line in report.splitlines() if line.startswith(row_start))
        return re.findall(r"\*\*([^*]+)\*\*", row)

    quoted = [
        *bold("| `find_lr`"),
        *bold("| classic range test"),
        *bold("| 1cycle at find_lr"),
        *bold("| 1cycle at the range"),
        *bold("| piecewise constant"),
    ]
    assert len(quoted) == 5
    section = index[index.index("## Demo") :]
    missing = [q for q in quoted if q not in section]
    assert not missing, f"docs/index.md does not quote the committed report's {missing}"
