"""Wrong files: truncated or corrupt checkpoints, another architecture, analysis files of another
checkpoint, unreadable images, bad config files. Each is refused with one line naming the file
and the problem, or (analysis files) kept apart and never mixed into results.
"""
from __future__ import annotations

import csv
import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from faultkit import HESSIAN, RUN, SHARPNESS, copy_run, one_line_error, run_all

from landscape.data import load_dataset, readable_records
from landscape.errors import CheckpointError, DataError
from landscape.hessian import load_hessian_result
from landscape.models.checkpoint import build_model, load_checkpoint, save_checkpoint
from landscape.report.collect import collect_sweep

TRAIN_SMALL = ["--model", "micro", "--batch-sizes", "16", "--epochs", "1", "--train-patches", "1",
               "--test-patches", "1", "--train-eval-images", "16", "--device", "cpu"]


def _sweep_with(src_sweep, dst, analysis_run=None):
    """Copy a sweep (manifest + run folder) and, optionally, the analysis files of ``analysis_run``."""
    shutil.copytree(src_sweep, dst)
    if analysis_run is not None:
        for p in analysis_run.iterdir():
            if p.suffix == ".h5":
                shutil.copy(p, dst / RUN / p.name)
    return dst


@pytest.fixture(scope="module")
def wrong(tmp_path_factory, dataset, training, crafted, analyses, server):
    root = tmp_path_factory.mktemp("wrong")
    # a run whose best.pt is truncated, and one whose analysis.h5 is not HDF5
    trunc_run = copy_run(training.ref_run, root / "trunc" / RUN)
    shutil.copy(crafted.truncated, trunc_run / "best.pt")
    h5_run = copy_run(training.ref_run, root / "badh5" / RUN)
    (h5_run / "analysis.h5").write_bytes(b"this is not HDF5\n" * 8)
    # sweeps holding the analyses of the reference best.pt: same checkpoint / a retrained one
    same = _sweep_with(training.ref, root / "same", analyses.ref)
    other = _sweep_with(training.ref, root / "other", analyses.ref)
    ck = load_checkpoint(other / RUN / "best.pt")
    model = build_model(ck)
    with torch.no_grad():
        dict(model.named_parameters())["head.4.weight"].mul_(1.5)
    save_checkpoint(other / RUN / "best.pt", model, ck.model_config, ck.meta)
    before = {"same": collect_sweep(same), "other": collect_sweep(other)}
    # a dataset with two unreadable training images and one unreadable test image
    bad = root / "bad_data"
    shutil.copytree(dataset, bad)
    rows = list(csv.DictReader(open(bad / "scores.csv")))
    broken = [r["path"] for r in rows if r["split"] == "train"][:2] + [r["path"] for r in rows
                                                                        if r["split"] == "test"][:1]
    for rel in broken:
        (bad / rel).write_bytes(b"not an image")
    (root / "unknown.yaml").write_text("dataset: synthetic:x\nepoch: 3\n")
    (root / "type.yaml").write_text("dataset: synthetic:x\nepochs: ten\n")
    (root / "nested.toml").write_text('dataset = "synthetic:x"\n[optimizer]\nlr = 0.1\n')
    cases = {
        "truncated": [*HESSIAN, trunc_run],
        "corrupt": [*HESSIAN, crafted.corrupt],
        "empty": [*SHARPNESS, crafted.empty],
        "other_arch": [*SHARPNESS, crafted.other_arch],
        "bad_h5": [*HESSIAN, h5_run],
        "other_ckpt_hessian": [*HESSIAN, other / RUN],
        "cfg_unknown": ["train", "--config", root / "unknown.yaml", "--out", root / "o1"],
        "cfg_type": ["train", "--config", root / "type.yaml", "--out", root / "o2"],
        "cfg_toml": ["train", "--config", root / "nested.toml", "--out", root / "o3"],
        "bad_images": ["train", "--dataset", f"synthetic:{bad}", *TRAIN_SMALL, "--out", root / "img_fail"],
        "skip_bad": ["train", "--dataset", f"synthetic:{bad}", *TRAIN_SMALL, "--skip-bad-images",
                     "--out", root / "img_skip"],
        "data_check": ["data", "check", bad, "--format", "synthetic"],
    }
    results = run_all(server, {k: [str(a) for a in v] for k, v in cases.items()})
    return {"root": root, "r": results, "trunc_run": trunc_run, "h5_run": h5_run, "same": same, "other": other,
            "before": before, "bad": bad, "broken": [str(bad / rel) for rel in broken]}


# ----------------------------------------------------------------------------- checkpoints

def test_truncated_corrupt_and_empty_checkpoints_are_refused(wrong, crafted):
    one_line_error(wrong["r"]["truncated"], str(wrong["trunc_run"] / "best.pt"), "truncated or corrupt checkpoint")
    one_line_error(wrong["r"]["corrupt"], str(crafted.corrupt), "corrupt")
    one_line_error(wrong["r"]["empty"], str(crafted.empty), "truncated or corrupt checkpoint (0 bytes")
    full = wrong["root"] / "full.pt"
    shutil.copy(wrong["same"] / RUN / "best.pt", full)
    data = full.read_bytes()
    for cut in (1, 64, 1024, len(data) // 3, len(data) - 22):     # every cut point: a clean refusal
        part = full.with_name(f"cut{cut}.pt")
        part.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=rf"{part.name}: truncated or corrupt checkpoint \({cut} bytes"):
            load_checkpoint(part)
    assert load_checkpoint(full).content_hash                        # the intact file loads


