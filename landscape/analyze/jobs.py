"""Analyses of stored runs: load a run's checkpoint and data, run one analyzer, store, report.

The glue shared by ``landscape analyze ...`` and ``landscape demo``: each function
takes run folders (or checkpoint files) and :class:`AnalysisOptions`, loads the
analysis input (:func:`landscape.analyze.inputs.load_analysis_input`), calls the library
analyzer with storage into the run's HDF5 files, and returns the results.

Under ``torchrun`` (``WORLD_SIZE`` > 1) every function joins the process group itself
(:func:`landscape.distributed.init_from_env`) and runs data-parallel: the Hessian and the
sharpness measures split the analysis batches over ranks (results equal the
single-process ones within float summation error; rank 0 writes), grids split their
cells (each rank writes its own shard file, rank 0 merges the shards into the one
result file at the end). Logs and progress bars come from rank 0 only.

Each run's ``analysis.h5`` is locked (:func:`landscape.store.exclusive`, rank 0) for the
whole Hessian or sharpness analysis of that run: a second process analysing the same run
stops at once with an "in use" error instead of racing on the file; the kernel drops the
lock with its process, so a killed analysis can be resumed at once. Parts already stored
are reused, and the log says how many were reused and how many computed.

Grids over ranks are :func:`landscape.analyze.grid.sharded_grid`, their progress bars
:mod:`landscape.analyze.progress`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from landscape import distributed as dist
from landscape.analyze.grid import sharded_grid
from landscape.analyze.inputs import AnalysisInput, load_analysis_input, resolve_checkpoint
from landscape.analyze.progress import status_progress
from landscape.errors import LandscapeError
from landscape.formatting import fmt
from landscape.store import exclusive


@dataclass(frozen=True)
class AnalysisOptions:
    """Which data an analysis sees: ``samples`` images per subset, one centre crop each.

    ``dataset``: ``FORMAT:ROOT`` to analyse on instead of the run's recorded dataset (a moved
    sweep or dataset); verified against the run's record like the recorded one
    (:mod:`landscape.analyze.inputs`). None: the recorded absolute root.
    """

    subsets: tuple[str, ...] = ("train",)
    samples: int = 256
    batch_size: int = 64
    seed: int = 0
    which: str = "best"
    device: str = "auto"
    loss: str = "train"
    compile: str = "auto"       # grids: torch.compile of the forward pass (auto, on, off)
    dataset: str | None = None  # --dataset FORMAT:ROOT (None: the recorded one)


def expand_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders of every sweep folder named; run folders and checkpoint files as given."""
    from landscape.train.sweep import distinct_runs, sweep_runs

    # the same run reached through a symlink counts once
    return distinct_runs(run for p in map(Path, paths) for run in ([p] if p.is_file() else sweep_runs(p)))


def trained_runs(paths: Sequence[Path], which: str = "best", log: Callable[[str], None] = lambda m: None) -> list[Path]:
    """:func:`expand_runs` without the runs of a named sweep that have no ``<which>.pt`` yet (unfinished or
    not started): they are listed in one log line. A run folder named directly still has to have it
    (:func:`~landscape.analyze.inputs.resolve_checkpoint` says so); no trained run at all is an error."""
    named = {Path(p).resolve() for p in paths}
    runs, waiting = [], []
    for run in expand_runs(paths):
        if run.resolve() in named or run.is_file() or (run / f"{which}.pt").is_file():
            runs.append(run)
        else:
            waiting.append(run)
    if waiting:
        names = ", ".join(r.name for r in waiting)
        if not runs:
            raise LandscapeError(f"{', '.join(map(str, paths))}: no run has a '{which}.pt' checkpoint yet "
                                 f"(not trained: {names})")
        log(f"not analysed ({len(waiting)} run(s) without '{which}.pt', not trained yet): {names}")
    return runs


def analysis_inputs(paths: Sequence[Path], opts: AnalysisOptions,
                    log: Callable[[str], None] = lambda m: None) -> Iterator[AnalysisInput]:
    runs = trained_runs(paths, opts.which, log)
    for i, run in enumerate(runs):
        log(f"[{i + 1}/{len(runs)}] {run}")
        yield load_analysis_input(run, subsets=opts.subsets, samples=opts.samples, batch_size=opts.batch_size,
                                  seed=opts.seed, which=opts.which, device=opts.device, loss=opts.loss,
                                  dataset=opts.dataset)


def join_process_group(opts: AnalysisOptions, log: Callable[[str], None]) -> Callable[[str], None]:
    """Join the torchrun process group (if launched so); returns ``log`` on rank 0, a no-op elsewhere."""
    dist.init_from_env(opts.device)
    return log if dist.is_main() else (lambda m: None)


def _analysis_lock(inp: AnalysisInput):
    """Rank 0 holds the run's ``analysis.h5`` for a whole analysis (module docstring)."""
    return exclusive(inp.analysis_path) if dist.is_main() else contextlib.nullcontext()


