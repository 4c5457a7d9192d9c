"""`landscape data synth|check`: the embedded synthetic dataset and dataset validation."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from landscape.cli.options import DataFormat, value

data_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Generate the embedded synthetic dataset; validate datasets.")


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
def data_check(root: Path = typer.Argument(..., metavar="ROOT", help="Dataset root folder."),
               format: DataFormat = typer.Option(..., "--format", help="Dataset format."),
               score_column: Optional[str] = typer.Option(None, show_default="the format's own", help="Score column (KonIQ: MOS or MOS_zscore).")) -> None:
    """Validate a dataset: images per split, score range, missing or unreadable files."""
    from landscape.data import check_dataset

    report = check_dataset(value(format), root, score_column=score_column)
    typer.echo(str(report))
    if not report.ok:
        raise typer.Exit(2)
