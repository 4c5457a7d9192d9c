"""The house rules of the package layout: no import cycle, imports only go down the data flow."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("import_cycles", REPO / "tools" / "import_cycles.py")
ic = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ic)

# bottom to top; a module may import its own layer and the layers below it
LAYERS = [
    {"errors", "store", "provenance", "uncertainty", "formatting", "params", "batches", "metrics", "device",
     "distributed"},
    {"data"},
    {"models"},
    {"train"},
    {"linalg"},
    {"hessian", "sharpness", "surface"},
    {"figures"},
    {"plan", "analyze", "report"},
    {"demo"},
    {"cli", "__main__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if "." in module else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    return -1


def test_checker_finds_a_cycle(tmp_path):
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import x\n")
    assert ic.cycles(ic.import_graph(pkg)) == [["pkg.a", "pkg.b"]]


def test_no_import_cycle_in_landscape():
    assert ic.cycles(ic.import_graph(REPO / "landscape")) == []


def test_imports_only_go_down():
    graph = ic.import_graph(REPO / "landscape")
    upward = []
    for mod, targets in graph.items():
        for t in targets:
            if t == "landscape" or mod == "landscape":
                continue
            lm, lt = _layer(mod), _layer(t)
            assert lm >= 0 and lt >= 0, f"{mod} or {t} is in no layer: add it to LAYERS"
            if lt > lm:
                upward.append(f"{mod} -> {t}")
    assert upward == []


def test_analyzers_and_figures_do_not_reach_into_train_or_jobs():
    graph = ic.import_graph(REPO / "landscape")
    bad = [f"{m} -> {t}" for m, ts in graph.items() for t in ts
           if m.split(".")[1:2] and m.split(".")[1] in {"hessian", "sharpness", "surface", "linalg", "figures"}
           and t.split(".")[1:2] and t.split(".")[1] in {"train", "plan", "analyze", "report", "cli"}]
    assert bad == []


def test_command_line_imports_nothing_heavy():
    code = "import sys, cli; bad = [m for m in ('torch', 'timm', 'h5py', 'matplotlib') if m in sys.modules]; print(bad)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
