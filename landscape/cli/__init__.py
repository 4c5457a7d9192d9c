"""`landscape` command line: parses options and calls the library (see ``landscape --help``)."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

import typer

from landscape.errors import LandscapeError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Sharp-vs-flat minima analysis for IQA models: plan, train, analyse, report.")
data_app = typer.Typer(no_args_is_help=True, help="Generate the embedded synthetic dataset; validate datasets.")
analyze_app = typer.Typer(no_args_is_help=True, help="Curvature, sharpness and loss-landscape analyses of checkpoints.")
app.add_typer(data_app, name="data")
app.add_typer(analyze_app, name="analyze")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors."),
          threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch (1 is fastest on a busy shared CPU). [torch default]")) -> None:
    """Sharp-vs-flat minima analysis for IQA models: plan, train, analyse, report."""
    if threads is not None:
        import torch

        if threads < 1:
            raise LandscapeError(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def _csv_ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LandscapeError(f"{name} must be comma-separated integers, got '{text}'") from None


def _csv_floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LandscapeError(f"{name} must be comma-separated numbers, got '{text}'") from None


def _csv_strs(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


# ----------------------------------------------------------------------------- data
@data_app.command("synth")
def data_synth(out: Path = typer.Option(Path("data/synthetic"), help="Output folder."),
               seed: int = typer.Option(0, help="Generator seed (same seed: byte-identical files)."),
               references: int = typer.Option(48, help="Number of reference images."),
               size: int = typer.Option(96, help="Image side in pixels.")) -> None:
    """Generate the embedded synthetic IQA dataset (images + scores.csv)."""
    from landscape.data import generate_synthetic

    path = generate_synthetic(out, seed=seed, n_references=references, size=size)
    typer.echo(f"synthetic dataset written to {path}")


@data_app.command("check")
def data_check(root: Path = typer.Argument(..., help="Dataset root folder."),
               format: str = typer.Option(..., "--format", help="synthetic, koniq10k, kadid10k, livec, spaq, csv, pyiqa."),
               score_column: Optional[str] = typer.Option(None, help="Score column (KonIQ: MOS or MOS_zscore).")) -> None:
    """Validate a dataset: images per split, score range, missing or unreadable files."""
    from landscape.data import check_dataset

    report = check_dataset(format, root, score_column=score_column)
    typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(2)


# ----------------------------------------------------------------------------- analyze
_RUNS_ARG = typer.Argument(..., help="Run folders, sweep folders or checkpoint files.")
_WHICH = typer.Option("best", "--checkpoint", help="Checkpoint of each run: best, last or epoch_NNN.")
_SUBSET = typer.Option("train", help="Data split the measure is computed on: train, val or test.")
_SAMPLES = typer.Option(256, help="Images in the fixed analysis subset (one centre crop each).")
_BATCH = typer.Option(64, help="Evaluation batch size.")
_SEED = typer.Option(0, help="Seed of the subset and of the random probes/directions.")
_DEVICE = typer.Option("auto", help="auto, cpu or cuda.")
_LOSS = typer.Option("train", help="Criterion: train (the run's L1 + ranking), l1 or mse.")
_SURFACE_SUBSETS = typer.Option("train,test", help="Evaluation subsets (loss, SRCC, PLCC on each).")
_SURFACE_SAMPLES = typer.Option(128, help="Images per evaluation subset (one centre crop each).")


def _opts(subset: str, samples: int, batch_size: int, seed: int, which: str, device: str, loss: str,
          compile: str = "auto"):
    from landscape.analyze.jobs import AnalysisOptions

    return AnalysisOptions(tuple(_csv_strs(subset)), samples, batch_size, seed, which, device, loss, compile)


def _is_main() -> bool:
    from landscape import distributed

    return distributed.is_main()


def _log(message: str) -> None:
    if _is_main():
        typer.echo(message, err=True)


def _out(message: str) -> None:
    """Print on rank 0 only (analyses may run under torchrun)."""
    if _is_main():
        typer.echo(message)


@analyze_app.command("hessian")
def analyze_hessian_cmd(
    runs: List[Path] = _RUNS_ARG,
    top_k: int = typer.Option(5, help="Number of top eigenvalues (Lanczos, full reorthogonalisation); 0 = skip."),
    which: str = typer.Option("LA", help="LA: largest algebraic, SA: smallest algebraic, LM: largest magnitude."),
    tol: float = typer.Option(1e-3, help="Convergence: residual ||Hv - λv|| <= tol |λ|."),
    start: str = typer.Option("auto", help="Lanczos start: output (mean-output gradient J^T1/N + 10% noise), "
                              "gradient (loss gradient + noise), random; auto = output for LA/LM, random for SA."),
    trace: bool = typer.Option(True, "--trace/--no-trace", help="Trace by Hutch++ with a standard error."),
    trace_method: str = typer.Option("hutch++", help="hutch++ or hutchinson."),
    trace_matvecs: int = typer.Option(60, help="Fixed Hessian-vector-product budget of the trace."),
    density: bool = typer.Option(False, "--density/--no-density", help="Spectral density by stochastic Lanczos quadrature."),
    density_runs: int = typer.Option(4, help="SLQ runs (probe vectors)."),
    density_steps: int = typer.Option(60, help="Lanczos steps per SLQ run."),
    blocks: Optional[str] = typer.Option(None, help="Per-block results: 'stages' (Swin stages + head) or omit."),
    weight_decay: float = typer.Option(0.0, help="Add weight_decay * I to the Hessian."),
    engine: str = typer.Option("landscape", help="landscape (ours) or pyhessian (the PyHessian package, top-k only)."),
    samples: int = _SAMPLES, subset: str = _SUBSET, batch_size: int = _BATCH, seed: int = _SEED,
    checkpoint: str = _WHICH, device: str = _DEVICE, loss: str = _LOSS,
) -> None:
    """Top-k Hessian eigenvalues, trace and spectral density of each checkpoint's full-data loss."""
    from landscape.analyze import jobs as workflows
    from landscape.formatting import render

    kwargs = {} if engine == "pyhessian" else dict(
        which=which, start=start, trace=trace, trace_method=trace_method, trace_matvecs=trace_matvecs, density=density,
        density_runs=density_runs, density_steps=density_steps, blocks=blocks, weight_decay=weight_decay)
    rows = workflows.hessian(runs, _opts(subset, samples, batch_size, seed, checkpoint, device, loss),
                             engine=engine, log=_log, top_k=top_k, tol=tol, **kwargs)
    _out("lambda_1 is shown ± its residual norm ||Hv - λv||; trace ± its standard error.")
    _out(render(rows, ["run", "engine", "lambda_1", "top-k", "converged", "matvecs", "trace"]))