def _hessian_parts_line(out: Any) -> str:
    """``reused N stored part(s) (...); computed M now (...)`` of a :class:`~landscape.hessian.HessianAnalysis`."""
    computed = []
    for name, res in [(None, out), *out.blocks.items()]:
        for part in ("topk", "trace", "density"):
            label = f"blocks/{name}/{part}" if name else part
            if getattr(res, part, None) is not None and label not in out.loaded:
                computed.append(label)
    return (f"reused {len(out.loaded)} stored part(s) ({', '.join(out.loaded) or '-'}); "
            f"computed {len(computed)} now ({', '.join(computed) or '-'})")


def _eval_sets(inp: AnalysisInput) -> tuple[dict, dict]:
    subsets = list(inp.batches)
    return ({s: inp.batches[s] for s in subsets},
            {s: inp.provenance["subsets"][s]["indices_sha256"] for s in subsets})


def hessian(paths: Sequence[Path], opts: AnalysisOptions, *, engine: str = "landscape",
            log: Callable[[str], None] = lambda m: None, **kwargs: Any) -> list[dict[str, str]]:
    """Hessian spectrum of each run (``kwargs`` go to :func:`landscape.hessian.analyze_hessian`)."""
    from landscape import hessian as H

    if engine not in ("landscape", "pyhessian"):
        raise LandscapeError(f"unknown --engine '{engine}' (valid: landscape, pyhessian)")
    log = join_process_group(opts, log)
    world = dist.world_size()
    if world > 1 and engine == "pyhessian":
        raise LandscapeError("--engine pyhessian runs in one process; launch it without torchrun")
    rows = []
    for inp in analysis_inputs(paths, opts, log):
        data = inp.batches[opts.subsets[0]]
        with _analysis_lock(inp):
            if world > 1:
                out = H.parallel_hessian(inp.model, inp.criterion, dist.shard_batches(data), seed=opts.seed,
                                         h5_path=inp.analysis_path, provenance=inp.provenance, **kwargs)
                topk, tr = out.topk, out.trace
                log(f"  {_hessian_parts_line(out)}")
            elif engine == "pyhessian":
                topk = H.pyhessian_top_eigenvalues(inp.model, inp.criterion, data,
                                                   top_n=max(1, kwargs.get("top_k", 1)),
                                                   tol=kwargs.get("tol", 1e-3), seed=opts.seed)
                H.save_hessian_result(inp.analysis_path, topk, {**inp.provenance, "engine": "pyhessian"},
                                      group="hessian_pyhessian")
                tr = None
            else:
                out = H.analyze_hessian(inp.model, inp.criterion, data, seed=opts.seed, h5_path=inp.analysis_path,
                                        provenance=inp.provenance,
                                        progress=status_progress(inp.run_dir.name, dist.is_main()), **kwargs)
                topk, tr = out.topk, out.trace
                log(f"  {_hessian_parts_line(out)}")
        row = {"run": inp.run_dir.name, "engine": engine}
        if topk is not None:
            row.update({"lambda_1": fmt(float(topk.eigenvalues[0]), float(topk.residuals[0])),
                        "top-k": ", ".join(f"{v:.4g}" for v in topk.eigenvalues),
                        "converged": f"{int(sum(bool(c) for c in topk.converged))}/{len(topk.eigenvalues)}",
                        "matvecs": str(topk.n_matvecs)})
        if tr is not None:
            row["trace"] = fmt(tr.trace, tr.stderr)
        rows.append(row)
    return rows


def sharpness(paths: Sequence[Path], opts: AnalysisOptions, *, log: Callable[[str], None] = lambda m: None,
              **kwargs: Any) -> list[dict[str, str]]:
    """Sharpness suite of each run (``kwargs`` go to :func:`landscape.sharpness.analyze_sharpness`)."""
    from landscape import sharpness as S

    log = join_process_group(opts, log)
    rows = []
    for inp in analysis_inputs(paths, opts, log):
        data = inp.batches[opts.subsets[0]]
        with _analysis_lock(inp):
            suite = S.analyze_sharpness(inp.model, inp.criterion,
                                        dist.shard_batches(data) if dist.world_size() > 1 else data,
                                        h5_path=inp.analysis_path, provenance=inp.provenance, seed=opts.seed,
                                        progress=lambda msg: log(f"  {msg}"),
                                        step_progress=status_progress(inp.run_dir.name, dist.is_main()), **kwargs)
        log(f"  reused {len(suite.reused)} stored part(s); computed {len(suite.computed)} now")
        for r in S.summary_rows(suite):
            rows.append({"run": inp.run_dir.name, "measure": r["measure"], "setting": r["setting"],
                         "value": fmt(r["value"], r["se"]), "unit": r["unit"],
                         "srcc_drop": fmt(r["srcc_drop"], r["srcc_drop_se"])})
    return rows


