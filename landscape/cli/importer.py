"""`landscape import`: checkpoints trained elsewhere as run folders that `analyze` and `report` accept."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

MANIFEST_SUFFIXES = (".csv", ".yaml", ".yml")


def import_cmd(
    source: Path = typer.Argument(..., metavar="CHECKPOINT_OR_MANIFEST",
                                  help="Weights file (.pth/.pt/.safetensors) or a manifest (.csv/.yaml) of many."),
    out: Path = typer.Option(..., help="SWEEP/NAME for one checkpoint, SWEEP for a manifest (sweep.json is "
                                       "created or appended to)."),
    dataset: str = typer.Option(..., help="FORMAT:ROOT of the data the model was trained on."),
    factory: Optional[str] = typer.Option(None, help="MODULE:FUNCTION or path/to/file.py:FUNCTION returning the "
                                                     "nn.Module (its source hash is recorded)."),
    timm: Optional[str] = typer.Option(None, help="timm model name (toolkit regression head, or the checkpoint's "
                                                  "own one-output head when its keys say so)."),
    img_size: Optional[int] = typer.Option(None, min=1, show_default="timm default, 224 for a factory",
                                           help="Crop size in px (and timm's img_size)."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Batch size the model was trained with "
                                                               "(required for one checkpoint)."),
    seed: int = typer.Option(0, help="Training seed (recorded)."),
    lr: Optional[float] = typer.Option(None, help="Learning rate it was trained with (recorded)."),
    score_range: Optional[str] = typer.Option(None, metavar="LO:HI", show_default="from the file, else the dataset's",
                                              help="Scores the model outputs are in."),
    label: Optional[list[str]] = typer.Option(None, metavar="KEY=VALUE", help="Extra label (repeatable)."),
    test_patches: int = typer.Option(4, min=1, help="Crops per evaluation image (prediction = mean)."),
    test_random_crop: bool = typer.Option(False, "--test-random-crop/--test-grid-crop",
                                          help="Seeded random test crops instead of a fixed grid."),
    train_eval_images: int = typer.Option(256, min=1, help="Training images measured with the test protocol."),
    score_column: Optional[str] = typer.Option(None, help="Score column (KonIQ: MOS or MOS_zscore)."),
    ranking_alpha: float = typer.Option(0.5, help="Ranking weight of the loss analyses use (as in training)."),
    ranking_margin: float = typer.Option(0.0, help="Margin of the ranking hinge."),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:1."),
    force: bool = typer.Option(False, "--force", help="Replace a run folder that holds another run."),
) -> None:
    """Import checkpoints trained elsewhere: evaluate train/val/test SRCC and write run folders."""
    from landscape.errors import LandscapeError
    from landscape.train.imported_run import import_run, parse_labels, parse_score_range

    labels = parse_labels(label)
    parse_score_range(score_range)      # fail on a bad LO:HI before loading anything
    protocol = dict(test_patches=test_patches, test_random_crop=test_random_crop, train_eval_images=train_eval_images,
                    score_column=score_column, ranking_alpha=ranking_alpha, ranking_margin=ranking_margin,
                    device=device)
    model = dict(factory=factory, timm_name=timm, img_size=img_size, score_range=score_range)
    if source.suffix.lower() in MANIFEST_SUFFIXES:
        from landscape.train.import_manifest import import_manifest

        got = import_manifest(source, out, dataset=dataset, labels=labels, force=force,
                              log=lambda m: typer.echo(m), **model, **protocol)
        typer.echo(f"imported {len(got)} run(s) into {out}")
        return
    if batch_size is None:
        raise LandscapeError("--batch-size is required when importing one checkpoint")
    m = import_run(source, out, dataset=dataset, batch_size=batch_size, seed=seed, lr=lr, labels=labels,
                   force=force, **model, **protocol)
    typer.echo(f"{out}: train SRCC {m['train_srcc']:.4f} val SRCC {m['val_srcc']:.4f} test SRCC "
               f"{m['test_srcc']:.4f} PLCC {m['test_plcc']:.4f} gap {m['srcc_gap']:+.4f}")
