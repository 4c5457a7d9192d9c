"""Shared options, typed choices and parsers of the command line.

Light on purpose: this module (like every ``landscape.cli`` module) imports only typer and
:mod:`landscape.errors` at import time, so ``--help`` and argument errors answer without
loading torch. The choice sets below therefore repeat the library's constants
(``landscape.data.FORMATS``, ``landscape.hessian.STARTS``, ...);
``tests/cli/test_cli_options.py`` checks that each one equals its library constant.

Fixed sets of values are ``str``-valued :class:`enum.Enum` options, which typer validates at
parse time ("'x' is not one of 'a', 'b'", exit 2) and lists in ``--help``. Comma-separated
lists of choices (``--subset train,test``, ``--lr-scaling none,sqrt``, ``--measures``) and open
forms (``--device cuda:N``, ``--checkpoint epoch_NNN``) are checked by the callbacks below,
which give the same kind of one-line usage error.
"""
from __future__ import annotations

import re
from enum import Enum
from typing import Callable, Optional, Sequence

import typer

from landscape.errors import LandscapeError

# ----------------------------------------------------------------------------- choice sets


class Split(str, Enum):
    """A data split (``landscape.data.SPLITS``)."""

    train = "train"
    val = "val"
    test = "test"


class DataFormat(str, Enum):
    """Dataset formats of the data format registry (``landscape.data.FORMATS``)."""

    synthetic = "synthetic"
    koniq10k = "koniq10k"
    kadid10k = "kadid10k"
    livec = "livec"
    spaq = "spaq"
    csv = "csv"
    pyiqa = "pyiqa"


class Loss(str, Enum):
    """Analysis criterion (``landscape.train.losses.make_criterion``)."""

    train = "train"
    l1 = "l1"
    mse = "mse"


class Compile(str, Enum):
    """torch.compile of the grid forward pass (``landscape.surface.evaluate.COMPILE_MODES``)."""

    auto = "auto"
    on = "on"
    off = "off"


class Engine(str, Enum):
    """Hessian engine (``landscape.analyze.jobs.hessian``)."""

    landscape = "landscape"
    pyhessian = "pyhessian"


class Which(str, Enum):
    """Lanczos end of the spectrum (``landscape.linalg.WHICH``)."""

    LA = "LA"
    SA = "SA"
    LM = "LM"


class Start(str, Enum):
    """Lanczos start vector (``landscape.hessian.STARTS``)."""

    auto = "auto"
    output = "output"
    gradient = "gradient"
    random = "random"


class TraceMethod(str, Enum):
    """Trace estimator (``landscape.hessian.TRACE_METHODS``)."""

    hutchpp = "hutch++"
    hutchinson = "hutchinson"


class Blocks(str, Enum):
    """Named parameter blocks of the per-block Hessian results."""

    stages = "stages"


class PacBayesKind(str, Enum):
    """PAC-Bayes deviation (``landscape.sharpness.pacbayes.KINDS``)."""

    loss_relative = "loss_relative"
    loss = "loss"
    l1_increase = "l1_increase"
    srcc = "srcc"


class Normalization(str, Enum):
    """Direction normalisation (``landscape.surface.directions.NORMALIZATIONS``)."""

    filter = "filter"
    layer = "layer"
    elementwise = "elementwise"
    none = "none"


class Buffers(str, Enum):
    """Buffers along an interpolation (``landscape.surface.interpolate.BUFFER_MODES``)."""

    recompute = "recompute"
    interpolate = "interpolate"
    keep_a = "keep_a"


class Preset(str, Enum):
    """Model preset (``landscape.models.swin_iqa.PRESETS``)."""

    micro = "micro"
    micro_plain = "micro_plain"
    tiny = "tiny"
    small = "small"
    base = "base"


class SplitMode(str, Enum):
    """How a run splits its dataset (``landscape.data.records.SPLIT_MODES``)."""

    auto = "auto"
    official = "official"
    random = "random"


class TestCrops(str, Enum):
    """Evaluation crops of the test protocol (``landscape.train.config.TEST_CROPS``)."""

    grid = "grid"
    random = "random"


class RegressionLoss(str, Enum):
    """Regression term of the training loss (``landscape.train.losses.REGRESSION_LOSSES``)."""

    l1 = "l1"
    mse = "mse"


class Scheduler(str, Enum):
    """Learning-rate schedule (``landscape.train.config.SCHEDULERS``)."""

    cosine = "cosine"
    step = "step"
    none = "none"


class NoiseLoss(str, Enum):
    """Loss of the B_simple estimator (``landscape.plan.run.NOISE_LOSSES``)."""

    l1 = "l1"
    train = "train"


LR_RULES = ("none", "linear", "sqrt")                                    # landscape.train.lr_rules.RULES
MEASURES = ("keskar", "adaptive", "average", "pacbayes", "noise")       # landscape.sharpness.suite.MEASURES
KESKAR_SPACES = ("full", "random")                                       # landscape.sharpness.suite.KESKAR_SPACES
DEVICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


