"""`landscape train`: a batch-size x LR-rule x seed sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from landscape.cli.options import LR_RULES, Preset, Scheduler, check_device, csv_choices, csv_ints, csv_strs, value


def train_cmd(
    dataset: Optional[str] = typer.Option(None, metavar="FORMAT:ROOT", show_default="from --config",
                                          help="Training data, e.g. synthetic:data/synthetic or koniq10k:/data/koniq."),
    model: Optional[Preset] = typer.Option(None, show_default="micro", help="Model preset."),
    batch_sizes: Optional[str] = typer.Option(None, metavar="B,...", show_default="32", help="Effective batch sizes, comma-separated."),
    seeds: Optional[str] = typer.Option(None, metavar="SEED,...", show_default="0", help="Seeds, comma-separated."),
    out: Path = typer.Option(Path("checkpoints/sweep"), help="Sweep output folder."),
    config: Optional[Path] = typer.Option(None, show_default="none", help="YAML/TOML file with the same keys; options given here override it."),
    epochs: Optional[int] = typer.Option(None, show_default="10", help="Maximum epochs."),
    patience: Optional[int] = typer.Option(None, show_default="5", help="Early stop after N epochs without val-SRCC gain; 0 = off."),
    train_patches: Optional[int] = typer.Option(None, show_default="4", help="Random crops per training image per epoch."),
    test_patches: Optional[int] = typer.Option(None, show_default="4", help="Crops per evaluation image (prediction = mean)."),
    test_random_crop: Optional[bool] = typer.Option(None, "--test-random-crop/--test-grid-crop", show_default="grid", help="Seeded random test crops instead of a fixed grid."),
    ranking_alpha: Optional[float] = typer.Option(None, show_default="0.5", help="Weight of the pairwise ranking hinge."),
    ranking_margin: Optional[float] = typer.Option(None, show_default="0.0", help="Margin of the ranking hinge (normalised scores)."),
    lr: Optional[float] = typer.Option(None, show_default="1e-4", help="Learning rate at --reference-batch."),
    lr_scaling: Optional[str] = typer.Option(None, metavar="RULE,...", callback=csv_choices(LR_RULES), show_default="sqrt",
                                             help="LR scaling rules none, linear, sqrt (comma-separated to sweep them)."),
    reference_batch: Optional[int] = typer.Option(None, show_default="32", help="Batch size at which --lr applies."),
    accumulate: Optional[int] = typer.Option(None, show_default="1", help="Micro-batches per step: micro-batch = batch / K."),
    weight_decay: Optional[float] = typer.Option(None, show_default="0.05", help="AdamW weight decay."),
    drop_path: Optional[float] = typer.Option(None, show_default="preset default", help="Stochastic depth rate."),
    dropout: Optional[float] = typer.Option(None, show_default="0.0", help="Dropout in the regression head."),
    scheduler: Optional[Scheduler] = typer.Option(None, show_default="cosine", help="Learning-rate schedule."),
    warmup_epochs: Optional[int] = typer.Option(None, show_default="0", help="Linear warmup epochs."),
    cross_test: Optional[list[str]] = typer.Option(None, metavar="FORMAT:ROOT", show_default="none", help="Extra test set FORMAT:ROOT for the cross-dataset drop (repeatable)."),
    score_column: Optional[str] = typer.Option(None, show_default="the format's own", help="Score column (KonIQ: MOS or MOS_zscore)."),
    pretrained: Optional[str] = typer.Option(None, show_default="none: random init", help="Backbone weights: a local file, or 'hub' to download."),
    train_eval_images: Optional[int] = typer.Option(None, show_default="256", help="Training images measured with the test protocol (train SRCC)."),
    save_every: Optional[int] = typer.Option(None, show_default="0", help="Keep a checkpoint every N epochs (trajectory plots); 0 = off."),
    device: Optional[str] = typer.Option(None, metavar="auto|cpu|cuda|cuda:N|mps", callback=check_device,
                                         show_default="auto", help="Torch device."),
    workers: Optional[int] = typer.Option(None, show_default="0", help="Data-loading worker processes."),
    amp: Optional[bool] = typer.Option(None, "--amp/--no-amp", show_default="off", help="bf16 autocast on GPU."),
    skip_bad_images: Optional[bool] = typer.Option(None, "--skip-bad-images", show_default="off", help="Count and skip unreadable images instead of failing."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue interrupted runs from their last epoch."),
    force: bool = typer.Option(False, "--force", show_default="off", help="Replace an output folder that holds another sweep."),
    only: Optional[str] = typer.Option(None, metavar="I,...", show_default="all runs", help="Train only these sweep indices (comma-separated), e.g. for job arrays."),
    list_runs: bool = typer.Option(False, "--list", show_default="off", help="Print the sweep's runs with their indices and exit."),
) -> None:
    """Train a batch-size x LR-rule x seed sweep of the Swin IQA model."""
    from landscape import distributed
    from landscape.train.config import load_config_file, resolve_config
    from landscape.train.sweep import expand_sweep, run_sweep

    cli_values = {
        "dataset": dataset, "model": value(model), "epochs": epochs, "patience": patience,
        "batch_sizes": csv_ints(batch_sizes, "--batch-sizes") if batch_sizes else None,
        "seeds": csv_ints(seeds, "--seeds") if seeds else None,
        "lr_scaling": csv_strs(lr_scaling) if lr_scaling else None,
        "train_patches": train_patches, "test_patches": test_patches, "test_random_crop": test_random_crop,
        "ranking_alpha": ranking_alpha, "ranking_margin": ranking_margin, "lr": lr,
        "reference_batch": reference_batch, "accumulate": accumulate, "weight_decay": weight_decay,
        "drop_path": drop_path, "dropout": dropout, "scheduler": value(scheduler), "warmup_epochs": warmup_epochs,
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
                        only=csv_ints(only, "--only") if only else None, echo=typer.echo)
    if any(r.status != "finished" for r in results):
        raise typer.Exit(1)
