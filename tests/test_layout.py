"""The rooms' import graph runs one way (checked on the source, not on what happens to load)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "hessian_lr"

# room -> rooms (and top-level modules) it must never import
FORBIDDEN = {
    "curvature": {"lr", "schedules", "range_test", "training", "integrations", "cli", "demo"},
    "lr": {"schedules", "range_test", "training", "integrations", "cli", "demo"},
    "schedules": {"lr", "range_test", "training", "integrations", "cli", "demo"},
    "range_test": {"training", "integrations", "cli", "demo"},
    "training": {"integrations", "cli", "demo"},
}


def _imports(path: Path) -> set[str]:
    """Absolute dotted names a module imports (relative imports resolved against its package)."""
    pkg_parts = ["hessian_lr", *path.relative_to(PKG).parent.parts]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg_parts[: len(pkg_parts) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def test_rooms_import_one_way():
    bad = []
    for room, forbidden in FORBIDDEN.items():
        for path in (PKG / room).rglob("*.py"):
            for name in _imports(path):
                parts = name.split(".")
                if parts[0] == "hessian_lr" and len(parts) > 1 and parts[1] in forbidden:
                    bad.append(f"{path.relative_to(PKG)} imports {name}")
    assert not bad, "\n".join(bad)


def test_library_never_imports_experiments_or_figures():
    bad = [
        f"{p.relative_to(PKG)} imports {n}"
        for p in PKG.rglob("*.py")
        for n in _imports(p)
        if n.split(".")[0] in {"experiments", "paper_figures", "benchmarks", "tests"}
    ]
    assert not bad, "\n".join(bad)


def test_import_checker_sees_a_violation(tmp_path):
    """The checker itself can fail: a relative import two levels up is resolved to its room."""
    fake = PKG / "curvature" / "_layout_probe_tmp.py"
    fake.write_text("from ..lr import estimate_lr\n")
    try:
        assert "hessian_lr.lr.estimate_lr" in _imports(fake)
    finally:
        fake.unlink()


def test_import_hessian_lr_in_a_fresh_interpreter():
    code = "import hessian_lr, sys; print(len(hessian_lr.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert 30 <= int(out.stdout) <= 42  # a curated ~40 names; the rest from their rooms


# The rooms a public name is documented in.
ROOMS = [
    "hessian_lr.curvature",
    "hessian_lr.lr",
    "hessian_lr.schedules",
    "hessian_lr.range_test",
    "hessian_lr.training",
    "hessian_lr.training.data",
    "hessian_lr.training.models",
]


def test_every_public_name_imports_from_its_room():
    import importlib

    import hessian_lr

    union: dict[str, object] = {}
    for room in ROOMS:
        path = PKG.parent / room.replace(".", "/")
        if not (path.is_dir() or path.with_suffix(".py").is_file()):
            continue  # (not an installed checkout's room of the same name)
        module = importlib.import_module(room)
        for name in module.__all__:
            union.setdefault(name, getattr(module, name))  # AttributeError: a stale __all__
    top = set(hessian_lr.__all__) - {"__version__"}
    assert top <= set(union), f"top-level names in no room's __all__: {sorted(top - set(union))}"
    for name in top:
        assert getattr(hessian_lr, name) is union[name], name
    assert len(set(hessian_lr.__all__)) == len(hessian_lr.__all__)


def test_an_old_flat_path_fails_cleanly_and_leaves_the_function_alone():
    """0.1's flat paths are gone (CHANGELOG): importing one raises ModuleNotFoundError and never
    binds a module over the top-level function of the same name."""
    code = (
        "import hessian_lr\n"
        "for old in ('lanczos', 'hvp', 'train', 'linop'):\n"
        "    try:\n"
        "        __import__('hessian_lr.' + old)\n"
        "    except ModuleNotFoundError as err:\n"
        "        assert err.name == 'hessian_lr.' + old, err.name\n"
        "    else:\n"
        "        raise SystemExit('hessian_lr.' + old + ' imported')\n"
        "assert callable(hessian_lr.lanczos) and callable(hessian_lr.train)\n"
        "from hessian_lr.curvature import DenseOperator\n"
        "import torch\n"
        "op = DenseOperator(torch.diag(torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)))\n"
        "res = hessian_lr.lanczos(op, k=1, generator=torch.Generator().manual_seed(0))\n"
        "print(round(float(res.eigenvalues[0]), 6))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == "10.0"