def value(choice: Enum | str | None) -> str | None:
    """The plain string of an enum choice (the library takes strings), ``None`` kept."""
    return choice.value if isinstance(choice, Enum) else choice


# ----------------------------------------------------------------------------- parsers and callbacks


def csv_ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LandscapeError(f"{name} must be comma-separated integers, got '{text}'") from None


def csv_floats(text: str, name: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise LandscapeError(f"{name} must be comma-separated numbers, got '{text}'") from None


def csv_strs(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def _not_one_of(item: str, choices: Sequence[str]) -> typer.BadParameter:
    return typer.BadParameter(f"{item!r} is not one of {', '.join(map(repr, choices))}.")


def csv_choices(choices: Sequence[str]) -> Callable[[Optional[str]], Optional[str]]:
    """Callback: every comma-separated item of the option is one of ``choices`` (a usage error otherwise)."""

    def check(text: Optional[str]) -> Optional[str]:
        if text is None:
            return None
        items = csv_strs(text)
        if not items:
            raise typer.BadParameter(f"empty list; choose from {', '.join(map(repr, choices))}.")
        for item in items:
            if item not in choices:
                raise _not_one_of(item, choices)
        return text

    return check


def check_device(text: Optional[str]) -> Optional[str]:
    """Callback: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if text is None or text in DEVICES or re.fullmatch(r"cuda:\d+", text):
        return text
    raise _not_one_of(text, DEVICES)


def check_model(text: Optional[str]) -> Optional[str]:
    """Callback: a preset (:class:`Preset`) or ``timm:NAME`` (NAME is checked against timm's registry later)."""
    if text is None or text in {p.value for p in Preset}:
        return text
    if text.startswith("timm:") and len(text) > len("timm:"):
        return text
    raise _not_one_of(text, (*(p.value for p in Preset), "timm:NAME"))


def check_checkpoint(text: str) -> str:
    """Callback: ``best``, ``last`` or ``epoch_NNN`` (a ``save_every`` checkpoint, e.g. ``epoch_003``)."""
    if text in ("best", "last") or re.fullmatch(r"epoch_\d+", text):
        return text
    raise _not_one_of(text, ("best", "last", "epoch_NNN"))


# ----------------------------------------------------------------------------- options shared by the analyses

RUNS_ARG = typer.Argument(..., metavar="RUNS", help="Run folders, sweep folders or checkpoint files.",
                          show_default=False)
CHECKPOINT = typer.Option("best", "--checkpoint", metavar="best|last|epoch_NNN", callback=check_checkpoint,
                          help="Checkpoint of each run.")
SUBSET = typer.Option(Split.train, help="Data split the measure is computed on.")
SAMPLES = typer.Option(256, help="Images in the fixed analysis subset (one centre crop each).")
BATCH = typer.Option(64, help="Evaluation batch size.")
SEED = typer.Option(0, help="Seed of the subset and of the random probes/directions.")
DEVICE = typer.Option("auto", metavar="auto|cpu|cuda|cuda:N|mps", callback=check_device, help="Torch device.")
LOSS = typer.Option(Loss.train, help="Criterion: train (the run's L1 + ranking), l1 or mse.")
SURFACE_SUBSETS = typer.Option("train,test", metavar="SPLIT,...", callback=csv_choices(tuple(s.value for s in Split)),
                               help="Evaluation subsets, comma-separated from train, val, test "
                                    "(loss, SRCC, PLCC on each).")
SURFACE_SAMPLES = typer.Option(128, help="Images per evaluation subset (one centre crop each).")
DATASET = typer.Option(None, "--dataset", metavar="FORMAT:ROOT", show_default="the run's recorded dataset",
                       help="Dataset to analyse on, e.g. after moving the sweep or the data; verified against "
                            "the run's record (format, score column, per-split counts and hashes).")
COMPILE = typer.Option(Compile.auto, "--compile", help="torch.compile the forward pass: on, off, or auto (compile "
                       "when the cells left would take over 5 min eagerly; about 1.6x faster on CPU after up to a "
                       "minute of compiling; checked against eager on the first compiled cell).")


def analysis_options(subset: str | Sequence[str], samples: int, batch_size: int, seed: int, which: str, device: str,
                     loss: Loss | str, compile: Compile | str = "auto", dataset: Optional[str] = None):
    """The :class:`landscape.analyze.jobs.AnalysisOptions` of the shared options (``subset``: one split, or a
    comma-separated list of them; ``dataset``: ``--dataset FORMAT:ROOT`` or None)."""
    from landscape.analyze.jobs import AnalysisOptions

    subsets = (value(subset),) if isinstance(subset, Enum) else tuple(csv_strs(subset))
    return AnalysisOptions(subsets, samples, batch_size, seed, which, device, value(loss), value(compile), dataset)


def _is_main() -> bool:
    from landscape import distributed

    return distributed.is_main()


def log_main(message: str) -> None:
    """Log to stderr on rank 0 only (analyses may run under torchrun)."""
    if _is_main():
        typer.echo(message, err=True)


def print_main(message: str) -> None:
    """Print on rank 0 only (analyses may run under torchrun)."""
    if _is_main():
        typer.echo(message)