@analyze_app.command("sharpness")
def analyze_sharpness_cmd(
    runs: List[Path] = _RUNS_ARG,
    measures: str = typer.Option("keskar,adaptive,average,pacbayes,noise", help="Comma-separated measures."),
    eps: str = typer.Option("1e-3,5e-4", help="Keskar box sizes."),
    keskar_spaces: str = typer.Option("full,random", help="Keskar spaces: full (A = I) and random (p = 100)."),
    rho: Optional[str] = typer.Option(None, help="Adaptive l_inf rho grid. [5e-4,1e-3,2e-3,4e-3,8e-3]"),
    rho_l2: Optional[str] = typer.Option(None, help="Adaptive l2 rho grid. [0.25,0.5,1,2,4]"),
    rho_average: Optional[str] = typer.Option(None, help="Average-case rho grid. [0.025 ... 0.4]"),
    pacbayes_kind: str = typer.Option("loss_relative", help="PAC-Bayes deviation: loss_relative, loss or srcc."),
    pacbayes_target: float = typer.Option(0.1, help="PAC-Bayes target deviation d."),
    m: int = typer.Option(128, "--m", help="Examples per batch of m-sharpness (adaptive); at most --samples."),
    samples: int = _SAMPLES, subset: str = _SUBSET, batch_size: int = _BATCH, seed: int = _SEED,
    checkpoint: str = _WHICH, device: str = _DEVICE, loss: str = _LOSS,
) -> None:
    """Keskar phi, adaptive and average sharpness, PAC-Bayes flatness and the gradient noise scale."""
    from dataclasses import replace

    from landscape import sharpness as S
    from landscape.analyze import jobs as workflows
    from landscape.formatting import render

    if m > samples:
        raise LandscapeError(f"--m {m} exceeds --samples {samples}: m-sharpness needs at least m examples")
    rows = workflows.sharpness(
        runs, _opts(subset, samples, batch_size, seed, checkpoint, device, loss), log=_log,
        measures=_csv_strs(measures), eps=_csv_floats(eps, "--eps"), keskar_spaces=_csv_strs(keskar_spaces),
        rho_linf=_csv_floats(rho, "--rho") if rho else S.RHO_LINF,
        rho_l2=_csv_floats(rho_l2, "--rho-l2") if rho_l2 else S.RHO_L2,
        rho_average=_csv_floats(rho_average, "--rho-average") if rho_average else S.RHO_AVERAGE,
        pacbayes=replace(S.PacBayesConfig(), kind=pacbayes_kind, target=pacbayes_target),
        adaptive=replace(S.AdaptiveConfig(), m=m))
    _out(render(rows, ["run", "measure", "setting", "value", "unit", "srcc_drop"]))


