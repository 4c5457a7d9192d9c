"""Batch-size planner: measured speed, memory, OOM frontier and critical batch size.

For each candidate batch size B a fresh model (same seed) runs ``warmup`` + ``steps``
iterations of the trainer's own loop body (next batch of the trainer's patch pipeline
-> host-to-device copy -> :func:`landscape.train.step.train_step` with the configured
accumulation, loss and AMP setting -> device sync) and the planner reports:

- speed: per measured step ``t_s`` (seconds, data loading included, as in the trainer's
  epoch), ``samples/s = B / mean(t)`` with the std of the per-step rates ``B / t_s``;
  the training-pass time of one epoch ``T = N_patches * mean(t) / B`` (seconds,
  ``N_patches = n_train_images * train_patches``; evaluation excluded), its standard
  error ``N_patches * std(t) / (B sqrt(n))`` and range (fastest, slowest step);
- memory: peak memory (CUDA max allocated on GPU; process peak RSS on CPU, reset between
  sizes, so it includes the process baseline) and whether it is under the memory limit;
  the memory model ``peak(b) = fixed + per_sample * b`` (b = micro-batch) fitted by
  least squares with its RMS residual;
- the largest fitting micro-batch: on CUDA by doubling + bisection over real steps that
  catches out-of-memory and frees memory after every try; on CPU (where the OS kills a
  process instead of raising) predicted by the memory model, and candidates predicted
  over the limit are not run;
- for sizes that do not fit: the accumulation plan micro x K (smallest K dividing B
  with ``B / K`` <= the largest fitting micro-batch), measured the same way;
- the LR each rule gives at B (none, linear, sqrt) from ``lr`` at ``reference_batch``;
- the gradient noise scale B_simple = tr(Sigma) / |G|^2 at the initial (or a given
  checkpoint's) weights on a pool of training patches, with its bootstrap SE and CI,
  and each B's position: B < B_simple / 2 "below" (more batch still buys speed per
  step), B > 2 B_simple "far above" (diminishing returns), else "near".

Outputs (``out_dir``): ``plan.json`` (everything, with provenance), ``plan.csv`` (one row
per B), ``plan.txt`` (the terminal table), ``plan.{pdf,png,svg}`` (figure), and
``parts/*.json``: every finished measurement keyed by its inputs
(:func:`landscape.provenance.content_key`), reused by a rerun with ``resume=True``.

Modules: :mod:`~landscape.plan.result` (dataclasses, ``read_plan``),
:mod:`~landscape.plan.memory` (memory model, bisection, accumulation, epoch time),
:mod:`~landscape.plan.runner` (the trainer's step, B_simple),
:mod:`~landscape.plan.output` (table, CSV, plan folder), :mod:`~landscape.plan.run`
(``PlanConfig``, ``run_plan``). Device memory helpers live in :mod:`landscape.device`.
"""
from landscape.plan.memory import (  # noqa: F401
    MemoryModel,
    accumulation_plan,
    epoch_seconds,
    fit_memory_model,
    largest_fitting_batch,
)
from landscape.plan.output import csv_rows, format_table, write_plan  # noqa: F401
from landscape.plan.result import (  # noqa: F401
    PlanResult,
    PlanRow,
    SpeedStats,
    StepTiming,
    read_plan,
    speed_stats,
)
from landscape.plan.run import PlanConfig, run_plan  # noqa: F401
from landscape.plan.runner import (  # noqa: F401
    StepRunner,
    TrainerStepRunner,
    full_batches,
    noise_position,
    noise_scale_at,
    noise_scale_position,
)
