"""The command line's typed choices: each equals the library constant it repeats, and reaches the library as a
plain string.

``landscape.cli`` imports no torch (``--help`` answers at once), so its choice sets are copies of the library's
constants; these tests keep the copies equal to the originals.
"""
from __future__ import annotations

import pytest
from typer.testing import CliRunner

from landscape.cli import options as O


def _values(enum) -> tuple[str, ...]:
    return tuple(member.value for member in enum)


def _library_choices() -> dict[str, tuple[object, tuple]]:
    from landscape.data import FORMATS, SPLITS
    from landscape.data.records import SPLIT_MODES
    from landscape.hessian import STARTS, TRACE_METHODS
    from landscape.linalg import WHICH
    from landscape.models.swin_iqa import PRESETS
    from landscape.plan.run import NOISE_LOSSES
    from landscape.sharpness.pacbayes import KINDS
    from landscape.sharpness.suite import KESKAR_SPACES, MEASURES
    from landscape.surface.directions import NORMALIZATIONS
    from landscape.surface.evaluate import COMPILE_MODES
    from landscape.surface.interpolate import BUFFER_MODES
    from landscape.train.config import SCHEDULERS, TEST_CROPS
    from landscape.train.losses import REGRESSION_LOSSES
    from landscape.train.lr_rules import RULES

    return {"split": (O.Split, SPLITS), "format": (O.DataFormat, FORMATS), "start": (O.Start, STARTS),
            "trace": (O.TraceMethod, TRACE_METHODS), "which": (O.Which, WHICH), "preset": (O.Preset, tuple(PRESETS)),
            "noise_loss": (O.NoiseLoss, NOISE_LOSSES), "pacbayes": (O.PacBayesKind, KINDS),
            "normalization": (O.Normalization, NORMALIZATIONS), "compile": (O.Compile, COMPILE_MODES),
            "buffers": (O.Buffers, BUFFER_MODES), "scheduler": (O.Scheduler, SCHEDULERS),
            "lr_rules": (O.LR_RULES, RULES), "measures": (O.MEASURES, MEASURES),
            "keskar_spaces": (O.KESKAR_SPACES, KESKAR_SPACES), "split_mode": (O.SplitMode, SPLIT_MODES),
            "test_crops": (O.TestCrops, TEST_CROPS), "loss": (O.RegressionLoss, REGRESSION_LOSSES)}


@pytest.mark.parametrize("name", sorted(_library_choices()))
def test_cli_choices_equal_the_library_constants(name):
    cli_side, library = _library_choices()[name]
    cli_values = cli_side if isinstance(cli_side, tuple) else _values(cli_side)
    assert set(cli_values) == set(library), name


def test_criterion_names_are_the_ones_make_criterion_accepts():
    from landscape.errors import LandscapeError
    from landscape.train.losses import make_criterion

    for loss in O.Loss:
        make_criterion(loss.value)
    with pytest.raises(LandscapeError):
        make_criterion("huber")


def test_choices_reach_the_library_as_plain_strings(monkeypatch, tmp_path):
    """``analyze sharpness``: enum and callback-checked options arrive as ``str``, not as enum members."""
    from landscape.analyze import jobs
    from landscape.cli import app

    seen = {}

    def fake_sharpness(paths, opts, **kwargs):
        seen.update(opts=opts, kwargs=kwargs)
        return []

    monkeypatch.setattr(jobs, "sharpness", fake_sharpness)
    monkeypatch.setattr(O, "_is_main", lambda: True)
    res = CliRunner().invoke(app, ["analyze", "sharpness", str(tmp_path), "--subset", "val", "--device", "cuda:1",
                                   "--loss", "mse", "--checkpoint", "epoch_002", "--pacbayes-kind", "srcc",
                                   "--measures", "keskar,pacbayes", "--samples", "8", "--m", "8"])
    assert res.exit_code == 0, res.output
    opts = seen["opts"]
    assert (opts.subsets, opts.device, opts.loss, opts.which) == (("val",), "cuda:1", "mse", "epoch_002")
    assert type(opts.loss) is str and type(opts.subsets[0]) is str
    assert seen["kwargs"]["measures"] == ["keskar", "pacbayes"]
    kind = seen["kwargs"]["pacbayes"].kind
    assert kind == "srcc" and type(kind) is str