_COMPILE = typer.Option("auto", "--compile", help="torch.compile the forward pass: on, off, or auto (compile when "
                        "the cells left would take over 5 min eagerly; about 1.6x faster on CPU after up to a minute "
                        "of compiling; checked against eager on the first compiled cell).")


@analyze_app.command("surface")
def analyze_surface_cmd(
    run: Path = typer.Argument(..., help="Run folder or checkpoint file."),
    grid: str = typer.Option("-1:1:51", help="x grid start:stop:num (filter-normalised units)."),
    ygrid: Optional[str] = typer.Option(None, help="y grid start:stop:num [same as --grid]; 'none' for a 1D slice."),
    normalization: str = typer.Option("filter", help="filter (Li et al.), layer, elementwise or none."),
    orthogonalize: bool = typer.Option(False, "--orthogonalize", help="Make the second direction orthogonal to the first."),
    subset: str = _SURFACE_SUBSETS, samples: int = _SURFACE_SAMPLES, batch_size: int = _BATCH, seed: int = _SEED,
    checkpoint: str = _WHICH, device: str = _DEVICE, loss: str = _LOSS,
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write contour, heatmap and 3D plots (PDF, PNG)."),
    compile: str = _COMPILE,
) -> None:
    """2D filter-normalised loss/SRCC plane (or 1D slice) around a checkpoint, resumable, in HDF5."""
    from landscape.analyze import jobs as workflows
    from landscape.surface import DirectionSpec

    res = workflows.surface(run, _opts(subset, samples, batch_size, seed, checkpoint, device, loss, compile), grid=grid,
                            ygrid=ygrid, plots=plots,
                            direction_spec=DirectionSpec(seed=seed, normalization=normalization,
                                                         orthogonalize=orthogonalize))
    fwd = res.attrs.get("forward") or {}
    how = (f"; forward: {fwd.get('eager_calls', 0)} eager + {fwd.get('compiled_calls', 0)} compiled cells"
           + (f", compile fell back: {fwd['fallback']}" if fwd.get("fallback") else "")) if res.computed_now else ""
    _out(f"{res.kind}: {res.path} ({int(res.done.sum())}/{res.done.size} cells, "
         f"{res.computed_now} computed now in {res.seconds:.1f} s{how})")


@analyze_app.command("interpolate")
def analyze_interpolate_cmd(
    run_a: Path = typer.Argument(..., help="Run folder or checkpoint A (alpha = 0), e.g. the smallest batch."),
    run_b: Path = typer.Argument(..., help="Run folder or checkpoint B (alpha = 1), e.g. the largest batch."),
    alpha: str = typer.Option("-1:2:31", help="alpha grid start:stop:num; 0 and 1 are always included."),
    buffers: str = typer.Option("interpolate", help="Buffers (e.g. BatchNorm statistics): interpolate or keep_a."),
    out: Optional[Path] = typer.Option(None, help="Output folder. [the sweep folder holding RUN_A]"),
    subset: str = _SURFACE_SUBSETS, samples: int = _SURFACE_SAMPLES, batch_size: int = _BATCH, seed: int = _SEED,
    checkpoint: str = _WHICH, device: str = _DEVICE, loss: str = _LOSS, compile: str = _COMPILE,
) -> None:
    """Keskar-style 1D interpolation theta(alpha) = (1 - alpha) theta_A + alpha theta_B."""
    from landscape.analyze import jobs as workflows

    res = workflows.interpolation(run_a, run_b, _opts(subset, samples, batch_size, seed, checkpoint, device, loss,
                                                      compile),
                                  alpha=alpha, buffers=buffers, out=out)
    _out(f"interpolation: {res.path}")


