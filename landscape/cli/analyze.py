"""`landscape analyze hessian|sharpness|surface|interpolate|trajectory`."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from landscape.cli.options import (
    BATCH,
    CHECKPOINT,
    COMPILE,
    DATASET,
    DEVICE,
    KESKAR_SPACES,
    LOSS,
    MEASURES,
    RUNS_ARG,
    SAMPLES,
    SEED,
    SUBSET,
    SURFACE_SAMPLES,
    SURFACE_SUBSETS,
    Blocks,
    Buffers,
    Compile,
    Engine,
    Loss,
    Normalization,
    PacBayesKind,
    Split,
    Start,
    TraceMethod,
    Which,
    analysis_options,
    csv_choices,
    csv_floats,
    csv_strs,
    log_main,
    print_main,
    value,
)
from landscape.errors import LandscapeError

analyze_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Curvature, sharpness and loss-landscape analyses of checkpoints.")


@analyze_app.command("hessian")
def analyze_hessian_cmd(
    runs: list[Path] = RUNS_ARG,
    top_k: int = typer.Option(5, help="Number of top eigenvalues (Lanczos, full reorthogonalisation); 0 = skip."),
    which: Which = typer.Option(Which.LA, help="LA: largest algebraic, SA: smallest algebraic, LM: largest magnitude."),
    tol: float = typer.Option(1e-3, help="Convergence: residual ||Hv - λv|| <= tol |λ|."),
    start: Start = typer.Option(Start.auto, help="Lanczos start: output (mean-output gradient J^T1/N + 10% noise), "
                              "gradient (loss gradient + noise), random; auto = output for --top-k 1 with LA/LM, else random."),
    trace: bool = typer.Option(True, "--trace/--no-trace", help="Trace by Hutch++ with a standard error."),
    trace_method: TraceMethod = typer.Option(TraceMethod.hutchpp, help="Trace estimator."),
    trace_matvecs: int = typer.Option(60, help="Fixed Hessian-vector-product budget of the trace."),
    density: bool = typer.Option(False, "--density/--no-density", help="Spectral density by stochastic Lanczos quadrature."),
    density_runs: int = typer.Option(4, help="SLQ runs (probe vectors)."),
    density_steps: int = typer.Option(60, help="Lanczos steps per SLQ run."),
    blocks: Optional[Blocks] = typer.Option(None, show_default="no blocks",
                                            help="Per-block results: 'stages' (Swin stages + head) or omit."),
    weight_decay: float = typer.Option(0.0, help="Add weight_decay * I to the Hessian."),
    engine: Engine = typer.Option(Engine.landscape, help="landscape (ours) or pyhessian (the PyHessian package, top-k only)."),
    samples: int = SAMPLES, subset: Split = SUBSET, batch_size: int = BATCH, seed: int = SEED,
    checkpoint: str = CHECKPOINT, device: str = DEVICE, loss: Loss = LOSS, dataset: Optional[str] = DATASET,
) -> None:
    """Top-k Hessian eigenvalues, trace and spectral density of each checkpoint's full-data loss."""
    from landscape.analyze import jobs as workflows
    from landscape.formatting import render

    engine = value(engine)
    kwargs = {} if engine == "pyhessian" else dict(
        which=value(which), start=value(start), trace=trace, trace_method=value(trace_method), trace_matvecs=trace_matvecs, density=density,
        density_runs=density_runs, density_steps=density_steps, blocks=value(blocks), weight_decay=weight_decay)
    rows = workflows.hessian(runs, analysis_options(subset, samples, batch_size, seed, checkpoint, device, loss,
                                                    dataset=dataset),
                             engine=engine, log=log_main, top_k=top_k, tol=tol, **kwargs)
    print_main("lambda_1 is shown ± its residual norm ||Hv - λv||; trace ± its standard error.")
    print_main(render(rows, ["run", "engine", "lambda_1", "top-k", "converged", "matvecs", "trace"]))


