"""Root typer app of ``landscape``: global options, the sub-commands, and :func:`main`.

The error contract of :func:`main` (the console script ``landscape``, ``python cli.py`` and
``python -m landscape`` all end here):

- a library error (:class:`landscape.errors.LandscapeError`) or a usage error (unknown option,
  invalid choice, bad value) prints ONE line ``error: ...`` on stderr and exits 2; ``--debug``
  shows the library error's full traceback instead;
- an ``OSError`` (disk full, read-only folder, permission denied, a file where a folder is needed)
  prints ONE line ``error: PATH: problem`` and exits 2 (``--debug``: the traceback);
- Ctrl-C (SIGINT) prints one ``interrupted: ...`` line and exits 130 (128 + SIGINT): every
  analysis, training run and plan stores each finished part atomically, so running the same
  command again resumes;
- otherwise the exit code is the command's own (0, or 1 when e.g. a training run failed).

Help and argument errors never import torch: every command imports the library inside its body.
"""
from __future__ import annotations

import sys
from typing import Optional

import typer

from landscape.cli.analyze import analyze_app
from landscape.cli.data import data_app
from landscape.cli.demo import demo_cmd
from landscape.cli.importer import import_cmd
from landscape.cli.plan import plan_cmd
from landscape.cli.report import report_cmd
from landscape.cli.train import train_cmd
from landscape.errors import LandscapeError

try:                                    # typer >= 0.20 ships its own copy of click
    from typer._click import exceptions as _click_errors
except ImportError:                     # pragma: no cover - older typer on top of click
    from click import exceptions as _click_errors


def _show_argument_metavars_only() -> None:
    """typer >= 0.2x prints an argument's Python type beside its name in --help (``RUNS <list[Path]>``);
    for arguments that set a ``metavar`` print the metavar alone."""
    from typer.core import TyperArgument

    shown = getattr(TyperArgument, "display_type_rich", None)
    if shown is None or getattr(shown, "_landscape", False):
        return

    def display_type_rich(self, ctx):
        return None if self.metavar is not None else shown(self, ctx)

    display_type_rich._landscape = True
    TyperArgument.display_type_rich = display_type_rich


_show_argument_metavars_only()

INTERRUPTED = "interrupted: finished results are kept; run the same command again to resume"
EXIT_INTERRUPTED = 130

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Sharp-vs-flat minima analysis for IQA models: plan, train, analyse, report.")
app.add_typer(data_app, name="data")
app.add_typer(analyze_app, name="analyze")
app.command("plan")(plan_cmd)
app.command("train")(train_cmd)
app.command("import")(import_cmd)
app.command("report")(report_cmd)
app.command("demo")(demo_cmd)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", show_default="off", help="Show full tracebacks on errors."),
          threads: Optional[int] = typer.Option(None, "--threads", min=1, metavar="N", show_default="torch default",
                                                help="CPU threads for torch (1 is fastest on a busy shared CPU).")
          ) -> None:
    """Sharp-vs-flat minima analysis for IQA models: plan, train, analyse, report."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(code)


def os_error_line(e: OSError) -> str:
    """``PATH: problem`` of an ``OSError`` (``No space left on device``, ``Read-only file system``, ...)."""
    problem = e.strerror or str(e) or type(e).__name__
    if e.filename is None:
        return problem
    target = f" -> {e.filename2}" if getattr(e, "filename2", None) else ""
    return f"{e.filename}{target}: {problem}"


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the command line on ``argv`` (default ``sys.argv[1:]``); always ends in ``SystemExit``
    with the exit code of the contract in the module docstring."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        # standalone_mode=False: usage errors come here as exceptions (printed as one line below) instead of
        # click's multi-line box, and typer turns Ctrl-C into a returned 130 instead of a silent exit.
        code = app(args=argv, prog_name="landscape", standalone_mode=False)
    except LandscapeError as e:
        if debug:
            raise
        _fail(str(e))
    except OSError as e:                             # disk full, read-only folder, permission, exists, ...
        if debug:
            raise
        _fail(os_error_line(e))
    except _click_errors.NoArgsIsHelpError as e:     # `landscape`, `landscape analyze`: the help on stderr, exit 2
        e.show()
        sys.exit(e.exit_code)
    except _click_errors.UsageError as e:
        where = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
        message = " ".join(e.format_message().split()).replace("Value error, ", "")   # typer's pydantic prefix
        _fail(message + where, e.exit_code)
    except _click_errors.ClickException as e:
        _fail(" ".join(e.format_message().split()), e.exit_code)
    except typer.Abort:                              # end of input at a prompt
        _fail("aborted", 1)
    except KeyboardInterrupt:                        # raised outside typer's own handler
        code = EXIT_INTERRUPTED
    if code == EXIT_INTERRUPTED:                     # typer's answer to KeyboardInterrupt (no command returns 130)
        typer.echo(INTERRUPTED, err=True)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
