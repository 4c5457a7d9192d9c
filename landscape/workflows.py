"""Analyses of stored runs: load a run's checkpoint and data, run one analyzer, store, report.

The glue shared by ``landscape analyze ...`` and ``landscape demo``: each function
takes run folders (or checkpoint files) and :class:`AnalysisOptions`, loads the
analysis input (:func:`landscape.runs.load_analysis_input`), calls the library
analyzer with storage into the run's HDF5 files, and returns the results.
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .errors import LandscapeError
from .runs import AnalysisInput, load_analysis_input, resolve_checkpoint
from .tables import fmt


@dataclass(frozen=True)
class AnalysisOptions:
    """Which data an analysis sees: ``samples`` images per subset, one centre crop each."""

    subsets: tuple[str, ...] = ("train",)
    samples: int = 256
    batch_size: int = 64
    seed: int = 0
    which: str = "best"
    device: str = "auto"
    loss: str = "train"


def expand_runs(paths: Sequence[Path]) -> list[Path]:
    """Run folders of every sweep folder named; run folders and checkpoint files as given."""
    from .train.sweep import sweep_runs

    out: list[Path] = []
    for p in map(Path, paths):
        out += [p] if p.is_file() else sweep_runs(p)
    return out


def analysis_inputs(paths: Sequence[Path], opts: AnalysisOptions,
                    log: Callable[[str], None] = lambda m: None) -> Iterator[AnalysisInput]:
    runs = expand_runs(paths)
    for i, run in enumerate(runs):
        log(f"[{i + 1}/{len(runs)}] {run}")
        yield load_analysis_input(run, subsets=opts.subsets, samples=opts.samples, batch_size=opts.batch_size,
                                  seed=opts.seed, which=opts.which, device=opts.device, loss=opts.loss)


def cell_progress(total: int, label: str, enabled: bool = True):
    """A tqdm bar over grid cells on stderr: returns ``(callback(cell, row), close())``."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=label, unit="cell", file=sys.stderr, dynamic_ncols=True, leave=False,
               disable=not enabled)

    def callback(cell, row):
        bar.update(1)
        loss = next((v for k, v in row.items() if k.endswith("_loss")), None)
        if loss is not None:
            bar.set_postfix(loss=f"{loss:.4g}", refresh=False)
    return callback, bar.close


def _eval_sets(inp: AnalysisInput) -> tuple[dict, dict]:
    subsets = list(inp.batches)
    return ({s: inp.batches[s] for s in subsets},
            {s: inp.provenance["subsets"][s]["indices_sha256"] for s in subsets})


def hessian(paths: Sequence[Path], opts: AnalysisOptions, *, engine: str = "landscape",
            log: Callable[[str], None] = lambda m: None, **kwargs: Any) -> list[dict[str, str]]:
    """Hessian spectrum of each run (``kwargs`` go to :func:`landscape.hessian.analyze_hessian`)."""
    from . import hessian as H

    if engine not in ("landscape", "pyhessian"):
        raise LandscapeError(f"unknown --engine '{engine}' (valid: landscape, pyhessian)")
    rows = []
    for inp in analysis_inputs(paths, opts, log):
        data = inp.batches[opts.subsets[0]]
        if engine == "pyhessian":
            topk = H.pyhessian_top_eigenvalues(inp.model, inp.criterion, data, top_n=max(1, kwargs.get("top_k", 1)),
                                               tol=kwargs.get("tol", 1e-3), seed=opts.seed)
            H.save_hessian_result(inp.analysis_path, topk, {**inp.provenance, "engine": "pyhessian"},
                                  group="hessian_pyhessian")
            tr = None
        else:
            out = H.analyze_hessian(inp.model, inp.criterion, data, seed=opts.seed, h5_path=inp.analysis_path,
                                    provenance=inp.provenance, **kwargs)
            topk, tr = out.topk, out.trace
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
    from . import sharpness as S

    rows = []
    for inp in analysis_inputs(paths, opts, log):
        suite = S.analyze_sharpness(inp.model, inp.criterion, inp.batches[opts.subsets[0]],
                                    h5_path=inp.analysis_path, provenance=inp.provenance, seed=opts.seed,
                                    progress=lambda msg: log(f"  {msg}"), **kwargs)
        for r in S.summary_rows(suite):
            rows.append({"run": inp.run_dir.name, "measure": r["measure"], "setting": r["setting"],
                         "value": fmt(r["value"], r["se"]), "unit": r["unit"],
                         "srcc_drop": fmt(r["srcc_drop"], r["srcc_drop_se"])})
    return rows