@analyze_app.command("sharpness")
def analyze_sharpness_cmd(
    runs: list[Path] = RUNS_ARG,
    measures: str = typer.Option(",".join(MEASURES), metavar="MEASURE,...", callback=csv_choices(MEASURES),
                                 help=f"Comma-separated measures from {', '.join(MEASURES)}."),
    eps: str = typer.Option("1e-3,5e-4", metavar="EPS,...", help="Keskar box sizes."),
    keskar_spaces: str = typer.Option(",".join(KESKAR_SPACES), metavar="SPACE,...", callback=csv_choices(KESKAR_SPACES),
                                      help="Keskar spaces: full (A = I) and random (p = 100)."),
    rho: Optional[str] = typer.Option(None, metavar="RHO,...", show_default="5e-4,1e-3,2e-3,4e-3,8e-3",
                                      help="Adaptive l_inf rho grid."),
    rho_l2: Optional[str] = typer.Option(None, metavar="RHO,...", show_default="0.25,0.5,1,2,4",
                                         help="Adaptive l2 rho grid."),
    rho_average: Optional[str] = typer.Option(None, metavar="RHO,...", show_default="0.025,0.05,0.1,0.2,0.4",
                                              help="Average-case rho grid."),
    pacbayes_kind: PacBayesKind = typer.Option(
        PacBayesKind.loss_relative,
        help="PAC-Bayes criterion: loss_relative (default: E[L(w+u)] - L(w) <= d L(w), not the paper's), loss "
             "(absolute loss increase <= d), l1_increase or srcc (Jiang et al. 2020: absolute increase d of the "
             "mean absolute error, or SRCC drop d)."),
    pacbayes_target: float = typer.Option(0.1, help="PAC-Bayes target deviation d (relative for loss_relative, "
                                                    "else absolute)."),
    m: int = typer.Option(128, "--m", help="Examples per batch of m-sharpness (adaptive); at most --samples."),
    samples: int = SAMPLES, subset: Split = SUBSET, batch_size: int = BATCH, seed: int = SEED,
    checkpoint: str = CHECKPOINT, device: str = DEVICE, loss: Loss = LOSS, dataset: Optional[str] = DATASET,
) -> None:
    """Keskar phi, adaptive and average sharpness, PAC-Bayes flatness and the gradient noise scale."""
    from dataclasses import replace

    from landscape import sharpness as S
    from landscape.analyze import jobs as workflows
    from landscape.formatting import render

    if m > samples:
        raise LandscapeError(f"--m {m} exceeds --samples {samples}: m-sharpness needs at least m examples")
    rows = workflows.sharpness(
        runs, analysis_options(subset, samples, batch_size, seed, checkpoint, device, loss, dataset=dataset),
        log=log_main,
        measures=csv_strs(measures), eps=csv_floats(eps, "--eps"), keskar_spaces=csv_strs(keskar_spaces),
        rho_linf=csv_floats(rho, "--rho") if rho else S.RHO_LINF,
        rho_l2=csv_floats(rho_l2, "--rho-l2") if rho_l2 else S.RHO_L2,
        rho_average=csv_floats(rho_average, "--rho-average") if rho_average else S.RHO_AVERAGE,
        pacbayes=replace(S.PacBayesConfig(), kind=value(pacbayes_kind), target=pacbayes_target),
        adaptive=replace(S.AdaptiveConfig(), m=m))
    print_main(render(rows, ["run", "measure", "setting", "value", "unit", "srcc_drop"]))


@analyze_app.command("surface")
def analyze_surface_cmd(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder or checkpoint file."),
    grid: str = typer.Option("-1:1:51", metavar="START:STOP:NUM", help="x grid (filter-normalised units)."),
    ygrid: Optional[str] = typer.Option(None, metavar="START:STOP:NUM|none", show_default="same as --grid",
                                        help="y grid; 'none' for a 1D slice."),
    normalization: Normalization = typer.Option(Normalization.filter,
                                                help="Direction normalisation: filter (Li et al.), layer, elementwise "
                                                     "or none."),
    orthogonalize: bool = typer.Option(False, "--orthogonalize", show_default="off", help="Make the second direction orthogonal to the first."),
    subset: str = SURFACE_SUBSETS, samples: int = SURFACE_SAMPLES, batch_size: int = BATCH, seed: int = SEED,
    checkpoint: str = CHECKPOINT, device: str = DEVICE, loss: Loss = LOSS,
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Write contour, heatmap and 3D plots (PDF, PNG)."),
    compile: Compile = COMPILE, dataset: Optional[str] = DATASET,
) -> None:
    """2D filter-normalised loss/SRCC plane (or 1D slice) around a checkpoint, resumable, in HDF5."""
    from landscape.analyze import jobs as workflows
    from landscape.surface import DirectionSpec
    from landscape.surface.storage import nonfinite_warning

    res = workflows.surface(run, analysis_options(subset, samples, batch_size, seed, checkpoint, device, loss, compile,
                                                  dataset), grid=grid,
                            ygrid=ygrid, plots=plots,
                            direction_spec=DirectionSpec(seed=seed, normalization=value(normalization),
                                                         orthogonalize=orthogonalize))
    fwd = res.attrs.get("forward") or {}
    how = (f"; forward: {fwd.get('eager_calls', 0)} eager + {fwd.get('compiled_calls', 0)} compiled cells"
           + (f", compile fell back: {fwd['fallback']}" if fwd.get("fallback") else "")) if res.computed_now else ""
    print_main(f"{res.kind}: {res.path} ({int(res.done.sum())}/{res.done.size} cells, "
         f"{res.computed_now} computed now in {res.seconds:.1f} s{how})")
    if (warning := nonfinite_warning(res)):
        print_main(warning)


