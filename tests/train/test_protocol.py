"""Training protocol (issue 17): splits (official / seeded random by reference, seeds, ratios), split.json,
test crops, timm:NAME backbones, and their one-line refusals."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from landscape.cli.app import main
from landscape.data import generate_synthetic
from landscape.data.splits import parse_ratios
from landscape.errors import LandscapeError
from landscape.metrics import iqa_scores
from landscape.models.checkpoint import build_model, load_checkpoint, safe_load
from landscape.models.imported import build_described
from landscape.models.trainable import timm_description
from landscape.train import pipeline
from landscape.train.config import load_config_file, resolve_config
from landscape.train.sweep import expand_sweep, run_sweep, sweep_runs
from tests.data.test_data_formats import _kadid, _koniq


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return generate_synthetic(tmp_path_factory.mktemp("synth") / "ds", n_references=9, size=72)


@pytest.fixture(scope="module")
def kadid(tmp_path_factory):
    root = tmp_path_factory.mktemp("kadid")
    _kadid(root, n_refs=10)              # 10 references x 4 distorted images
    return root


def cfg_of(dataset, **over):
    values = {"dataset": dataset, "model": "micro", "batch_sizes": [16], "lr": 1e-3, "reference_batch": 16,
              "epochs": 1, "patience": 0, "train_patches": 1, "test_patches": 1, "train_eval_images": 8,
              "device": "cpu"}
    return resolve_config({}, {**values, **over})


def _groups(data):
    return {name: {r.group for r in data.dataset.split(name)} for name in ("train", "val", "test")}


# ---------------------------------------------------------------- splits

def test_random_split_is_seeded_grouped_by_reference_and_respects_the_ratio(kadid):
    cfg = cfg_of(f"kadid10k:{kadid}", split="random", split_seeds=[0, 1], split_ratio=[0.6, 0.2, 0.2])
    data = pipeline.load_sweep_data(cfg)
    again = pipeline.load_run_data(cfg, 0)
    g0, g1 = _groups(data[0]), _groups(data[1])
    assert g0 == _groups(again) and data[0].split_record == again.split_record       # deterministic per seed
    assert g0 != g1                                                                   # differs across seeds
    for g in (g0, g1):   # no reference image in two splits; 10 references -> 6 / 2 / 2
        assert not (g["train"] & g["val"] or g["train"] & g["test"] or g["val"] & g["test"])
        assert [len(g[s]) for s in ("train", "val", "test")] == [6, 2, 2]
    assert data[0].dataset.split_sizes() == {"train": 24, "val": 8, "test": 8}
    assert data[0].split_record["rule"] == "seeded by reference image (ref_img): seed=0 ratios=0.6/0.2/0.2"
    assert data[0].split_sha256 != data[1].split_sha256


def test_paper_mode_zero_val_share_selects_on_test(kadid):
    cfg = cfg_of(f"kadid10k:{kadid}", split="random", split_ratio=list(parse_ratios("0.8:0:0.2")))
    data = pipeline.load_run_data(cfg)
    assert data.dataset.split_sizes() == {"train": 32, "val": 0, "test": 8}
    assert [r.path for r in data.eval_sets["val"].records] == [r.path for r in data.eval_sets["test"].records]
    assert data.identity["val_source"] == "test" and data.split_record["splits"]["val"]["n"] == 0


def test_official_split_is_the_default_where_the_format_has_one(tmp_path):
    _koniq(tmp_path)
    data = pipeline.load_run_data(cfg_of(f"koniq10k:{tmp_path}"))
    assert data.dataset.split_rule.startswith("official")
    rec = data.split_record["splits"]
    assert (rec["train"]["indices"], rec["val"]["indices"], rec["test"]["indices"]) == (
        list(range(7)), [7, 8], [9, 10, 11])
    assert rec["val"]["paths"] == ["1024x768/1007.jpg", "1024x768/1008.jpg"]
    shuffled = pipeline.load_run_data(cfg_of(f"koniq10k:{tmp_path}", split="random"))
    assert shuffled.dataset.split_rule.startswith("seeded by image: seed=0")
    with pytest.raises(LandscapeError, match=r"uses its official \(koniq10k_distributions_sets.csv:set\) split, so split seeds 0, 1 would train "
                                             r"the same runs; use --split random"):
        pipeline.load_run_data(cfg_of(f"koniq10k:{tmp_path}", split_seeds=[0, 1]))


def test_sweep_over_split_seeds_writes_the_split_each_run_used(synth, tmp_path):
    cfg = cfg_of(f"synthetic:{synth}", split="random", split_seeds=[0, 1])
    assert [s.name for s in expand_sweep(cfg)] == ["bs16_acc1_sqrt_seed0_split0", "bs16_acc1_sqrt_seed0_split1"]
    assert [s.name for s in expand_sweep(cfg_of(f"synthetic:{synth}"))] == ["bs16_acc1_sqrt_seed0"]
    out = tmp_path / "sweep"
    results = run_sweep(cfg, out, progress=False, echo=lambda m: None)
    assert [r.status for r in results] == ["finished", "finished"]
    hashes = []
    for run_dir, k in zip(sweep_runs(out), (0, 1)):
        split = json.loads((run_dir / "split.json").read_text())
        expected = pipeline.load_run_data(cfg, k)
        assert split == expected.split_record and split["split_seed"] == k
        train_paths = sorted(expected.dataset.relative(r) for r in expected.train)
        assert split["splits"]["train"]["paths"] == train_paths
        rc = json.loads((run_dir / "config.json").read_text())
        assert (rc["split_seed"], rc["split"], rc["split_sha256"]) == (k, "random", split["split_sha256"])
        assert "split_seeds" not in rc
        hashes.append(rc["split_sha256"])
    assert hashes[0] != hashes[1]
    manifest = json.loads((out / "sweep.json").read_text())
    assert [r["split_seed"] for r in manifest["runs"]] == [0, 1]
    # a second call resumes (finished runs skipped), the split hash does not count as a config change
    assert [r.message for r in run_sweep(cfg, out, progress=False, echo=lambda m: None)] == ["already finished"] * 2


# ---------------------------------------------------------------- config and CLI

def test_old_and_new_config_keys(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("dataset: synthetic:/d\nsplit_seed: 3\ntest_random_crop: true\n")
    cfg = resolve_config(load_config_file(y), {})
    assert cfg.split_seeds == [3] and cfg.split_seed == 3 and cfg.test_random_crop is True
    y.write_text("dataset: synthetic:/d\nsplit: random\nsplit_seeds: [0, 1]\nsplit_ratio: '0.8:0:0.2'\n"
                 "test_crops: random\nmodel: timm:test_vit\nimg_size: 64\n")
    cfg = resolve_config(load_config_file(y), {})
    assert (cfg.split, cfg.split_seeds, cfg.split_ratio, cfg.test_random_crop) == ("random", [0, 1], [0.8, 0, 0.2], True)
    assert (cfg.model, cfg.img_size) == ("timm:test_vit", 64)


def test_test_crops_random_reaches_the_eval_path(synth, monkeypatch):
    from typer.testing import CliRunner

    from landscape.cli.app import app
    from landscape.train import sweep

    seen = {}
    monkeypatch.setattr(sweep, "run_sweep", lambda cfg, out, **kw: seen.setdefault("cfg", cfg) and [])
    res = CliRunner().invoke(app, ["train", "--dataset", f"synthetic:{synth}", "--test-crops", "random",
                                   "--split", "random", "--split-seeds", "2,5", "--split-ratio", "0.8:0:0.2",
                                   "--model", "timm:test_vit", "--img-size", "64"])
    assert res.exit_code == 0, res.output
    cfg = seen["cfg"]
    assert (cfg.test_random_crop, cfg.split, cfg.split_seeds, cfg.split_ratio) == (True, "random", [2, 5],
                                                                                   [0.8, 0.0, 0.2])
    calls = []
    monkeypatch.setattr(pipeline, "predict_images", lambda *a, **kw: calls.append(kw) or None)
    monkeypatch.setattr(pipeline, "autocast_context", lambda *a: __import__("contextlib").nullcontext())
    model = torch.nn.Module()
    model.config = type("C", (), {"img_size": 64})()
    try:
        pipeline.predict(model, pipeline.EvalSet([], None), cfg, torch.device("cpu"), 8)
    except AttributeError:      # the spy returns None
        pass
    assert calls[0]["random_crop"] is True and calls[0]["seed"] == 0


def test_train_help_shows_the_protocol_defaults():
    from typer.testing import CliRunner

    from landscape.cli.app import app

    text = " ".join(CliRunner().invoke(app, ["train", "--help"], terminal_width=200).output.split())
    for piece in ("--split", "auto: official where the format has one, else random", "--split-seeds",
                  "--split-ratio", "0.7:0.1:0.2", "--test-crops", "grid", "--img-size", "timm:NAME"):
        assert piece in text, piece


# ---------------------------------------------------------------- timm backbones

def test_timm_backbone_trains_and_rebuilds_from_the_checkpoint_alone(synth, tmp_path):
    cfg = cfg_of(f"synthetic:{synth}", model="timm:test_vit", img_size=64, drop_path=0.1, dropout=0.1)
    out = tmp_path / "sweep"
    assert run_sweep(cfg, out, progress=False, echo=lambda m: None)[0].status == "finished"
    run_dir = sweep_runs(out)[0]
    ckpt = load_checkpoint(run_dir / "best.pt")
    t = ckpt.model_config["timm"]
    assert (ckpt.model_config["family"], ckpt.model_config["img_size"], ckpt.model_config["score_range"]) == (
        "timm", 64, [0.0, 1.0])
    assert (t["name"], t["img_size"], t["kwargs"], t["head"], t["dropout"]) == (
        "test_vit", 64, {"drop_path_rate": 0.1}, "landscape", 0.1)
    model = build_model(ckpt)
    # the rebuilt model reproduces the logged test metrics exactly ...
    data = pipeline.load_run_data(cfg)
    pred, score = pipeline.predict(model, data.eval_sets["test"], cfg, torch.device("cpu"), 16)
    logged = json.loads((run_dir / "log.jsonl").read_text().splitlines()[0])["test"]
    assert iqa_scores(pred, score).as_dict() == logged
    # ... and the trained weights' outputs bit for bit
    trained = build_described(ckpt.model_config)
    trained.load_state_dict(safe_load(run_dir / "train_state.pt")["model"])
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(model(x), trained.eval()(x))


def test_timm_img_size_reaches_only_models_that_take_it():
    vit, cnn = timm_description("test_vit", img_size=64), timm_description("test_resnet", img_size=64)
    assert vit["timm"]["img_size"] == 64 and "img_size" not in cnn["timm"] and cnn["img_size"] == 64
    assert timm_description("test_resnet")["img_size"] == 160       # timm's declared input size
    assert build_described(cnn)(torch.rand(2, 3, 64, 64)).shape == (2,)


# ---------------------------------------------------------------- refusals

@pytest.mark.parametrize("text, message", [
    ("0.8:0.2", "--split-ratio '0.8:0.2': expected TRAIN:VAL:TEST, e.g. 0.7:0.1:0.2 or 0.8:0:0.2"),
    ("a:b:c", "--split-ratio 'a:b:c': expected TRAIN:VAL:TEST"),
    ("0:0.5:0.5", "--split-ratio '0:0.5:0.5': need finite values >= 0 with TRAIN > 0"),
    ("0.9:-0.1:0.2", "--split-ratio '0.9:-0.1:0.2': need finite values >= 0 with TRAIN > 0"),
])
def test_bad_ratio_is_one_line(text, message):
    with pytest.raises(LandscapeError) as e:
        parse_ratios(text)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def _cli(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err.strip()


def test_cli_refusals_are_one_line_and_write_nothing(synth, kadid, tmp_path, capsys):
    out = tmp_path / "never"
    base = ["train", "--out", str(out), "--device", "cpu", "--epochs", "1", "--batch-sizes", "16"]
    code, err = _cli([*base, "--dataset", f"synthetic:{synth}", "--model", "timm:no_such_net_xyz"], capsys)
    assert code == 2 and "timm has no model 'no_such_net_xyz'" in err and len(err.splitlines()) == 1
    code, err = _cli([*base, "--dataset", f"synthetic:{synth}", "--split-ratio", "1:2"], capsys)
    assert code == 2 and "--split-ratio '1:2': expected TRAIN:VAL:TEST" in err and len(err.splitlines()) == 1
    code, err = _cli([*base, "--dataset", f"kadid10k:{kadid}", "--split", "official"], capsys)
    assert code == 2 and "format 'kadid10k' has no official split here; use --split random" in err
    assert len(err.splitlines()) == 1
    code, err = _cli([*base, "--dataset", f"synthetic:{synth}", "--split", "official", "--split-seeds", "0,1"], capsys)
    assert code == 2 and "the official split has no seed; use --split random to sweep split seeds" in err
    code, err = _cli([*base, "--dataset", f"synthetic:{synth}", "--model", "huge"], capsys)
    assert code == 2 and "'huge' is not one of 'micro', 'micro_plain', 'tiny', 'small', 'base', 'timm:NAME'" in err
    # no manifest, no run folder (only the training locks of another helper's lock file may be there)
    assert not out.exists() or not [p for p in out.iterdir() if p.name == "sweep.json" or p.name.startswith("bs")]
    with pytest.raises(LandscapeError, match=r"split_seeds \[1, 1\]: each split seed once"):
        cfg_of(f"synthetic:{synth}", split="random", split_seeds=[1, 1])
    with pytest.raises(LandscapeError, match="img_size=8: need an integer between 16"):
        cfg_of(f"synthetic:{synth}", img_size=8)
    assert np.isfinite(parse_ratios("0.8:0:0.2")).all()


def test_timm_model_config_cannot_reach_timm_loading_arguments():
    from landscape.errors import CheckpointError
    from landscape.models.schema import check_model_config

    desc = timm_description("test_vit", img_size=64, drop_path_rate=0.1)
    assert check_model_config(desc, "f.pt")["timm"]["kwargs"] == {"drop_path_rate": 0.1}
    for kwargs, message in (({"checkpoint_path": "x"}, "timm.kwargs key 'checkpoint_path' is refused"),
                            ({"pretrained_cfg_overlay": 1}, "timm.kwargs key 'pretrained_cfg_overlay' is refused"),
                            ({"drop_path_rate": 1.5}, r"timm.kwargs.drop_path_rate=1.5: need a number in \[0, 1\)")):
        bad = {**desc, "timm": {**desc["timm"], "kwargs": kwargs}}
        with pytest.raises(CheckpointError, match=message):
            check_model_config(bad, "f.pt")
    with pytest.raises(CheckpointError, match="f.pt: model_config timm has unknown keys: file"):
        check_model_config({**desc, "timm": {**desc["timm"], "file": "/w.pth"}}, "f.pt")
