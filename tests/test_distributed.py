"""Distributed (issue 8): DDP training, data-parallel Hessian and sharpness, sharded grids.

CPU, gloo, world size 2. The multi-process parts are launched with torchrun
(``python -m torch.distributed.run --standalone --nproc_per_node 2``) as users launch them;
the single-process references are computed in this process. Three launches, about 15-30 s
each on a busy 2-core machine: a sweep member killed after its first epoch
(``dist_scripts/train_killed.py``), its resume by ``cli.py train --only 0``, and the
analyzers on a tiny float64 model (``dist_scripts/analyzers.py``) followed by the analysis
workflows on the trained run (``dist_scripts/workflows_run.py``).
"""
import dataclasses
import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cli
from landscape import distributed as dist
from landscape import hessian as H
from landscape import sharpness as S
from landscape.analyze.inputs import load_analysis_input
from landscape.data import generate_synthetic
from landscape.errors import LandscapeError
from landscape.models.checkpoint import load_checkpoint
from landscape.models.trainable import build_train_model
from landscape.provenance import hash_batches
from landscape.surface import DirectionSpec, compute_surface, load_surface, merge_shards, shard_path
from landscape.surface.storage import merge_rank_shards
from landscape.train import pipeline
from landscape.train.config import load_config_file, resolve_config
from landscape.train.sweep import expand_sweep
from landscape.train.trainer import train_run

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = Path(__file__).resolve().parent / "dist_scripts"
RUN = "bs12_acc1_sqrt_seed0"


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"dist_scripts_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def torchrun(*args, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m torch.distributed.run --standalone --nproc_per_node 2 ARGS`` from the repo root."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def _ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


# ----------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def config_file(tmp_path_factory):
    """24 training images (6 references x blur), 1 patch each: batch 12 = 2 steps per epoch on 2 ranks of 6.
    The preset without BatchNorm (``micro_plain``: LayerNorm only), so that DDP on CPU equals one
    process with the global batch (``distributed.wrap_ddp``: no SyncBatchNorm under gloo)."""
    tmp = tmp_path_factory.mktemp("dist")
    root = generate_synthetic(tmp / "ds", n_references=6, size=64, distortions=("blur",))
    cfg = {"dataset": f"synthetic:{root}", "model": "micro_plain", "batch_sizes": [12, 24],
           "seeds": [0], "lr_scaling": ["sqrt"], "lr": 1e-3, "reference_batch": 8, "epochs": 2, "patience": 0,
           "warmup_epochs": 0, "loss": "l1",
           "train_patches": 1, "test_patches": 1, "train_eval_images": 8, "device": "cpu", "workers": 0,
           "ranking_alpha": 0.0, "dropout": 0.0, "drop_path": 0.0}
    path = tmp / "config.json"
    path.write_text(json.dumps(cfg))
    return path


@pytest.fixture(scope="module")
def trained(config_file):
    """Sweep member 0 under torchrun: killed after epoch 0, then resumed by ``cli.py train --only 0``."""
    out = config_file.parent / "sweep"
    killed = torchrun(SCRIPTS / "train_killed.py", config_file, out, 0)
    assert killed.returncode != 0 and "simulated kill after epoch 0" in killed.stderr
    state = torch.load(out / RUN / "train_state.pt", weights_only=False)
    assert state["epoch"] == 0 and not (out / RUN / "final.json").exists()
    resumed = _ok(torchrun("cli.py", "train", "--config", config_file, "--out", out, "--only", "0"))
    return out, resumed


