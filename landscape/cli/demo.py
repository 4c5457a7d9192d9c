"""`landscape demo`: the whole pipeline on synthetic data."""
from __future__ import annotations

from pathlib import Path

import typer


def demo_cmd(
    out: Path = typer.Option(Path("checkpoints/demo"), help="Folder for data/, sweep/ and report/."),
    quick: bool = typer.Option(False, "--quick", show_default="off", help="Smaller everything: about 3 minutes on a 2-core CPU."),
) -> None:
    """Synthetic data -> plan -> sweep (6 batch sizes x 2 seeds; quick: 3 x 2) -> every analyzer -> report."""
    from landscape.demo import run_demo

    result = run_demo(out, quick=quick, echo=lambda m: typer.echo(m, err=True))
    typer.echo(result.summary[0])
    typer.echo(f"report: {result.index}")
