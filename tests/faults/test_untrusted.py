"""Untrusted checkpoints: a pickled code payload is refused by every loader and never runs.

The payload (``os.system("touch MARKER")``) is live: a control process that loads it with
``weights_only=False`` creates the marker. Every entry point of the package that reads a
checkpoint -- the library loaders, ``analyze hessian/sharpness/surface/interpolate``, the
trainer's resume from ``train_state.pt``, and ``report`` -- refuses it with one line naming
the file, and the marker never appears.
"""
from __future__ import annotations

import shutil
import textwrap

import pytest
from faultkit import HESSIAN, RUN, SHARPNESS, SURFACE, one_line_error, run_all, train_args

from landscape.analyze.inputs import load_analysis_input
from landscape.errors import CheckpointError
from landscape.models.checkpoint import load_checkpoint, safe_load

CONTROL = textwrap.dedent("""
    import sys, torch
    torch.load(sys.argv[1], weights_only=False)       # what an unsafe loader would do
""")


@pytest.fixture(scope="module")
def refused(tmp_path_factory, dataset, training, crafted, server):
    """Every CLI entry point run on an evil file, all at once; then the payload's control run."""
    root = tmp_path_factory.mktemp("untrusted")
    resume_sweep = root / "resume"                       # an interrupted run whose resume point is evil
    shutil.copytree(training.ref, resume_sweep)
    (resume_sweep / RUN / "final.json").unlink()
    shutil.copy(crafted.evil, resume_sweep / RUN / "train_state.pt")
    report_sweep = root / "report"                       # a finished run whose best.pt is evil
    shutil.copytree(training.ref, report_sweep)
    shutil.copy(crafted.evil, report_sweep / RUN / "best.pt")
    cases = {
        "hessian": [*HESSIAN, crafted.evil],
        "sharpness": [*SHARPNESS, crafted.evil_raw],
        "surface": [*SURFACE, crafted.evil],
        "interpolate": ["analyze", "interpolate", training.ref_run, crafted.evil, "--samples", "8",
                        "--device", "cpu", "--out", root / "interp"],
        "train_resume": train_args(dataset, resume_sweep),
        "report": ["report", report_sweep, "--out", root / "report_out"],
    }
    results = run_all(server, {k: [str(a) for a in v] for k, v in cases.items()})
    marker_after_cli = crafted.marker.exists()
    return {"results": results, "marker_after_cli": marker_after_cli, "resume": resume_sweep / RUN,
            "report": report_sweep / RUN}


@pytest.mark.parametrize("entry", ["hessian", "sharpness", "surface", "interpolate", "train_resume", "report"])
def test_cli_refuses_pickled_code(refused, crafted, entry):
    res = refused["results"][entry]
    expected = {"sharpness": crafted.evil_raw, "train_resume": refused["resume"] / "train_state.pt",
                "report": refused["report"] / "best.pt"}.get(entry, crafted.evil)
    line = one_line_error(res, str(expected), "refused", "weights_only")
    if entry != "sharpness":                          # the zip format names the blocked import
        assert "posix.system" in line
    assert not refused["marker_after_cli"]


def test_library_loaders_refuse_pickled_code(crafted, training):
    for path in (crafted.evil, crafted.evil_raw):
        with pytest.raises(CheckpointError, match="refused"):
            safe_load(path)
        with pytest.raises(CheckpointError, match="refused"):
            load_checkpoint(path)
        with pytest.raises(CheckpointError, match="refused"):
            load_analysis_input(path, samples=4, batch_size=4, device="cpu")
        with pytest.raises(CheckpointError, match="refused"):
            safe_load(path, "training state")
    for fn in (safe_load, load_checkpoint):        # protocol 5: stopped at its first opcode, as corrupt
        with pytest.raises(CheckpointError, match=f"{crafted.evil_p5}: truncated or corrupt"):
            fn(crafted.evil_p5)
    assert not crafted.marker.exists()


def test_payload_is_live_control(crafted, server, tmp_path, refused, training):
    """Runs last in this module: the same file loaded unsafely does run the payload, so the
    absence of the marker above proves the refusals, not a dud payload."""
    assert not crafted.marker.exists()
    script = tmp_path / "control.py"
    script.write_text(CONTROL)
    res = server.run(str(crafted.evil), script=script, name="control")
    assert res.rc in (0, 1), res.describe()          # the payload runs during unpickling
    assert crafted.marker.exists()
    crafted.marker.unlink()
