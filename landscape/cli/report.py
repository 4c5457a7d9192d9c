"""`landscape report`: tables, statistics, figures and HTML of a sweep."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def report_cmd(
    sweep: Path = typer.Argument(..., metavar="SWEEP", help="Sweep folder written by 'landscape train'."),
    out: Optional[Path] = typer.Option(None, show_default="reports/<sweep name>", help="Report folder."),
    n_boot: int = typer.Option(2000, help="Bootstrap resamples over configurations for the CIs (>= 2000)."),
    samples: Optional[int] = typer.Option(None, "--samples", metavar="N", show_default="any",
                                          help="Use only analyses of N samples (every measure)."),
    setting: Optional[list[str]] = typer.Option(
        None, "--setting", metavar="MEASURE.KEY=VALUE", show_default="none",
        help="Use only results with this setting, e.g. hessian.samples=64 or keskar.seed=1 "
             "(MEASURE: hessian, keskar, adaptive, average, pacbayes, noise or a measure column); repeatable."),
    force: bool = typer.Option(False, "--force", show_default="off", help="Replace a non-empty folder that holds no report of this sweep."),
) -> None:
    """Link sharpness to the SRCC generalisation gap: tables, statistics, figures, HTML.

    Per measure one setting is used: the one stored for every run. Measures whose runs were
    analysed with different settings are not compared (named, with the option to choose one).
    """
    from landscape.report.build import build_report

    res = build_report(sweep, out or Path("reports") / sweep.resolve().name, force=force, n_boot=n_boot,
                       samples=samples, settings=tuple(setting or ()), log=lambda m: typer.echo(m, err=True))
    for line in res.summary[:1]:
        typer.echo(line)
    for line in res.not_compared:
        typer.echo(line)
    for line in res.invalid:
        typer.echo(f"left out of means: {line}")
    if res.missing:
        typer.echo(f"missing analyses ({len(res.missing)}): " + "; ".join(res.missing[:6])
                   + (" ..." if len(res.missing) > 6 else ""))
    typer.echo(f"report: {res.index}")