@analyze_app.command("trajectory")
def analyze_trajectory_cmd(
    run: Path = typer.Argument(..., help="Run folder trained with --save-every (per-epoch checkpoints)."),
    num: int = typer.Option(21, help="Grid points per axis of the PCA plane."),
    center: bool = typer.Option(False, "--center", help="PCA of centred differences (Li et al.'s sklearn variant)."),
    subset: str = _SURFACE_SUBSETS, samples: int = _SURFACE_SAMPLES, batch_size: int = _BATCH, seed: int = _SEED,
    device: str = _DEVICE, loss: str = _LOSS, compile: str = _COMPILE,
) -> None:
    """PCA plane of the per-epoch checkpoints relative to the final one, with the path drawn on the surface."""
    from landscape.analyze import jobs as workflows

    res, plane = workflows.trajectory(run, _opts(subset, samples, batch_size, seed, "best", device, loss, compile),
                                      num=num, center=center)
    ev = plane.explained_variance_ratio
    _out(f"trajectory plane: {res.path}; explained variance {ev[0]:.1%} + {ev[1]:.1%}; "
               f"max off-plane residual {float(plane.residual.max()):.3g}")


@app.command("plan")
def plan_cmd(
    dataset: Optional[str] = typer.Option(None, help="FORMAT:ROOT of the training data."),
    model: Optional[str] = typer.Option(None, help="Model preset: micro, tiny, small, base. [micro]"),
    batch_sizes: str = typer.Option("16,24,32,48,64", help="Candidate effective batch sizes."),
    config: Optional[Path] = typer.Option(None, help="Training config file (YAML/TOML), as for 'train'."),
    out: Path = typer.Option(Path("checkpoints/plan"), help="Output folder (use SWEEP/plan so the report finds it)."),
    steps: int = typer.Option(5, help="Timed training steps per batch size (after warm-up)."),
    warmup: int = typer.Option(2, help="Untimed warm-up steps per batch size."),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda. [auto]"),
    accumulate: Optional[int] = typer.Option(None, help="Micro-batches per step. [1]"),
    train_patches: Optional[int] = typer.Option(None, help="Patches per training image per epoch (epoch-time prediction). [4]"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on GPU. [off]"),
    workers: Optional[int] = typer.Option(None, help="Data-loading workers. [0]"),
    lr: Optional[float] = typer.Option(None, help="Learning rate at --reference-batch. [1e-4]"),
    lr_scaling: Optional[str] = typer.Option(None, help="Rule used for the measured steps: none, linear, sqrt. [sqrt]"),
    reference_batch: Optional[int] = typer.Option(None, help="Batch size at which --lr applies. [32]"),
    score_column: Optional[str] = typer.Option(None, help="Score column (KonIQ: MOS or MOS_zscore)."),
    pretrained: Optional[str] = typer.Option(None, help="Backbone weights: a local file, or 'hub'."),
    memory_limit: Optional[float] = typer.Option(None, help="Memory limit in GiB. [GPU total memory; CPU: RSS + available RAM]"),
    search: Optional[bool] = typer.Option(None, "--search/--no-search", help="Bisection for the largest fitting batch. [on for CUDA]"),
    search_max: Optional[int] = typer.Option(None, help="Upper end of the bisection. [8 x largest candidate]"),
    checkpoint: Optional[Path] = typer.Option(None, help="Checkpoint at which B_simple is measured. [initial weights]"),
    noise_batches: str = typer.Option("4,128", help="Small and big batch of the B_simple estimator."),
    noise_repeats: int = typer.Option(20, help="Repeated B_simple estimates (spread); 0 = skip."),
    noise_pool: int = typer.Option(1024, help="Training patches the B_simple batches are drawn from."),
    noise_loss: str = typer.Option("l1", help="Loss for B_simple: l1 (per-example mean, exact estimator) or train."),
    fresh: bool = typer.Option(False, "--fresh", help="Ignore stored measurements and measure again."),
) -> None:
    """Measure speed, memory, the OOM frontier and the critical batch size per batch size."""
    from landscape.plan import run_plan
    from landscape.train.config import load_config_file, resolve_config

    cli_values = {"dataset": dataset, "model": model, "device": device, "accumulate": accumulate,
                  "train_patches": train_patches, "amp": amp, "workers": workers, "lr": lr,
                  "lr_scaling": _csv_strs(lr_scaling) if lr_scaling else None, "reference_batch": reference_batch,
                  "score_column": score_column, "pretrained": pretrained}
    cfg = resolve_config(load_config_file(config) if config else {}, cli_values)
    small, big = (_csv_ints(noise_batches, "--noise-batches") + [0, 0])[:2]
    result = run_plan(cfg, _csv_ints(batch_sizes, "--batch-sizes"), steps=steps, warmup=warmup,
                      memory_limit_bytes=int(memory_limit * 2 ** 30) if memory_limit else None,
                      checkpoint=checkpoint, noise_b_small=small, noise_b_big=big, noise_repeats=noise_repeats,
                      noise_pool=noise_pool, noise_loss=noise_loss, search=search, search_max=search_max,
                      out_dir=out, resume=not fresh, echo=lambda m: typer.echo(m, err=True))
    typer.echo(result.table())
    typer.echo(f"plan written to {out}")


@app.command("train")
def train_cmd(
    dataset: Optional[str] = typer.Option(None, help="FORMAT:ROOT, e.g. synthetic:data/synthetic or koniq10k:/data/koniq."),
    model: Optional[str] = typer.Option(None, help="Model preset: micro, tiny, small, base. [micro]"),
    batch_sizes: Optional[str] = typer.Option(None, help="Effective batch sizes, comma-separated. [32]"),
    seeds: Optional[str] = typer.Option(None, help="Seeds, comma-separated. [0]"),
    out: Path = typer.Option(Path("checkpoints/sweep"), help="Sweep output folder."),
    config: Optional[Path] = typer.Option(None, help="YAML/TOML file with the same keys; options given here override it."),
    epochs: Optional[int] = typer.Option(None, help="Maximum epochs. [10]"),
    patience: Optional[int] = typer.Option(None, help="Early stop after N epochs without val-SRCC gain; 0 = off. [5]"),
    train_patches: Optional[int] = typer.Option(None, help="Random crops per training image per epoch. [4]"),
    test_patches: Optional[int] = typer.Option(None, help="Crops per evaluation image (prediction = mean). [4]"),
    test_random_crop: Optional[bool] = typer.Option(None, "--test-random-crop/--test-grid-crop", help="Seeded random test crops instead of a fixed grid. [grid]"),
    ranking_alpha: Optional[float] = typer.Option(None, help="Weight of the pairwise ranking hinge. [0.5]"),
    ranking_margin: Optional[float] = typer.Option(None, help="Margin of the ranking hinge (normalised scores). [0.0]"),
    lr: Optional[float] = typer.Option(None, help="Learning rate at --reference-batch. [1e-4]"),
    lr_scaling: Optional[str] = typer.Option(None, help="none, linear or sqrt (comma-separated to sweep rules). [sqrt]"),
    reference_batch: Optional[int] = typer.Option(None, help="Batch size at which --lr applies. [32]"),
    accumulate: Optional[int] = typer.Option(None, help="Micro-batches per step: micro-batch = batch / K. [1]"),
    weight_decay: Optional[float] = typer.Option(None, help="AdamW weight decay. [0.05]"),
    drop_path: Optional[float] = typer.Option(None, help="Stochastic depth rate. [preset default]"),
    dropout: Optional[float] = typer.Option(None, help="Dropout in the regression head. [0.0]"),
    scheduler: Optional[str] = typer.Option(None, help="cosine, step or none. [cosine]"),
    warmup_epochs: Optional[int] = typer.Option(None, help="Linear warmup epochs. [0]"),
    cross_test: Optional[List[str]] = typer.Option(None, help="Extra test set FORMAT:ROOT for the cross-dataset drop (repeatable)."),
    score_column: Optional[str] = typer.Option(None, help="Score column (KonIQ: MOS or MOS_zscore)."),
    pretrained: Optional[str] = typer.Option(None, help="Backbone weights: a local file, or 'hub' to download."),
    train_eval_images: Optional[int] = typer.Option(None, help="Training images measured with the test protocol (train SRCC). [256]"),
    save_every: Optional[int] = typer.Option(None, help="Keep a checkpoint every N epochs (trajectory plots); 0 = off. [0]"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:1. [auto]"),
    workers: Optional[int] = typer.Option(None, help="Data-loading worker processes. [0]"),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", help="bf16 autocast on GPU. [off]"),
    skip_bad_images: Optional[bool] = typer.Option(None, "--skip-bad-images", help="Count and skip unreadable images instead of failing."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue interrupted runs from their last epoch."),
    force: bool = typer.Option(False, "--force", help="Replace an output folder that holds another sweep."),
    only: Optional[str] = typer.Option(None, help="Train only these sweep indices (comma-separated), e.g. for job arrays."),
    list_runs: bool = typer.Option(False, "--list", help="Print the sweep's runs with their indices and exit."),
) -> None:
    """Train a batch-size x LR-rule x seed sweep of the Swin IQA model."""
    from landscape import distributed
    from landscape.train.config import load_config_file, resolve_config
    from landscape.train.sweep import expand_sweep, run_sweep

    cli_values = {
        "dataset": dataset, "model": model, "epochs": epochs, "patience": patience,
        "batch_sizes": _csv_ints(batch_sizes, "--batch-sizes") if batch_sizes else None,
        "seeds": _csv_ints(seeds, "--seeds") if seeds else None,
        "lr_scaling": _csv_strs(lr_scaling) if lr_scaling else None,
        "train_patches": train_patches, "test_patches": test_patches, "test_random_crop": test_random_crop,
        "ranking_alpha": ranking_alpha, "ranking_margin": ranking_margin, "lr": lr,
        "reference_batch": reference_batch, "accumulate": accumulate, "weight_decay": weight_decay,
        "drop_path": drop_path, "dropout": dropout, "scheduler": scheduler, "warmup_epochs": warmup_epochs,
        "cross_test": list(cross_test) if cross_test else None, "score_column": score_column,
        "pretrained": pretrained, "train_eval_images": train_eval_images, "save_every": save_every,
        "device": device, "workers": workers, "amp": amp, "skip_bad_images": skip_bad_images,
    }
    cfg = resolve_config(load_config_file(config) if config else {}, cli_values)
    if list_runs:
        for i, spec in enumerate(expand_sweep(cfg)):
            typer.echo(f"{i}\t{spec.name}")
        return
    distributed.init_from_env(cfg.device)
    results = run_sweep(cfg, out, force=force, resume=resume,
                        only=_csv_ints(only, "--only") if only else None, echo=typer.echo)
    if any(r.status != "finished" for r in results):
        raise typer.Exit(1)


@app.command("report")
def report_cmd(
    sweep: Path = typer.Argument(..., help="Sweep folder written by 'landscape train'."),
    out: Optional[Path] = typer.Option(None, help="Report folder. [reports/<sweep name>]"),
    n_boot: int = typer.Option(2000, help="Bootstrap resamples over configurations for the CIs (>= 2000)."),
    force: bool = typer.Option(False, "--force", help="Replace a non-empty folder that holds no report of this sweep."),
) -> None:
    """Link sharpness to the SRCC generalisation gap: tables, statistics, figures, HTML."""
    from landscape.report.build import build_report

    res = build_report(sweep, out or Path("reports") / sweep.resolve().name, force=force, n_boot=n_boot,
                       log=lambda m: typer.echo(m, err=True))
    for line in res.summary[:1]:
        typer.echo(line)
    if res.missing:
        typer.echo(f"missing analyses ({len(res.missing)}): " + "; ".join(res.missing[:6])
                   + (" ..." if len(res.missing) > 6 else ""))
    typer.echo(f"report: {res.index}")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("checkpoints/demo"), help="Folder for data/, sweep/ and report/."),
    quick: bool = typer.Option(False, "--quick", help="Smaller everything: about 3 minutes on a 2-core CPU."),
) -> None:
    """Synthetic data -> plan -> sweep (4 batch sizes x 2 seeds) -> every analyzer -> report."""
    from landscape.demo import run_demo

    result = run_demo(out, quick=quick, echo=lambda m: typer.echo(m, err=True))
    typer.echo(result.summary[0])
    typer.echo(f"report: {result.index}")


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors with exit code 2; ``--debug`` shows tracebacks."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        app(args=argv, prog_name="landscape", standalone_mode=True)
    except LandscapeError as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