def surface(path: Path, opts: AnalysisOptions, *, grid: str = "-1:1:51", ygrid: str | None = None,
            direction_spec: Any = None, plots: bool = True, progress: bool = True):
    """2D plane (or 1D slice with ``ygrid='none'``) around one checkpoint; returns the stored result."""
    from .surface import DirectionSpec, compute_slice, compute_surface, parse_grid
    from .surface_plots import plot_curves, plot_surface

    (inp,) = list(analysis_inputs([path], opts))
    sets, keys = _eval_sets(inp)
    one_d = ygrid == "none"
    spec = replace(direction_spec or DirectionSpec(seed=opts.seed), count=1 if one_d else 2)
    n = len(parse_grid(grid)) * (1 if one_d else len(parse_grid(ygrid or grid)))
    cb, close = cell_progress(n, inp.run_dir.name, progress)
    try:
        common = dict(subset_keys=keys, checkpoint_hash=inp.checkpoint.content_hash, callback=cb)
        if one_d:
            res = compute_slice(inp.model, inp.criterion, sets, inp.run_dir, grid, spec, **common)
        else:
            res = compute_surface(inp.model, inp.criterion, sets, inp.run_dir, grid, ygrid, spec, **common)
    finally:
        close()
    if plots:
        figs = inp.run_dir / "figures"
        plot_curves(res, figs) if res.y is None else plot_surface(res, "train_loss", figs)
    return res


def interpolation(path_a: Path, path_b: Path, opts: AnalysisOptions, *, alpha: str = "-1:2:31",
                  buffers: str = "interpolate", out: Path | None = None, plots: bool = True, progress: bool = True):
    """1D interpolation from checkpoint A (alpha 0) to B (alpha 1); stored beside the sweep by default."""
    from .checkpoint import load_checkpoint
    from .store import attrs_to_h5, update_h5
    from .surface import alpha_grid, interpolate
    from .surface_plots import plot_curves

    (inp,) = list(analysis_inputs([path_a], opts))
    ckpt_b = load_checkpoint(resolve_checkpoint(path_b, opts.which)[1])
    if ckpt_b.model_config != inp.checkpoint.model_config:
        raise LandscapeError(f"{path_b}: model config differs from {path_a}; interpolation needs one architecture")
    sets, keys = _eval_sets(inp)
    out_dir = Path(out) if out else inp.run_dir.parent
    cb, close = cell_progress(len(alpha_grid(alpha)), "interpolate", progress)
    try:
        res = interpolate(inp.model, inp.checkpoint.state_dict, ckpt_b.state_dict, inp.criterion, sets, out_dir,
                          alpha, buffers=buffers, subset_keys=keys, hash_a=inp.checkpoint.content_hash,
                          hash_b=ckpt_b.content_hash, callback=cb)
    finally:
        close()
    labels = [Path(path_a).name, Path(path_b).name]
    with update_h5(res.path) as f:
        attrs_to_h5(f, {"endpoint_labels": labels})
    res.attrs["endpoint_labels"] = labels
    if plots:
        plot_curves(res, out_dir / "figures")
    return res


def trajectory(run: Path, opts: AnalysisOptions, *, num: int = 21, center: bool = False, plots: bool = True,
               progress: bool = True):
    """Surface on the PCA plane of a run's per-epoch checkpoints, with the path."""
    from .checkpoint import load_checkpoint
    from .surface import trajectory_surface
    from .surface_plots import plot_surface

    epochs = sorted(Path(run).glob("epoch_*.pt"))
    if len(epochs) < 2:
        raise LandscapeError(f"{run}: needs at least 2 per-epoch checkpoints (train with --save-every 1)")
    (inp,) = list(analysis_inputs([epochs[-1]], opts))
    states = [load_checkpoint(p).state_dict for p in epochs]
    sets, keys = _eval_sets(inp)
    cb, close = cell_progress(num * num, "trajectory", progress)
    try:
        res, plane = trajectory_surface(inp.model, states, inp.criterion, sets, inp.run_dir, num=num, center=center,
                                        subset_keys=keys, checkpoint_hash=inp.checkpoint.content_hash, callback=cb)
    finally:
        close()
    if plots:
        plot_surface(res, "train_loss", inp.run_dir / "figures")
    return res, plane