def surface(path: Path, opts: AnalysisOptions, *, grid: str = "-1:1:51", ygrid: str | None = None,
            direction_spec: Any = None, plots: bool = True, progress: bool = True, max_cells: int | None = None):
    """2D plane (or 1D slice with ``ygrid='none'``) around one checkpoint; returns the stored result.

    ``max_cells``: stop after that many cells (per rank); a later call resumes.
    """
    from landscape.figures.surface import plot_curves, plot_surface
    from landscape.surface import DirectionSpec, compute_slice, compute_surface, parse_grid

    dist.init_from_env(opts.device)
    (inp,) = list(analysis_inputs([path], opts))
    sets, keys = _eval_sets(inp)
    one_d = ygrid == "none"
    spec = replace(direction_spec or DirectionSpec(seed=opts.seed), count=1 if one_d else 2)
    n = len(parse_grid(grid)) * (1 if one_d else len(parse_grid(ygrid or grid)))
    common = dict(subset_keys=keys, checkpoint_hash=inp.checkpoint.content_hash, max_cells=max_cells,
                  compile=opts.compile)
    if one_d:
        res = sharded_grid(lambda **kw: compute_slice(inp.model, inp.criterion, sets, inp.run_dir, grid, spec,
                                                      **common, **kw), n, inp.run_dir.name, progress)
    else:
        res = sharded_grid(lambda **kw: compute_surface(inp.model, inp.criterion, sets, inp.run_dir, grid, ygrid,
                                                        spec, **common, **kw), n, inp.run_dir.name, progress)
    if plots and dist.is_main():
        figs = inp.run_dir / "figures"
        plot_curves(res, figs) if res.y is None else plot_surface(res, "train_loss", figs)
    return res


def interpolation(path_a: Path, path_b: Path, opts: AnalysisOptions, *, alpha: str = "-1:2:31",
                  buffers: str = "recompute", out: Path | None = None, plots: bool = True, progress: bool = True):
    """1D interpolation from checkpoint A (alpha 0) to B (alpha 1); stored beside the sweep by default."""
    from landscape.figures.surface import plot_curves
    from landscape.models.checkpoint import load_checkpoint
    from landscape.store import attrs_to_h5, update_h5
    from landscape.surface import alpha_grid, interpolate

    dist.init_from_env(opts.device)
    (inp,) = list(analysis_inputs([path_a], opts))
    ckpt_b = load_checkpoint(resolve_checkpoint(path_b, opts.which)[1])
    if ckpt_b.model_config != inp.checkpoint.model_config:
        raise LandscapeError(f"{path_b}: model config differs from {path_a}; interpolation needs one architecture")
    sets, keys = _eval_sets(inp)
    out_dir = Path(out) if out else inp.run_dir.parent
    res = sharded_grid(lambda **kw: interpolate(
        inp.model, inp.checkpoint.state_dict, ckpt_b.state_dict, inp.criterion, sets, out_dir, alpha,
        buffers=buffers, subset_keys=keys, hash_a=inp.checkpoint.content_hash, hash_b=ckpt_b.content_hash,
        compile=opts.compile, **kw),
        len(alpha_grid(alpha)), "interpolate", progress)
    labels = [Path(path_a).name, Path(path_b).name]
    if dist.is_main():
        with update_h5(res.path) as f:
            attrs_to_h5(f, {"endpoint_labels": labels})
    res.attrs["endpoint_labels"] = labels
    if plots and dist.is_main():
        plot_curves(res, out_dir / "figures")
    return res


def trajectory(run: Path, opts: AnalysisOptions, *, num: int = 21, center: bool = False, plots: bool = True,
               progress: bool = True):
    """Surface on the PCA plane of a run's per-epoch checkpoints, with the path."""
    from landscape.figures.surface import plot_surface
    from landscape.models.checkpoint import load_checkpoint
    from landscape.surface import trajectory_surface

    epochs = sorted(Path(run).glob("epoch_*.pt"))
    if len(epochs) < 2:
        raise LandscapeError(f"{run}: needs at least 2 per-epoch checkpoints (train with --save-every 1)")
    dist.init_from_env(opts.device)
    (inp,) = list(analysis_inputs([epochs[-1]], opts))
    states = [load_checkpoint(p).state_dict for p in epochs]
    sets, keys = _eval_sets(inp)
    planes = []

    def compute(**kw):
        res_, plane_ = trajectory_surface(inp.model, states, inp.criterion, sets, inp.run_dir, num=num, center=center,
                                          subset_keys=keys, checkpoint_hash=inp.checkpoint.content_hash,
                                          compile=opts.compile, **kw)
        planes.append(plane_)
        return res_

    res = sharded_grid(compute, num * num, "trajectory", progress)
    plane = planes[0]
    if plots and dist.is_main():
        plot_surface(res, "train_loss", inp.run_dir / "figures")
    return res, plane
