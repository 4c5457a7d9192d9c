"""``bench/gpu_check.py --smoke`` in a real process (what CI runs): the JSON has every section's
keys, and every measured number is finite and positive (errors and the loader's worker count,
0 in smoke mode: finite and >= 0)."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

REQUIRED = {
    "epoch": {"model", "batch_size", "patches_per_image", "variants", "best", "step_s", "patches_per_s",
              "loader_patches_per_s", "model_only_patches_per_s", "epoch_steps", "epoch_s_estimate",
              "epoch_min_estimate", "note", "section_s"},
    "memory": {"kind", "per_batch", "largest_fitting", "section_s"},
    "hessian": {"model", "k", "reference", "landscape", "hessian_eigenthings", "section_s"},
    "surface": {"grid", "cells", "bare_forward_cells_per_s", "eager_cells_per_s", "section_s"},
}


def _numbers(tree, path=""):
    """``(path, value)`` of every int/float leaf (bools and None left out)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from _numbers(v, f"{path}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from _numbers(v, f"{path}[{i}]")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool):
        yield path, tree


def test_gpu_check_smoke(tmp_path):
    out = tmp_path / "smoke.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "smoke" and result["schema"] == 1
    for section, keys in REQUIRED.items():
        assert keys <= set(result[section]), (section, keys - set(result[section]))
    assert set(result["memory"]["per_batch"]) == {"2", "4"}
    assert all(v["fits"] for v in result["memory"]["per_batch"].values())
    assert result["memory"]["largest_fitting"] == 4
    assert len(result["hessian"]["landscape"]["eigenvalues"]) == 2
    assert result["epoch"]["epoch_steps"] == math.ceil(7058 * 20 / 4)
    assert math.isclose(result["epoch"]["epoch_s_estimate"], result["epoch"]["epoch_steps"] * result["epoch"]["step_s"])
    checked = 0
    for section in REQUIRED:
        for path, v in _numbers(result[section], section):
            if "_forward." in path:          # call counts, checked below
                continue
            assert math.isfinite(v), path
            zero_ok = "err" in path or path.endswith(".workers")   # smoke: in-process loader
            assert v >= 0 if zero_ok else v > 0, (path, v)
            checked += 1
    assert checked > 30
    assert result["seconds_total"] > 0
    assert result["surface"]["eager_forward"]["eager_calls"] == result["surface"]["cells"] == 9
