"""Every python snippet in the README runs (in a temporary folder); the README stays short."""

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
    assert BLOCKS and all(len(b.strip().split("\n")) <= 20 for b in BLOCKS)
    ci = (README.parent / ".ci" / "run").read_text()
    command = (
        'python -m pip install -q -e ".[dev]" && python -m ruff check . && python -m pytest -q'
    )
    assert command in README.read_text() and command in ci


def test_readme_is_short_and_its_links_exist():
    text = README.read_text()
    assert len(text.split("\n")) <= 250, "the manual belongs in docs/, not the README"
    links = re.findall(r"\]\(([^)#\s]+)", text)
    assert any(link.startswith("docs/") for link in links)
    missing = [link for link in links if "://" not in link and not (README.parent / link).exists()]
    assert not missing, f"README links to missing files: {missing}"
