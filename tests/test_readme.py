"""Every python snippet in the README runs (in a temporary folder)."""

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_snippet_runs(index, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import matplotlib

    matplotlib.use("Agg")
    exec(compile(BLOCKS[index], f"README.md[python block {index}]", "exec"), {"__name__": "readme"})


def test_readme_has_snippets_and_ci_command():
    assert len(BLOCKS) >= 5
    ci = (README.parent / ".ci" / "run").read_text()
    command = (
        'python -m pip install -q -e ".[dev]" && python -m ruff check . && python -m pytest -q'
    )
    assert command in README.read_text() and command in ci
