"""The embedded synthetic dataset: determinism, distortions, score formula, split."""
from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from landscape.data import generate_synthetic, load_dataset
from landscape.data import synthetic as syn
from landscape.errors import DataError


def _hashes(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _rows(root: Path) -> list[dict]:
    with open(root / "scores.csv", newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def default_set(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    t0 = time.perf_counter()
    generate_synthetic(out)  # the default configuration
    return out, time.perf_counter() - t0


def test_default_size_and_generation_time(default_set):
    root, seconds = default_set
    rows = _rows(root)
    assert len(rows) == 48 * (1 + 4 * 5) == 1008
    assert seconds < 30.0
    assert {r["distortion"] for r in rows} == {"none", "blur", "noise", "jpeg", "contrast"}
    for kind in ("blur", "noise", "jpeg", "contrast"):
        assert sorted({int(r["level"]) for r in rows if r["distortion"] == kind}) == [1, 2, 3, 4, 5]
    meta = json.loads((root / "meta.json").read_text())
    assert meta["score_range"] == [0.0, 100.0] and meta["constants"]["D50"] == syn.D50
    assert "Q = 100 / (1 + (D / D50)^GAMMA)" in (root / "README.txt").read_text()
    first = rows[0]
    assert set(syn.CSV_COLUMNS) <= set(first) and (root / first["path"]).is_file()


def test_determinism_byte_identical(tmp_path):
    a = generate_synthetic(tmp_path / "a", seed=5, n_references=3, size=32)
    b = generate_synthetic(tmp_path / "b", seed=5, n_references=3, size=32)
    c = generate_synthetic(tmp_path / "c", seed=6, n_references=3, size=32)
    ha, hb, hc = _hashes(a), _hashes(b), _hashes(c)
    assert len(ha) == 3 * 21 + 3 and ha == hb
    assert ha["scores.csv"] != hc["scores.csv"] and ha["images/ref000.png"] != hc["images/ref000.png"]


def test_scores_in_range_and_decrease_with_level(default_set):
    rows = _rows(default_set[0])
    scores = np.array([float(r["score"]) for r in rows])
    assert scores.min() >= 0.0 and scores.max() <= 100.0
    assert all(float(r["score"]) == 100.0 for r in rows if r["distortion"] == "none")
    for kind in ("blur", "noise", "jpeg", "contrast"):
        means = [np.mean([float(r["score"]) for r in rows if r["distortion"] == kind and int(r["level"]) == lv])
                 for lv in range(1, 6)]
        assert all(np.diff(means) < -1.0), (kind, means)


def test_score_depends_on_content(default_set):
    rows = _rows(default_set[0])
    groups = defaultdict(list)
    for r in rows:
        if r["distortion"] != "none":
            groups[(r["distortion"], int(r["level"]))].append((float(r["busyness"]), float(r["score"])))
    for key, vals in groups.items():
        s = np.array([v[1] for v in vals])
        assert len(vals) == 48 and s.std() > 1.0, key  # same type and level, different references
    # masking: noise is less visible on busy content, blur more visible
    for level in (2, 3, 4):
        b, s = np.array(groups[("noise", level)]).T
        assert spearmanr(b, s)[0] > 0.4
        b, s = np.array(groups[("blur", level)]).T
        assert spearmanr(b, s)[0] < -0.4


def test_split_by_reference_and_loader(default_set):
    root = default_set[0]
    ds = load_dataset("synthetic", root)
    sizes = ds.split_sizes()
    assert sizes == {"train": 34 * 21, "val": 4 * 21, "test": 10 * 21}  # 48 refs: round(33.6), round(38.4)
    split_of = {}
    for rec in ds.records:
        assert split_of.setdefault(rec.group, rec.split) == rec.split
    assert ds.score_range == (0.0, 100.0) and "reference" in ds.split_rule
    # the same machinery through the generic csv format
    same = load_dataset("csv", root)
    assert [(r.path, r.score, r.split) for r in same.records] == [(r.path, r.score, r.split) for r in ds.records]
    reshuffled = load_dataset("synthetic", root, split_mode="random", split_seed=1)
    assert reshuffled.split_sizes() == sizes and reshuffled.split_rule.startswith("seeded by reference")


def test_distortion_index_closed_forms():
    grey = np.full((16, 16, 3), 128, dtype=np.uint8)
    assert syn.quality_score(grey, grey) == 100.0
    # flat reference (local contrast 0), uniform grey offset of 10 levels: D = (10/255) / C0
    d = syn.distortion_index(grey, grey + 10)
    assert d == pytest.approx((10 / 255) / syn.C0, rel=1e-12)
    assert syn.quality_score(grey, grey + 10) == pytest.approx(100 / (1 + (d / syn.D50) ** syn.GAMMA), rel=1e-12)
    # red-only offset: dY = 0.299 x, dCr = x - dY, dCb = -dY
    red = grey.copy()
    red[..., 0] += 20
    x = 20 / 255
    dy = 0.299 * x
    expect = np.sqrt((dy / syn.C0) ** 2 + syn.W_C * ((x - dy) ** 2 + dy ** 2) / syn.C0_C ** 2)
    assert syn.distortion_index(grey, red) == pytest.approx(expect, rel=1e-12)


def test_masking_noise_less_visible_on_texture():
    rng = np.random.default_rng(0)
    flat = np.full((48, 48, 3), 120, dtype=np.uint8)
    checker = ((np.indices((48, 48)).sum(0) % 2) * 120 + 60).astype(np.uint8)[..., None].repeat(3, 2)
    noise = rng.normal(0, 8, (48, 48, 1))
    noisy = lambda img: np.clip(img + noise, 0, 255).round().astype(np.uint8)  # noqa: E731
    assert syn.distortion_index(checker, noisy(checker)) < 0.5 * syn.distortion_index(flat, noisy(flat))


def test_bad_arguments(tmp_path):
    with pytest.raises(DataError, match="unknown synthetic distortion 'wavelet'"):
        generate_synthetic(tmp_path, distortions=("blur", "wavelet"))
    with pytest.raises(DataError, match="no synthetic dataset here"):
        load_dataset("synthetic", tmp_path)
    with pytest.raises(DataError, match="create it with: landscape data synth"):
        load_dataset("synthetic", tmp_path / "absent")


def test_color_distortion_and_ensure(tmp_path):
    out = syn.ensure_synthetic(tmp_path / "s", n_references=2, size=24, distortions=("color", "noise"))
    rows = _rows(out)
    assert len(rows) == 2 * 11 and {r["distortion"] for r in rows} == {"none", "color", "noise"}
    stamp = (out / "scores.csv").stat().st_mtime_ns
    syn.ensure_synthetic(tmp_path / "s", n_references=2, size=24, distortions=("color", "noise"))
    assert (out / "scores.csv").stat().st_mtime_ns == stamp  # same settings: not regenerated
    syn.ensure_synthetic(tmp_path / "s", n_references=3, size=24, distortions=("color", "noise"))
    assert len(_rows(out)) == 3 * 11
