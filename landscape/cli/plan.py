"""`landscape plan`: speed, memory, OOM frontier and critical batch size per batch size."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from landscape.cli.options import LR_RULES, NoiseLoss, Preset, check_device, csv_choices, csv_ints, csv_strs, value


def plan_cmd(
    dataset: Optional[str] = typer.Option(None, metavar="FORMAT:ROOT", show_default="from --config",
                                          help="Training data, e.g. synthetic:data/synthetic."),
    model: Optional[Preset] = typer.Option(None, show_default="micro", help="Model preset."),
    batch_sizes: str = typer.Option("16,24,32,48,64", metavar="B,...", help="Candidate effective batch sizes."),
    config: Optional[Path] = typer.Option(None, show_default="none", help="Training config file (YAML/TOML), as for 'train'."),
    out: Path = typer.Option(Path("checkpoints/plan"), help="Output folder (use SWEEP/plan so the report finds it)."),
    steps: int = typer.Option(5, help="Timed training steps per batch size (after warm-up)."),
    warmup: int = typer.Option(2, help="Untimed warm-up steps per batch size."),
    device: Optional[str] = typer.Option(None, metavar="auto|cpu|cuda|cuda:N|mps", callback=check_device,
                                         show_default="auto", help="Torch device."),
    accumulate: Optional[int] = typer.Option(None, show_default="1", help="Micro-batches per step."),
    train_patches: Optional[int] = typer.Option(None, show_default="4", help="Patches per training image per epoch (epoch-time prediction)."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", show_default="off", help="bf16 autocast on GPU."),
    workers: Optional[int] = typer.Option(None, show_default="0", help="Data-loading workers."),
    lr: Optional[float] = typer.Option(None, show_default="1e-4", help="Learning rate at --reference-batch."),
    lr_scaling: Optional[str] = typer.Option(None, metavar="none|linear|sqrt", callback=csv_choices(LR_RULES),
                                             show_default="sqrt", help="LR scaling rule used for the measured steps."),
    reference_batch: Optional[int] = typer.Option(None, show_default="32", help="Batch size at which --lr applies."),
    score_column: Optional[str] = typer.Option(None, show_default="the format's own", help="Score column (KonIQ: MOS or MOS_zscore)."),
    pretrained: Optional[str] = typer.Option(None, show_default="none: random init", help="Backbone weights: a local file, or 'hub'."),
    memory_limit: Optional[float] = typer.Option(None, show_default="GPU total memory; CPU: RSS + available RAM", help="Memory limit in GiB."),
    search: Optional[bool] = typer.Option(None, "--search/--no-search", show_default="on for CUDA", help="Bisection for the largest fitting batch."),
    search_max: Optional[int] = typer.Option(None, show_default="8 x largest candidate", help="Upper end of the bisection."),
    checkpoint: Optional[Path] = typer.Option(None, show_default="initial weights", help="Checkpoint at which B_simple is measured."),
    noise_batches: str = typer.Option("4,128", metavar="SMALL,BIG", help="Small and big batch of the B_simple estimator."),
    noise_repeats: int = typer.Option(20, help="Repeated B_simple estimates (spread); 0 = skip."),
    noise_pool: int = typer.Option(1024, help="Training patches the B_simple batches are drawn from."),
    noise_loss: NoiseLoss = typer.Option(NoiseLoss.l1, help="Loss for B_simple: l1 (per-example mean, exact estimator) "
                                                            "or train."),
    fresh: bool = typer.Option(False, "--fresh", show_default="off", help="Ignore stored measurements and measure again."),
) -> None:
    """Measure speed, memory, the OOM frontier and the critical batch size per batch size."""
    from landscape.plan import format_table, run_plan
    from landscape.train.config import load_config_file, resolve_config

    cli_values = {"dataset": dataset, "model": value(model), "device": device, "accumulate": accumulate,
                  "train_patches": train_patches, "amp": amp, "workers": workers, "lr": lr,
                  "lr_scaling": csv_strs(lr_scaling) if lr_scaling else None, "reference_batch": reference_batch,
                  "score_column": score_column, "pretrained": pretrained}
    cfg = resolve_config(load_config_file(config) if config else {}, cli_values)
    small, big = (csv_ints(noise_batches, "--noise-batches") + [0, 0])[:2]
    result = run_plan(cfg, csv_ints(batch_sizes, "--batch-sizes"), steps=steps, warmup=warmup,
                      memory_limit_bytes=int(memory_limit * 2 ** 30) if memory_limit else None,
                      checkpoint=checkpoint, noise_b_small=small, noise_b_big=big, noise_repeats=noise_repeats,
                      noise_pool=noise_pool, noise_loss=value(noise_loss), search=search, search_max=search_max,
                      out_dir=out, resume=not fresh, echo=lambda m: typer.echo(m, err=True))
    typer.echo(format_table(result))
    typer.echo(f"plan written to {out}")