def test_checkpoint_of_another_architecture_lists_mismatches(wrong, crafted):
    line = one_line_error(wrong["r"]["other_arch"], str(crafted.other_arch), "does not match the model architecture")
    assert "missing keys: backbone.layers.1.blocks.1." in line
    assert "shape mismatches: backbone.layers.0.blocks.0.attn.proj.bias checkpoint (48,) vs model (32,)" in line
    with pytest.raises(CheckpointError, match=r"missing keys: .*shape mismatches: .*\(\+\d+ more\)"):
        build_model(load_checkpoint(crafted.other_arch))


def test_unreadable_analysis_file_is_refused(wrong):
    one_line_error(wrong["r"]["bad_h5"], str(wrong["h5_run"] / "analysis.h5"), "not a readable HDF5 file")
    assert (wrong["h5_run"] / "analysis.h5").read_bytes() == b"this is not HDF5\n" * 8   # left for the user


def test_analysis_files_of_another_checkpoint_are_never_mixed(wrong, analyses):
    """The analysis files of the reference best.pt are used for that checkpoint and ignored (listed
    as missing / skipped) for a retrained best.pt; analysing the new checkpoint recomputes every
    part instead of reusing the stored ones, and the report then takes the new parts only."""
    same, other = wrong["before"]["same"].runs[0], wrong["before"]["other"].runs[0]
    topk_ref, _, prov_ref = load_hessian_result(analyses.ref / "analysis.h5", "topk")
    assert same.row["hessian_lambda_max"] == float(topk_ref.eigenvalues[0])
    assert prov_ref["checkpoint_hash"] == same.row["checkpoint_hash"] != other.row["checkpoint_hash"]
    assert "keskar_random_eps0.001" in same.row and "average" in same.row
    assert not any(k.startswith(("hessian_", "keskar_", "average")) for k in other.row)
    assert {"hessian topk", "hessian trace", "sharpness keskar", "sharpness average"} <= set(other.missing)
    assert len(wrong["before"]["same"].surfaces[RUN]) == 1 and wrong["before"]["other"].surfaces[RUN] == []
    assert any("surface-" in s and "not the run's best.pt" in s for s in wrong["before"]["other"].skipped)

    res = wrong["r"]["other_ckpt_hessian"]
    assert res.rc == 0, res.describe()
    assert "reused 0 stored part(s) (-); computed 3 now (topk, trace, density)" in res.err
    after = collect_sweep(wrong["other"]).runs[0]
    topk_new, _, prov_new = load_hessian_result(wrong["other"] / RUN / "analysis.h5", "topk")
    assert prov_new["checkpoint_hash"] == other.row["checkpoint_hash"]
    assert after.row["hessian_lambda_max"] == float(topk_new.eigenvalues[0]) != float(topk_ref.eigenvalues[0])
    assert not any(k.startswith(("keskar_", "average")) for k in after.row)   # old sharpness still ignored
    with h5py.File(wrong["other"] / RUN / "analysis.h5", "r") as f:           # ... but kept in the file
        assert len(f["sharpness/keskar"]) == 2


# ----------------------------------------------------------------------------- data and config

def test_config_errors_name_the_key(wrong):
    root = wrong["root"]
    one_line_error(wrong["r"]["cfg_unknown"], str(root / "unknown.yaml"), "unknown key 'epoch'")
    one_line_error(wrong["r"]["cfg_type"], str(root / "type.yaml"), "'epochs'", "expected int", "'ten'")
    one_line_error(wrong["r"]["cfg_toml"], str(root / "nested.toml"), "unknown key 'optimizer'")
    for name in ("o1", "o2", "o3"):
        assert not (root / name).exists()                       # refused before anything was written


def test_unreadable_images_are_named_with_the_way_out(wrong):
    line = one_line_error(wrong["r"]["bad_images"], "unreadable image", "--skip-bad-images")
    assert any(path in line for path in wrong["broken"])


def test_unreadable_images_are_counted_before_anything_is_written(wrong):
    line = one_line_error(wrong["r"]["bad_images"])
    assert "3 of 189 images unreadable" in line
    assert not (wrong["root"] / "img_fail").exists()   # so the retry with --skip-bad-images needs no --force


def test_skip_bad_images_goes_on_and_names_every_skipped_image(wrong):
    res = wrong["r"]["skip_bad"]
    assert res.rc == 0, res.describe()
    assert f"{RUN}: finished" in res.out
    for path in wrong["broken"]:
        assert path in res.err
    log = (wrong["root"] / "img_skip" / RUN / "log.jsonl").read_text()
    assert '"n": 41' in log                                    # 42 test images, one unreadable


def test_skip_bad_images_records_the_skipped_images(wrong):
    identity = json.loads((wrong["root"] / "img_skip" / RUN / "dataset.json").read_text())
    assert sorted(p.split(" (")[0] for p in identity["skipped_images"]) == sorted(wrong["broken"])


def test_data_check_counts_and_lists_unreadable_images(wrong):
    res = wrong["r"]["data_check"]
    assert res.rc == 2 and "Traceback" not in res.err
    assert "unreadable 3" in res.out and "PROBLEMS FOUND" in res.out
    for path in wrong["broken"]:
        assert path in res.out


def test_readable_records_counts_or_skips(wrong):
    ds = load_dataset("synthetic", wrong["bad"])
    with pytest.raises(DataError, match=r"^here: 3 of 189 images unreadable \(first: .*--skip-bad-images"):
        readable_records(ds.records, where="here")
    good, skipped = readable_records(ds.records, skip_bad=True)
    assert len(good) == 186 and sorted(s.split(" (")[0] for s in skipped) == sorted(wrong["broken"])
    assert np.all([r.path not in wrong["broken"] for r in good])
