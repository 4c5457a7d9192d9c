"""``--pretrained FILE``: every backbone key matched or refused, checked before anything is written."""
from __future__ import annotations

import json

import pytest
import torch

from landscape.errors import CheckpointError
from landscape.models import create_model, model_config
from landscape.models.weights import check_pretrained, load_pretrained
from landscape.train.config import resolve_config
from landscape.train.pretrained import build_run_model
from landscape.train.sweep import run_sweep

RUN = "bs16_acc1_sqrt_seed0"


def _cfg(dataset, **over):
    values = {"dataset": f"synthetic:{dataset}", "model": "micro", "batch_sizes": [16], "seeds": [0],
              "lr_scaling": ["sqrt"], "lr": 1e-3, "reference_batch": 16, "epochs": 1, "patience": 0,
              "train_patches": 1, "test_patches": 1, "train_eval_images": 16, "device": "cpu", **over}
    return resolve_config({}, values)


@pytest.fixture(scope="module")
def backbone_state():
    torch.manual_seed(123)
    return create_model(model_config("micro")).backbone.state_dict()


def _micro_backbone():
    return create_model(model_config("micro")).backbone


def test_same_backbone_accepted_weights_equal(tmp_path, backbone_state, dataset):
    path = tmp_path / "bb.pth"
    torch.save(backbone_state, path)
    match = check_pretrained(_micro_backbone, path)
    assert match.matched == len(backbone_state) == 61 and match.dropped == ()
    torch.manual_seed(0)
    model, _ = build_run_model(_cfg(dataset, pretrained=str(path)))
    got = model.backbone.state_dict()
    assert list(got) == list(backbone_state)
    assert all(torch.equal(got[k], backbone_state[k]) for k in got)
    torch.manual_seed(0)
    plain, _ = build_run_model(_cfg(dataset))
    assert torch.equal(plain.head[1].weight, model.head[1].weight)          # the head: the same seeded init
    assert not torch.equal(plain.backbone.patch_embed.proj.weight, model.backbone.patch_embed.proj.weight)


def test_wrapped_file_with_classifier_head_accepted_and_recorded(tmp_path, backbone_state, dataset, capsys):
    path = tmp_path / "with_head.pt"
    state = {f"module.{k}": v for k, v in backbone_state.items()}
    state.update({"module.head.fc.weight": torch.zeros(1000, 128), "module.head.fc.bias": torch.zeros(1000)})
    torch.save({"state_dict": state}, path)
    out = tmp_path / "sweep"
    res = run_sweep(_cfg(dataset, pretrained=str(path)), out, progress=False)
    assert res[0].status == "finished"
    cfg = json.loads((out / RUN / "config.json").read_text())
    assert cfg["pretrained_matched_keys"] == 61
    assert cfg["pretrained_dropped_keys"] == ["head.fc.bias", "head.fc.weight"]
    assert len(cfg["pretrained_sha256"]) == 64
    line = capsys.readouterr().out.splitlines()[0]
    assert line == (f"pretrained {path}: all 61 backbone keys matched; dropped the classifier head (2 keys: "
                    f"head.fc.bias, head.fc.weight); stripped prefix module.")


def test_file_matching_nothing_refused_nothing_written(tmp_path, dataset):
    path = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(4, 4), "encoder.bias": torch.zeros(4)}, path)
    out = tmp_path / "sweep"
    with pytest.raises(CheckpointError) as err:
        run_sweep(_cfg(dataset, pretrained=str(path)), out, progress=False)
    assert str(err.value) == (f"{path}: no key matches the SwinTransformer backbone (file: 2 keys, e.g. "
                              f"encoder.bias, encoder.weight; backbone: 61 keys, e.g. patch_embed.proj.weight, "
                              f"patch_embed.proj.bias, patch_embed.norm.weight, patch_embed.norm.bias, ...); "
                              f"refusing to train from random init")
    assert not out.exists()


def test_partial_file_refused_listing_missing_keys(tmp_path, backbone_state, dataset):
    keys = list(backbone_state)
    part = {k: backbone_state[k] for k in keys if not k.startswith("layers.1.")}
    part["extra.weight"] = torch.zeros(2)
    path = tmp_path / "part.pt"
    torch.save(part, path)
    missing = sorted(k for k in keys if k.startswith("layers.1."))
    out = tmp_path / "sweep"
    out.mkdir()                                            # an existing empty --out stays empty
    with pytest.raises(CheckpointError) as err:
        run_sweep(_cfg(dataset, pretrained=str(path)), out, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{path}: does not fit the SwinTransformer backbone: {61 - len(missing)} of 61 keys "
                          f"matched; missing {len(missing)} ({', '.join(missing[:4])}, ...); unexpected 1 "
                          f"(extra.weight)")
    assert list(out.iterdir()) == []


def test_shape_mismatch_refused_and_load_leaves_model_unchanged(tmp_path, backbone_state):
    state = dict(backbone_state)
    state["norm.weight"] = torch.zeros(7)
    path = tmp_path / "shape.pt"
    torch.save(state, path)
    model = _micro_backbone()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"60 of 61 keys matched; shape mismatch 1 \(norm.weight \(7,\) vs "
                                              r"\(64,\)\)"):
        load_pretrained(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(CheckpointError, match="pretrained weights file not found"):
        run_sweep(_cfg("x", pretrained=str(tmp_path / "nope.pt")), tmp_path / "s", progress=False)
    assert not (tmp_path / "s").exists()
