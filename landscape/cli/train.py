"""`landscape train`: a batch-size x LR-rule x seed (x split-seed) sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from landscape.cli.options import (
    LR_RULES,
    RegressionLoss,
    Scheduler,
    SplitMode,
    TestCrops,
    check_device,
    check_model,
    csv_choices,
    csv_ints,
    csv_strs,
    value,
)
from landscape.train.recipes import shown_default


def train_cmd(
    dataset: Optional[str] = typer.Option(None, metavar="FORMAT:ROOT", show_default="from --config",
                                          help="Training data, e.g. synthetic:data/synthetic or koniq10k:/data/koniq."),
    model: Optional[str] = typer.Option(None, metavar="<micro|micro_plain|tiny|small|base|timm:NAME>", callback=check_model,
                                        show_default="micro",
                                        help="Swin preset, or any timm backbone (timm:NAME, e.g. timm:resnet50) with "
                                             "the toolkit's regression head."),
    img_size: Optional[int] = typer.Option(None, min=16, metavar="N", show_default="preset / timm default",
                                           help="Crop size in px (also timm's img_size where the model takes it)."),
    batch_sizes: Optional[str] = typer.Option(None, metavar="B,...", show_default="32", help="Effective batch sizes, comma-separated."),
    seeds: Optional[str] = typer.Option(None, metavar="SEED,...", show_default="0", help="Seeds, comma-separated."),
    out: Path = typer.Option(Path("checkpoints/sweep"), help="Sweep output folder."),
    config: Optional[Path] = typer.Option(None, show_default="none", help="YAML/TOML file with the same keys; options given here override it."),
    epochs: Optional[int] = typer.Option(None, show_default=shown_default("epochs", "10"), help="Maximum epochs."),
    patience: Optional[int] = typer.Option(None, show_default=shown_default("patience", "5"), help="Early stop after N epochs without val-SRCC gain; 0 = off."),
    train_patches: Optional[int] = typer.Option(None, show_default=shown_default("train_patches", "4"), help="Random crops per training image per epoch."),
    test_patches: Optional[int] = typer.Option(None, show_default="4", help="Crops per evaluation image (prediction = mean)."),
    test_crops: Optional[TestCrops] = typer.Option(None, show_default="grid", help="Evaluation crops: a fixed grid or seeded random crops (HyperIQA)."),
    split: Optional[SplitMode] = typer.Option(None, show_default="auto: official where the format has one, else random",
                                              help="Data split: the format's official one, or seeded random splits "
                                                   "grouped by reference image."),
    split_seeds: Optional[str] = typer.Option(None, metavar="SEED,...", show_default="0",
                                              help="Seeds of the random split, comma-separated (one run each)."),
    split_ratio: Optional[str] = typer.Option(None, metavar="TRAIN:VAL:TEST", show_default="0.7:0.1:0.2",
                                              help="Shares of the random split; 0.8:0:0.2 = HyperIQA paper mode "
                                                   "(no val: epochs selected on test)."),
    loss: Optional[RegressionLoss] = typer.Option(None, show_default=shown_default("loss", "l1"),
                                                  help="Regression term of the loss (plus the ranking hinge)."),
    ranking_alpha: Optional[float] = typer.Option(None, show_default=shown_default("ranking_alpha", "0.5"), help="Weight of the pairwise ranking hinge."),
    ranking_margin: Optional[float] = typer.Option(None, show_default="0.0", help="Margin of the ranking hinge (normalised scores)."),
    lr: Optional[float] = typer.Option(None, show_default=shown_default("lr", "1e-4"), help="Learning rate at --reference-batch."),
    lr_scaling: Optional[str] = typer.Option(None, metavar="RULE,...", callback=csv_choices(LR_RULES), show_default="sqrt",
                                             help="LR scaling rules none, linear, sqrt (comma-separated to sweep them)."),
    reference_batch: Optional[int] = typer.Option(None, show_default="32", help="Batch size at which --lr applies."),
    accumulate: Optional[int] = typer.Option(None, show_default="1", help="Micro-batches per step: micro-batch = batch / K."),
    weight_decay: Optional[float] = typer.Option(None, show_default="0.05", help="AdamW weight decay."),
    drop_path: Optional[float] = typer.Option(None, show_default="preset default", help="Stochastic depth rate."),
    dropout: Optional[float] = typer.Option(None, show_default="0.0", help="Dropout in the regression head."),
    scheduler: Optional[Scheduler] = typer.Option(None, show_default="cosine", help="Learning-rate schedule."),
    warmup_epochs: Optional[int] = typer.Option(None, show_default=shown_default("warmup_epochs", "0"), help="Linear warmup epochs."),
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
    allow_overlap: Optional[bool] = typer.Option(None, "--allow-overlap", show_default="off", help="Accept an image listed in two splits (recorded in config.json)."),
    resume: bool = typer.Option(True, "--resume/--no-resume", help="Continue interrupted runs from their last epoch."),
    force: bool = typer.Option(False, "--force", show_default="off", help="Replace an output folder that holds another sweep."),
    only: Optional[str] = typer.Option(None, metavar="I,...", show_default="all runs", help="Train only these sweep indices (comma-separated), e.g. for job arrays."),
    list_runs: bool = typer.Option(False, "--list", show_default="off", help="Print the sweep's runs with their indices and exit."),
) -> None:
    """Train a batch-size x LR-rule x seed (x split-seed) sweep of an IQA model (Swin preset or timm:NAME)."""
    from landscape import distributed
    from landscape.data.splits import parse_ratios
    from landscape.train.config import load_config_file, resolve_config
    from landscape.train.sweep import expand_sweep, run_sweep

    cli_values = {
        "dataset": dataset, "model": model, "img_size": img_size, "epochs": epochs, "patience": patience,
        "batch_sizes": csv_ints(batch_sizes, "--batch-sizes") if batch_sizes else None,
        "seeds": csv_ints(seeds, "--seeds") if seeds else None,
        "lr_scaling": csv_strs(lr_scaling) if lr_scaling else None,
        "train_patches": train_patches, "test_patches": test_patches,
        "test_random_crop": None if test_crops is None else value(test_crops) == "random",
        "split": value(split), "split_seeds": csv_ints(split_seeds, "--split-seeds") if split_seeds else None,
        "split_ratio": list(parse_ratios(split_ratio)) if split_ratio else None,
        "loss": value(loss), "ranking_alpha": ranking_alpha, "ranking_margin": ranking_margin, "lr": lr,
        "reference_batch": reference_batch, "accumulate": accumulate, "weight_decay": weight_decay,
        "drop_path": drop_path, "dropout": dropout, "scheduler": value(scheduler), "warmup_epochs": warmup_epochs,
        "cross_test": list(cross_test) if cross_test else None, "score_column": score_column,
        "pretrained": pretrained, "train_eval_images": train_eval_images, "save_every": save_every,
        "device": device, "workers": workers, "amp": amp, "skip_bad_images": skip_bad_images,
        "allow_overlap": allow_overlap,
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