@pytest.fixture(scope="module")
def workflow_results(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("workflows")
    _ok(torchrun(SCRIPTS / "workflows_run.py", trained[0] / RUN, out))
    return [{**json.loads((out / f"rank{r}.json").read_text()), "out": out} for r in range(2)]


@pytest.fixture(scope="module")
def analyzer_results(workflow_results):
    """The analyzers on the tiny model: run by the same launch as the workflows."""
    out = workflow_results[0]["out"] / "tiny"
    return out, [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


# ----------------------------------------------------------------------------- training

class UnionOfRanks(pipeline.RunData):
    """One process that sees, at every step, the union of the batches the 2 ranks train on."""

    def steps_per_epoch(self, batch_size: int, world: int = 1) -> int:
        return super().steps_per_epoch(batch_size, 2)

    def train_batches(self, spec, epoch, world=1, pin_memory=False):
        per_rank, steps = spec.batch_size // 2, self.steps_per_epoch(spec.batch_size)
        ranks = []
        for r in range(2):
            tp, loader = self.stream(per_rank, spec.seed, 2, r)
            tp.set_epoch(epoch)
            ranks.append([(b.inputs, b.targets) for b in itertools.islice(loader, steps)])
        for (x0, y0), (x1, y1) in zip(*ranks):
            assert x0.shape[0] == x1.shape[0] == per_rank     # full batches: DDP's mean = global mean
            yield torch.cat([x0, x1]), pipeline.normalise(torch.cat([y0, y1]), self.dataset.score_range)


def test_ddp_training_killed_and_resumed_equals_one_process_with_the_global_batch(trained, config_file, tmp_path):
    out, resumed = trained
    run_dir = out / RUN
    # one report line (rank 0 only); the run resumed at epoch 1 and finished
    lines = [ln for ln in resumed.stdout.splitlines() if RUN in ln]
    assert len(lines) == 1 and "finished" in lines[0], resumed.stdout
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "finished" and final["metrics"]["epochs_run"] == 2
    log = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1] and all(r["steps"] == 2 for r in log)
    # the records use the global batch: LR rule on 12 (sqrt: 1e-3 * sqrt(12 / 8)), 6 per rank
    rcfg = json.loads((run_dir / "config.json").read_text())
    assert (rcfg["world_size"], rcfg["effective_batch"], rcfg["per_rank_batch"]) == (2, 12, 6)
    assert rcfg["run_lr"] == pytest.approx(1e-3 * np.sqrt(12 / 8), rel=1e-12)
    assert log[0]["lr"] == pytest.approx(rcfg["run_lr"], rel=1e-12)
    # --only 0: member 1 (batch 24) untouched
    assert not (out / "bs24_acc1_sqrt_seed0" / "final.json").exists()

    # reference: one process, same seed, each step on the union of the two ranks' batches (12 patches)
    cfg = resolve_config(load_config_file(config_file), {})
    base = pipeline.load_run_data(cfg)
    union = UnionOfRanks(*[getattr(base, f.name) for f in dataclasses.fields(base)])
    spec = expand_sweep(cfg)[0]
    ref = train_run(cfg, spec, tmp_path / "ref", data=union)
    assert ref.status == "finished"
    ddp_state = load_checkpoint(run_dir / "last.pt").state_dict
    ref_state = load_checkpoint(tmp_path / "ref" / "last.pt").state_dict
    assert ddp_state.keys() == ref_state.keys()
    moved = 0.0
    for k in ddp_state:
        torch.testing.assert_close(ddp_state[k], ref_state[k], rtol=1e-5, atol=1e-6, msg=k)
        moved = max(moved, float((ref_state[k].double() - ddp_state[k].double()).abs().max()))
    assert moved < 1e-5
    ref_log = [json.loads(ln) for ln in (tmp_path / "ref" / "log.jsonl").read_text().splitlines()]
    for a, b in zip(log, ref_log):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
    # the weights did move over the 4 steps (the comparison is not trivially true)
    torch.manual_seed(spec.seed)
    fresh = build_train_model(cfg.model, img_size=cfg.img_size, drop_path=0.0, dropout=0.0)[0].state_dict()
    assert max(float((fresh[k] - ref_state[k]).abs().max()) for k in fresh) > 1e-4


def test_list_and_only_select_sweep_members(config_file, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--config", str(config_file), "--list"])
    assert e.value.code == 0
    assert capsys.readouterr().out.splitlines() == ["0\tbs12_acc1_sqrt_seed0", "1\tbs24_acc1_sqrt_seed0"]
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--config", str(config_file), "--out", str(config_file.parent / "x"), "--only", "2"])
    assert e.value.code == 2 and "--only 2: the sweep has runs 0..1" in capsys.readouterr().err


# ----------------------------------------------------------------------------- Hessian and sharpness

def test_data_parallel_hessian_equals_single_process(analyzer_results):
    out, (r0, r1) = analyzer_results
    an = _load_script("analyzers")
    model, criterion, batches = an.build()
    assert (r0["n_local"], r1["n_local"], r0["n_total"]) == (11, 8, 19)   # unequal shards: weights N_r / N
    ref = H.analyze_hessian(model, criterion, batches, **an.HESSIAN)
    with H.HessianOperator(model, criterion, batches, weight_decay=an.HESSIAN["weight_decay"]) as op:
        dense = op.dense().numpy()
        data_hash = op.data_hash()
    # one batch hash: every rank's data-parallel operator records the single-process one
    assert r0["data_hash"] == r1["data_hash"] == data_hash == hash_batches(batches)
    for r in (r0, r1):   # both ranks hold the same, single-process numbers
        np.testing.assert_allclose(r["dense"], dense, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(r["eigenvalues"], ref.topk.eigenvalues, rtol=1e-10)
        np.testing.assert_allclose(r["eigenvalues"], np.linalg.eigvalsh(dense)[::-1][:3], rtol=1e-8)
        assert r["trace"] == pytest.approx(ref.trace.trace, rel=1e-10)
        np.testing.assert_allclose(r["trace_samples"], ref.trace.samples, rtol=1e-9, atol=1e-12)
        assert r["trace_stderr"] == pytest.approx(ref.trace.stderr, rel=1e-8)
        assert r["density_trace"] == pytest.approx(ref.density.trace, rel=1e-9)
        assert r["loss"] == pytest.approx(ref.loss, rel=1e-12) and r["dense_loss"] == pytest.approx(ref.loss, rel=1e-12)
    # rank 0 stored every part once
    for part in ("topk", "trace", "density"):
        stored = H.load_hessian_result(out / "analysis.h5", part)
        assert stored is not None and stored[2]["engine"] == "data-parallel" and stored[2]["world_size"] == 2
        assert stored[2]["data_hash"] == data_hash
    np.testing.assert_allclose(H.load_hessian_result(out / "analysis.h5", "topk")[0].eigenvalues, r0["eigenvalues"])


def test_data_parallel_sharpness_equals_single_process_and_shares_its_keys(analyzer_results):
    out, (r0, r1) = analyzer_results
    an = _load_script("analyzers")
    model, criterion, batches = an.build()
    ref = S.summary_rows(S.analyze_sharpness(model, criterion, batches, **an.sharpness_settings()))
    assert [r["measure"] for r in ref] == ["keskar", "keskar", "adaptive", "adaptive", "average", "pacbayes", "noise"]
    for rows in (r0["sharpness"], r1["sharpness"]):
        assert [(r["measure"], r["setting"]) for r in rows] == [(r["measure"], r["setting"]) for r in ref]
        for got, want in zip(rows, ref):
            for field in ("value", "se", "srcc_drop"):
                g, w = float(got[field]), float(want[field])
                assert (np.isnan(g) and np.isnan(w)) or g == pytest.approx(w, rel=1e-9, abs=1e-12), (got, want)
    assert r0["suite"]["adaptive"][0]["n_examples"] == 12 and r0["suite"]["average"][0]["n_examples"] == 15
    # keys hash the global data: one process finds every data-parallel part already stored
    again = S.analyze_sharpness(model, criterion, batches, h5_path=out / "analysis.h5", **an.sharpness_settings())
    assert len(again.reused) == 7 and not again.computed


def test_workflows_under_torchrun_equal_single_process(trained, workflow_results, tmp_path):
    wf = _load_script("workflows_run")
    run_dir = trained[0] / RUN
    r0, r1 = workflow_results
    assert r0["world"] == 2 and r0["hessian"] == r1["hessian"] and r0["sharpness"] == r1["sharpness"]
    inp = load_analysis_input(run_dir, subsets=("train", "test"), **{k: v for k, v in wf.OPTS.items()})
    train = inp.batches["train"]
    # Hessian (stored by rank 0 in the run's analysis.h5) vs one process
    ref = H.analyze_hessian(inp.model, inp.criterion, train, seed=0, **wf.HESSIAN)
    topk = H.load_hessian_result(inp.analysis_path, "topk")[0]
    trace = H.load_hessian_result(inp.analysis_path, "trace")[0]
    assert topk.eigenvalues[0] == pytest.approx(ref.topk.eigenvalues[0], rel=1e-3)
    assert trace.trace == pytest.approx(ref.trace.trace, rel=1e-3)
    np.testing.assert_allclose(trace.samples, ref.trace.samples, rtol=1e-3, atol=1e-3 * np.abs(ref.trace.samples).max())
    # Keskar phi in a random subspace vs one process
    (stored,) = S.load_sharpness(inp.analysis_path, "keskar")["keskar"]
    phi = S.keskar_sharpness(inp.model, inp.criterion, train, S.KeskarConfig(eps=1e-3, subspace_dim=100, maxiter=2))
    assert stored["phi"] == pytest.approx(phi.phi, rel=1e-3) and stored["n_examples"] == 8
    # surface: the merged file (2 shards) equals the single-process grid cell for cell
    merged = load_surface(r0["surface_path"])
    assert merged.complete and r0["computed_now"] == r1["computed_now"] == 9
    assert load_surface(shard_path(merged.path, 0, 2)).done.sum() == 5
    assert load_surface(shard_path(merged.path, 1, 2)).done.sum() == 4
    keys = {s: inp.provenance["subsets"][s]["indices_sha256"] for s in inp.batches}
    single = compute_surface(inp.model, inp.criterion, inp.batches, tmp_path, wf.GRID, wf.GRID,
                             DirectionSpec(seed=0, count=2), subset_keys=keys,
                             checkpoint_hash=inp.checkpoint.content_hash)
    assert single.key == merged.key and single.computed_now == 9
    assert set(single.values) == set(merged.values) == {f"{s}_{m}" for s in ("train", "test")
                                                        for m in ("loss", "srcc", "plcc")}
    for name, v in single.values.items():
        np.testing.assert_allclose(merged.values[name], v, rtol=1e-5, atol=1e-7, equal_nan=True, err_msg=name)


# ----------------------------------------------------------------------------- sharded grids, in one process

def _tiny_problem():
    model, criterion, batches = _load_script("analyzers").build()
    return model, criterion, {"train": batches[:3], "test": batches[3:]}


def test_sharded_grid_equals_single_process_and_a_killed_rank_resumes(tmp_path):
    model, criterion, sets = _tiny_problem()
    grid = dict(x="-1:1:5", y="-0.5:0.5:3", directions=DirectionSpec(seed=2, count=2), flush_every=1)
    single = compute_surface(model, criterion, sets, tmp_path / "single", **grid)
    assert single.complete and single.computed_now == 15

    out = tmp_path / "sharded"
    r0 = compute_surface(model, criterion, sets, out, rank=0, world=2, **grid)
    assert r0.computed_now == 8 and r0.done.sum() == 8 and r0.path == shard_path(out / single.path.name, 0, 2)

    seen = []

    class Killed(RuntimeError):
        pass

    def die_after_three(cell, row):
        seen.append(cell)
        if len(seen) == 3:
            raise Killed("rank 1 killed")

    with pytest.raises(Killed):
        compute_surface(model, criterion, sets, out, rank=1, world=2, callback=die_after_three, **grid)
    assert seen == [7, 1, 3]                 # rank 1 owns the odd cells; the origin (cell 7) goes first
    part = load_surface(shard_path(out / single.path.name, 1, 2))
    assert np.flatnonzero(part.done.reshape(-1)).tolist() == [1, 3, 7]
    # the killed rank's rerun computes only its missing cells
    again = []
    r1 = compute_surface(model, criterion, sets, out, rank=1, world=2, callback=lambda c, r: again.append(c), **grid)
    assert again == [5, 9, 11, 13] and r1.computed_now == 4
    merged = merge_rank_shards(out / single.path.name, 2)
    assert merged.complete and merged.key == single.key
    for name, v in single.values.items():
        np.testing.assert_allclose(merged.values[name], v, rtol=1e-12, atol=1e-14, equal_nan=True, err_msg=name)
    # the merged file counts as done for shards of another world size: nothing is recomputed
    r3 = compute_surface(model, criterion, sets, out, rank=2, world=3, **grid)
    assert r3.computed_now == 0
    # a shard file of another analysis is refused by the merge
    other = compute_surface(model, criterion, sets, tmp_path / "other", x="-1:1:5", y="-0.5:0.5:3",
                            directions=DirectionSpec(seed=3, count=2), rank=0, world=2)
    with pytest.raises(LandscapeError, match="not one analysis"):
        merge_shards([other.path, shard_path(out / single.path.name, 1, 2)], tmp_path / "bad.h5")


def test_sharded_batches_split_weights_and_prefixes():
    batches = [(torch.zeros(n, 2), torch.arange(n, dtype=torch.float64) + 10 * b) for b, n in enumerate((4, 4, 3, 2, 1))]
    shards = [dist.shard_batches(batches, r, 2) for r in range(2)]
    assert [s.index for s in shards] == [[0, 2, 4], [1, 3]]
    assert [s.n_local for s in shards] == [8, 6] and shards[0].n_total == 14
    assert sum(sum(s.weights()) for s in shards) == pytest.approx(1.0)
    assert shards[1].offsets() == [4, 11]
    # the first 9 examples of the global list: batches 0, 1 and one example of batch 2
    cut = [s.take(9) for s in shards]
    assert cut[0].sizes == [4, 4, 1] and cut[0].index == [0, 2] and cut[0][1][1].tolist() == [20.0]
    assert cut[1].index == [1] and cut[1].n_total == 9
    with pytest.raises(LandscapeError, match="2 batches for 3 ranks"):
        dist.shard_batches(batches[:2], 0, 3)
    assert list(dist.units_for_rank(7, 1, 3)) == [1, 4]
    assert dist.map_units(4, lambda i: i * i) == [0, 1, 4, 9]     # one process: all units here