@analyze_app.command("interpolate")
def analyze_interpolate_cmd(
    run_a: Path = typer.Argument(..., metavar="RUN_A", help="Run folder or checkpoint A (alpha = 0), e.g. the smallest batch."),
    run_b: Path = typer.Argument(..., metavar="RUN_B", help="Run folder or checkpoint B (alpha = 1), e.g. the largest batch."),
    alpha: str = typer.Option("-1:2:31", metavar="START:STOP:NUM", help="alpha grid; 0 and 1 are always included."),
    buffers: Buffers = typer.Option(Buffers.recompute, help="Buffers: recompute BatchNorm statistics on the "
                                                            "evaluation subset at each alpha, interpolate them "
                                                            "(refused if a variance goes negative) or keep A's."),
    out: Optional[Path] = typer.Option(None, show_default="the sweep folder holding RUN_A", help="Output folder."),
    subset: str = SURFACE_SUBSETS, samples: int = SURFACE_SAMPLES, batch_size: int = BATCH, seed: int = SEED,
    checkpoint: str = CHECKPOINT, device: str = DEVICE, loss: Loss = LOSS, compile: Compile = COMPILE,
    dataset: Optional[str] = DATASET,
) -> None:
    """Keskar-style 1D interpolation theta(alpha) = (1 - alpha) theta_A + alpha theta_B."""
    from landscape.analyze import jobs as workflows
    from landscape.surface.storage import nonfinite_warning

    res = workflows.interpolation(run_a, run_b, analysis_options(subset, samples, batch_size, seed, checkpoint, device, loss,
                                                      compile, dataset),
                                  alpha=alpha, buffers=value(buffers), out=out)
    print_main(f"interpolation: {res.path}")
    if (warning := nonfinite_warning(res)):
        print_main(warning)


@analyze_app.command("trajectory")
def analyze_trajectory_cmd(
    run: Path = typer.Argument(..., metavar="RUN", help="Run folder trained with --save-every (per-epoch checkpoints)."),
    num: int = typer.Option(21, help="Grid points per axis of the PCA plane."),
    center: bool = typer.Option(False, "--center", show_default="off", help="PCA of centred differences (Li et al.'s sklearn variant)."),
    subset: str = SURFACE_SUBSETS, samples: int = SURFACE_SAMPLES, batch_size: int = BATCH, seed: int = SEED,
    device: str = DEVICE, loss: Loss = LOSS, compile: Compile = COMPILE, dataset: Optional[str] = DATASET,
) -> None:
    """PCA plane of the per-epoch checkpoints relative to the final one, with the path drawn on the surface."""
    from landscape.analyze import jobs as workflows
    from landscape.errors import check_positive_int
    from landscape.surface.grid import MAX_GRID_POINTS

    check_positive_int("--num", num, minimum=2, maximum=MAX_GRID_POINTS)     # before any file is written

    res, plane = workflows.trajectory(run, analysis_options(subset, samples, batch_size, seed, "best", device, loss, compile,
                                                            dataset),
                                      num=num, center=center)
    ev = plane.explained_variance_ratio
    print_main(f"trajectory plane: {res.path}; explained variance {ev[0]:.1%} + {ev[1]:.1%}; "
               f"max off-plane residual {float(plane.residual.max()):.3g}")
