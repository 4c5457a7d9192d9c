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
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    """Sharp-vs-flat minima analysis for IQA models: plan, train, analyse, report."""


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


def _not_yet(name: str) -> None:
    raise LandscapeError(f"'{name}' is not yet available in this version")


@app.command("plan")
def plan_cmd() -> None:
    """Measure speed, memory, the OOM frontier and the critical batch size per batch size."""
    _not_yet("plan")


@app.command("train")
def train_cmd() -> None:
    """Train a batch-size x seed sweep of the Swin IQA model."""
    _not_yet("train")


@app.command("report")
def report_cmd() -> None:
    """Link sharpness to the SRCC generalisation gap: tables, statistics, figures, HTML."""
    _not_yet("report")


@app.command("demo")
def demo_cmd() -> None:
    """Synthetic data -> sweep -> every analyzer -> report, in one command."""
    _not_yet("demo")


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
