"""``landscape demo``: the main job on the embedded synthetic dataset, end to end.

Steps (each resumable; re-running skips what is done): generate the synthetic IQA
dataset -> plan the batch sizes -> train a sweep (6 batch sizes x 2 seeds, micro
Swin with its recipe) -> Hessian top-k, trace and density -> sharpness suite -> 2D surfaces of the
smallest and largest batch -> 1D interpolation between them -> report.

``quick`` shrinks every step (fewer images, batch sizes, epochs, samples, grid points) so the
whole run takes about 2.5 minutes on a 2-core CPU (B = 8, the slowest per epoch, is left out so a
slower moment of the machine stays inside 3); the full demo fits in about 15.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from landscape.analyze import jobs as workflows
from landscape.data import ensure_synthetic
from landscape.train.config import TrainConfig, resolve_config
from landscape.train.sweep import expand_sweep, run_sweep


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of each step (``QUICK`` and ``FULL`` below). Training uses the micro recipe
    (:data:`landscape.train.recipes.RECIPES`) with ``epochs`` and ``train_patches`` as given."""

    n_references: int
    image_size: int
    split_ratios: tuple[float, float, float]
    batch_sizes: tuple[int, ...]
    seeds: tuple[int, ...]
    epochs: int
    train_patches: int
    test_patches: int
    train_eval_images: int
    analysis_samples: int
    top_k: int
    trace_matvecs: int
    density_steps: int
    keskar_spaces: tuple[str, ...]
    grid: str
    alpha: str
    pacbayes_depth: int
    pacbayes_samples: int
    noise_repeats: int
    plan_steps: int
    density_runs: int = 2
    adaptive_iters: int = 10
    average_samples: int = 20


QUICK = DemoSettings(n_references=24, image_size=80, split_ratios=(0.7, 0.1, 0.2), batch_sizes=(16, 32, 48),
                     seeds=(0, 1), epochs=8, train_patches=2, test_patches=4, train_eval_images=64,
                     analysis_samples=16, top_k=1, trace_matvecs=6, density_steps=6, keskar_spaces=("random",),
                     grid="-1:1:5", alpha="-1:2:7",
                     pacbayes_depth=6, pacbayes_samples=3, noise_repeats=4, plan_steps=2, density_runs=1,
                     adaptive_iters=5, average_samples=8)
# FULL: 52 references split 34 / 8 / 10 (714 training, 168 validation, 210 test images: a validation
# split large enough to select epochs on); batch sizes 6 .. 96 span 16x, from 0.8% to 13% of the
# training set (Keskar et al.'s large-batch regime starts at about 10%); two seeds each.
# Images are 64 px, so the micro model's 32-px crops see a quarter of an image each, and the 4 test
# crops (a 2 x 2 grid) cover every pixel once (README, "Training recipe": 80-px images with 3 test
# crops, which leave a corner and the middle band unseen, gave test SRCC 0.02-0.04 lower).
FULL = DemoSettings(n_references=52, image_size=64, split_ratios=(0.65, 0.15, 0.2),
                    batch_sizes=(6, 12, 24, 48, 72, 96), seeds=(0, 1), epochs=15,
                    train_patches=3, test_patches=4, train_eval_images=128, analysis_samples=48, top_k=2,
                    trace_matvecs=16, density_steps=16, keskar_spaces=("full", "random"), grid="-1:1:9",
                    alpha="-1:2:13", pacbayes_depth=8, pacbayes_samples=4, noise_repeats=12, plan_steps=3)


def demo_config(data_dir: Path, s: DemoSettings) -> TrainConfig:
    """The micro recipe with the demo's sweep (sqrt LR rule: the rule for Adam-type optimisers,
    Malladi et al. 2022; README, "Training recipe")."""
    return resolve_config({}, {"dataset": f"synthetic:{data_dir}", "model": "micro",
                               "batch_sizes": list(s.batch_sizes), "seeds": list(s.seeds), "lr_scaling": ["sqrt"],
                               "epochs": s.epochs, "train_patches": s.train_patches, "test_patches": s.test_patches,
                               "train_eval_images": s.train_eval_images, "device": "cpu"})


def run_demo(out: Path, *, quick: bool = False, echo: Callable[[str], None] = print, progress: bool = True):
    """Run every step into ``out`` (``data/``, ``sweep/``, ``report/``); returns the report result."""
    from landscape import sharpness as S
    from landscape.plan import run_plan
    from landscape.report.build import build_report

    s = QUICK if quick else FULL
    out = Path(out)
    t0 = time.perf_counter()

    def step(name: str) -> None:
        echo(f"[demo {time.perf_counter() - t0:6.1f} s] {name}")

    step("synthetic dataset")
    data_dir = ensure_synthetic(out / "data", seed=0, n_references=s.n_references, size=s.image_size,
                                split_ratios=s.split_ratios)
    cfg = demo_config(data_dir, s)
    sweep = out / "sweep"
    step(f"training {len(expand_sweep(cfg))} runs (batch sizes {s.batch_sizes} x seeds {s.seeds})")
    run_sweep(cfg, sweep, progress=progress, echo=echo)
    step("plan (speed, memory, B_simple per batch size)")
    run_plan(cfg, list(s.batch_sizes), steps=s.plan_steps, warmup=1, noise_repeats=s.noise_repeats,
             noise_b_small=4, noise_b_big=64, noise_pool=256, out_dir=sweep / "plan", echo=None)
    opts = workflows.AnalysisOptions(subsets=("train",), samples=s.analysis_samples, batch_size=64, device="cpu")
    step("Hessian: top-k eigenvalues, trace, spectral density")
    workflows.hessian([sweep], opts, top_k=s.top_k, trace_matvecs=s.trace_matvecs, density=True,
                      density_runs=s.density_runs, density_steps=s.density_steps)
    step("sharpness: Keskar, adaptive, average, PAC-Bayes, noise scale")
    workflows.sharpness([sweep], opts, eps=(1e-3,), keskar_spaces=s.keskar_spaces, rho_linf=(2e-3,),
                        rho_l2=(1.0,), rho_average=(0.1,),
                        adaptive=replace(S.AdaptiveConfig(), m=s.analysis_samples, n_iter=s.adaptive_iters),
                        average=replace(S.AverageConfig(), n_samples=s.average_samples),
                        pacbayes=replace(S.PacBayesConfig(), depth=s.pacbayes_depth, n_samples=s.pacbayes_samples),
                        noise=replace(S.NoiseConfig(), b_small=4, b_big=s.analysis_samples,
                                      n_repeats=s.noise_repeats))
    runs = {(r.batch_size, r.seed): sweep / r.name for r in expand_sweep(cfg)}
    small, large = runs[(min(s.batch_sizes), s.seeds[0])], runs[(max(s.batch_sizes), s.seeds[0])]
    surf_opts = replace(opts, subsets=("train", "test"))
    for run in (small, large):
        step(f"2D surface {s.grid} x {s.grid}: {run.name}")
        workflows.surface(run, surf_opts, grid=s.grid, progress=progress)
    step(f"1D interpolation {small.name} -> {large.name}")
    workflows.interpolation(small, large, surf_opts, alpha=s.alpha, progress=progress)
    step("report")
    result = build_report(sweep, out / "report", log=echo)
    step(f"done: {result.index}")
    return result
