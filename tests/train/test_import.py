"""``landscape import``: checkpoints trained elsewhere become run folders that analyses and reports accept."""
from __future__ import annotations

import textwrap

import numpy as np
import pytest
import torch
from torch import nn

from landscape.data import analysis_batches, generate_synthetic, load_dataset
from landscape.errors import CheckpointError, LandscapeError
from landscape.models.checkpoint import build_model, load_checkpoint
from landscape.models.imported import timm_network
from landscape.models.weights import import_model, read_weights
from landscape.store import read_json
from landscape.train.import_manifest import import_manifest
from landscape.train.imported_run import import_run

IMG = 32
FACTORY_SRC = textwrap.dedent("""
    import torch
    from torch import nn


    def make():
        return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.GELU(), nn.Conv2d(8, 8, 3, stride=2), nn.GELU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))


    def broken():
        raise RuntimeError("no GPU here")


    def not_a_model():
        return 42
""")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Synthetic data (scores 0..100), a user factory file and a fitted model saved as a plain state dict.

    The model is fitted (MSE) to the normalised training scores, so it outputs scores in 0:1.
    """
    tmp = tmp_path_factory.mktemp("import")
    root = generate_synthetic(tmp / "ds", n_references=6, size=48)
    factory = tmp / "user_models.py"
    factory.write_text(FACTORY_SRC)
    ds = load_dataset("synthetic", root)
    lo, hi = ds.score_range
    batches, _ = analysis_batches(ds.split("train"), None, 64, IMG, 0)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.GELU(), nn.Conv2d(8, 8, 3, stride=2), nn.GELU(),
                        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 1))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(120):
        for x, y in batches:
            loss = ((net(x).squeeze(-1) - (y - lo) / (hi - lo)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    weights = tmp / "model.pth"
    torch.save(net.state_dict(), weights)
    return {"tmp": tmp, "dataset": f"synthetic:{root}", "ds": ds, "factory": factory, "net": net.eval(),
            "weights": weights, "batches": batches}


def _import(world, out, **kw):
    kw = {"dataset": world["dataset"], "batch_size": 8, "factory": f"{world['factory']}:make",
          "score_range": "0:1", "img_size": IMG, "device": "cpu", **kw}
    return import_run(kw.pop("weights", world["weights"]), out, **kw)


def test_factory_import_then_hessian_equals_library_api(world):
    from landscape.analyze import jobs
    from landscape.data.analysis import split_analysis_batches as run_batches
    from landscape.hessian import analyze_hessian, load_hessian_result
    from landscape.train.losses import IQALoss

    run = world["tmp"] / "sweep_h" / "mine"
    final = _import(world, run, seed=3, lr=5e-6, labels={"origin": "hyperiqa"})
    assert np.isfinite(final["test_srcc"]) and final["srcc_gap"] == pytest.approx(final["train_srcc"] - final["test_srcc"])
    cfg = read_json(run / "config.json")
    assert cfg["batch_size"] == 8 and cfg["seed"] == 3 and cfg["run_lr"] == 5e-6 and cfg["labels"] == {"origin": "hyperiqa"}
    imp = cfg["imported"]
    assert len(imp["source_sha256"]) == 64 and imp["model"]["factory"]["function"] == "make"
    assert imp["model"]["factory"]["file"] == str(world["factory"].resolve()) and imp["score_range"] == [0.0, 1.0]
    assert read_json(run.parent / "sweep.json")["runs"][0]["name"] == "mine"

    opts = jobs.AnalysisOptions(samples=16, batch_size=8, device="cpu")
    jobs.hessian([run.parent], opts, top_k=2, trace=False, tol=1e-6)
    stored = load_hessian_result(run / "analysis.h5", "topk")[0].eigenvalues

    batches, _ = run_batches(world["ds"], "train", 16, 8, IMG, 0)
    lib = analyze_hessian(world["net"], IQALoss(0.5, 0.0), batches, top_k=2, trace=False, tol=1e-6, seed=0)
    np.testing.assert_allclose(stored, lib.topk.eigenvalues, rtol=1e-6)


def test_manifest_of_two_batch_sizes_gives_a_report_with_both(world, tmp_path):
    from landscape.report.build import build_report

    weights_b = tmp_path / "b.pth"
    torch.save({"epoch": 9, "state_dict": {f"module.{k}": v for k, v in world["net"].state_dict().items()}}, weights_b)
    manifest = tmp_path / "runs.csv"
    manifest.write_text(f"path,batch_size,seed,lr,optimizer\n{world['weights']},8,0,1e-4,adam\nb.pth,64,0,4e-4,adam\n")
    sweep = tmp_path / "sweep"
    got = import_manifest(manifest, sweep, dataset=world["dataset"], factory=f"{world['factory']}:make",
                          score_range="0:1", img_size=IMG, device="cpu")
    assert sorted(got) == ["bs64_seed0", "bs8_seed0"]
    assert read_json(sweep / "bs64_seed0" / "config.json")["labels"] == {"optimizer": "adam"}
    assert read_json(sweep / "bs64_seed0" / "config.json")["imported"]["wrapper"] == ["state_dict"]
    res = build_report(sweep, tmp_path / "report", log=lambda m: None)
    runs_csv = (res.out / "runs.csv").read_text()
    assert "bs8_seed0" in runs_csv and "bs64_seed0" in runs_csv


@pytest.mark.parametrize("head", ["landscape", "own"])
def test_timm_import_round_trip(world, tmp_path, head):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = timm_network("test_vit", head, img_size=IMG).eval()
    last = net.head[-1] if head == "landscape" else net.head
    with torch.no_grad():      # calibrate the random head so its outputs spread like scores in 0..100
        x = torch.cat([b[0] for b in world["batches"]])
        out = net(x).reshape(-1)
        scale = 25.0 / float(out.std())
        last.weight.mul_(scale)
        last.bias.mul_(scale).add_(50.0 - float(out.mean()) * scale)
    path = tmp_path / "vit.safetensors"
    save_file({f"model.{k}": v.contiguous() for k, v in net.state_dict().items()}, str(path))
    run = tmp_path / "sweep" / f"vit_{head}"
    final = import_run(path, run, dataset=world["dataset"], batch_size=16, timm_name="test_vit", img_size=IMG,
                       device="cpu")      # score range: the dataset's (0:100)
    assert np.isfinite(final["test_srcc"])
    ckpt = load_checkpoint(run / "best.pt")
    assert ckpt.model_config["timm"]["name"] == "test_vit" and ckpt.model_config["timm"]["head"] == head
    rebuilt = build_model(ckpt)
    probe = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(probe), net(probe).reshape(-1) / 100.0)


def test_refusals_are_one_line(world, tmp_path):
    state = world["net"].state_dict()
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if not k.startswith("6.")} | {"extra.w": torch.zeros(1)}, partial)
    with pytest.raises(CheckpointError, match=r"missing keys: 6.bias, 6.weight; unexpected keys: extra.w") as e:
        import_model(partial, factory=f"{world['factory']}:make", score_range=(0, 1))
    assert "\n" not in str(e.value)
    with pytest.raises(CheckpointError, match=r"factory .*:broken failed: RuntimeError: no GPU here"):
        import_model(world["weights"], factory=f"{world['factory']}:broken", score_range=(0, 1))
    with pytest.raises(CheckpointError, match=r"returned int, not a torch.nn.Module"):
        import_model(world["weights"], factory=f"{world['factory']}:not_a_model", score_range=(0, 1))
    with pytest.raises(LandscapeError, match=r"exactly one of --factory"):
        import_model(world["weights"], score_range=(0, 1))
    with pytest.raises(CheckpointError, match=r"--score-range 0:100 does not fit the model's outputs") as e:
        _import(world, tmp_path / "sweep" / "wrong", score_range="0:100")
    assert "\n" not in str(e.value) and not (tmp_path / "sweep" / "wrong").exists()
    bad = tmp_path / "evil.pth"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        read_weights(bad)


def test_factory_edited_after_import_is_refused_at_analysis(world, tmp_path):
    factory = tmp_path / "edited.py"
    factory.write_text(FACTORY_SRC)
    run = tmp_path / "sweep" / "r"
    _import(world, run, factory=f"{factory}:make")
    build_model(load_checkpoint(run / "best.pt"))          # unchanged: rebuilds
    factory.write_text(FACTORY_SRC + "\nprint('changed')\n")
    with pytest.raises(CheckpointError, match="is not the one recorded at import"):
        build_model(load_checkpoint(run / "best.pt"))


def test_cli_import_then_analyze(world, tmp_path, capsys):
    from landscape.cli import main
    from landscape.hessian import load_hessian_result

    sweep = tmp_path / "sweep"
    args = ["import", str(world["weights"]), "--out", str(sweep / "cli_run"), "--dataset", world["dataset"],
            "--factory", f"{world['factory']}:make", "--img-size", str(IMG), "--score-range", "0:1",
            "--label", "source=elsewhere", "--device", "cpu"]
    with pytest.raises(SystemExit) as e:
        main(args[:-2] + ["--device", "cpu"])           # no --batch-size: one-line refusal
    assert e.value.code == 2 and "--batch-size is required" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(args + ["--batch-size", "16"])
    assert e.value.code == 0 and "gap" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main(["analyze", "hessian", str(sweep), "--top-k", "1", "--samples", "8", "--batch-size", "8",
              "--device", "cpu"])
    assert e.value.code == 0
    assert load_hessian_result(sweep / "cli_run" / "analysis.h5", "topk") is not None


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("echo pwned",))


def test_module_factory_wrappers_and_unsafe_files(world, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(world["factory"].parent))
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"model": {f"module.model.{k}": v for k, v in world["net"].state_dict().items()},
                "score_range": [0, 100]}, wrapped)
    imp = import_model(wrapped, factory="user_models:make", img_size=IMG)
    assert imp.stripped == "module.model." and imp.score_range_source == "checkpoint"
    assert imp.description["factory"]["kind"] == "module" and imp.model.config.score_range == (0.0, 100.0)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(imp.model(x), world["net"](x).reshape(-1) / 100.0)
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Payload()}, evil)
    with pytest.raises(CheckpointError, match="refused: not a plain-tensor"):
        read_weights(evil)
