"""The CLI error contract, checked on plain ``python cli.py`` processes.

Every other module of this suite checks its CLI errors through the fork server (``cli_server``);
here the same calls run as ordinary ``python cli.py ...`` processes and must give the same exit
code and the same stderr, so the fork server changes nothing that is checked. ``--debug``
turns the one-line error into the full traceback.
"""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest
from faultkit import ENV, HESSIAN, REPO, SHARPNESS, one_line_error, real_cli, wait_for


@pytest.fixture(scope="module")
def both(tmp_path_factory, crafted, server):
    folder = tmp_path_factory.mktemp("contract")
    cases = {"evil": [*HESSIAN, crafted.evil], "evil_raw": [*SHARPNESS, crafted.evil_raw],
             "truncated": ["analyze", "surface", crafted.truncated, "--device", "cpu"],
             "debug": ["--debug", *HESSIAN, crafted.evil]}
    cases = {k: [str(a) for a in v] for k, v in cases.items()}
    real = {k: real_cli(folder, *v, name=k) for k, v in cases.items()}
    forked = {k: server.start(*v, name=f"contract-{k}") for k, v in cases.items()}
    return {k: j.wait() for k, j in real.items()}, {k: j.wait() for k, j in forked.items()}


@pytest.mark.parametrize("case", ["evil", "evil_raw", "truncated"])
def test_real_process_gives_one_line_error_identical_to_fork_server(both, crafted, case):
    real, forked = both
    path = getattr(crafted, case)
    line = one_line_error(real[case], str(path))
    assert real[case].rc == forked[case].rc == 2
    assert real[case].err_lines == forked[case].err_lines
    assert line == one_line_error(forked[case], str(path))


def test_debug_shows_the_traceback(both, crafted):
    for res in both:
        r = res["debug"]
        assert r.rc == 1, r.describe()
        assert "Traceback (most recent call last)" in r.err
        assert f"CheckpointError: {crafted.evil}: refused" in r.err
        assert not crafted.marker.exists()


# ----------------------------------------------------------------------------- parse time: choices, help, Ctrl-C
# These need no trained run: plain ``python cli.py`` / ``python -m landscape`` processes (the command line imports
# no torch before a command body runs) and one fork-server child for the SIGINT.

BAD_CHOICES = {   # argv -> what the one error line must name (the option, the bad value, the valid values)
    "subset": (["analyze", "hessian", "run", "--subset", "training"], ["--subset", "'training'", "'train', 'val', 'test'"]),
    "which": (["analyze", "hessian", "run", "--which", "LARGEST"], ["--which", "'LA', 'SA', 'LM'"]),
    "device": (["analyze", "sharpness", "run", "--device", "gpu"], ["--device", "'gpu'", "'cuda:N'"]),
    "checkpoint": (["analyze", "surface", "run", "--checkpoint", "worst"], ["--checkpoint", "'best', 'last', 'epoch_NNN'"]),
    "compile": (["analyze", "surface", "run", "--compile", "yes"], ["--compile", "'auto', 'on', 'off'"]),
    "surface-subset": (["analyze", "surface", "run", "--subset", "train,tset"], ["--subset", "'tset'"]),
    "measures": (["analyze", "sharpness", "run", "--measures", "keskar,hessian"], ["--measures", "'hessian'"]),
    "lr-scaling": (["train", "--lr-scaling", "sqrt,cubic"], ["--lr-scaling", "'cubic'", "'none', 'linear', 'sqrt'"]),
    "scheduler": (["train", "--scheduler", "linear"], ["--scheduler", "'cosine', 'step', 'none'"]),
    "format": (["data", "check", "root", "--format", "koniq"], ["--format", "'koniq10k'", "'pyiqa'"]),
    "model": (["plan", "--model", "huge"], ["--model", "'micro', 'micro_plain', 'tiny', 'small', 'base'"]),
}


@pytest.fixture(scope="module")
def parse_errors(tmp_path_factory):
    folder = tmp_path_factory.mktemp("choices")
    jobs = {k: real_cli(folder, *argv, name=k) for k, (argv, _) in BAD_CHOICES.items()}
    return {k: j.wait() for k, j in jobs.items()}


@pytest.mark.parametrize("case", sorted(BAD_CHOICES))
def test_invalid_choice_is_one_line_usage_error_listing_the_values(parse_errors, case):
    line = one_line_error(parse_errors[case], *BAD_CHOICES[case][1])
    assert "is not one of" in line and "--help" in line


def test_valid_open_forms_pass_parsing(tmp_path):
    """cuda:N and epoch_NNN are not enum values but valid: the command runs and fails on the missing run folder."""
    res = real_cli(tmp_path, "analyze", "hessian", tmp_path / "absent", "--device", "cuda:1",
                   "--checkpoint", "epoch_003", name="open").wait()
    one_line_error(res, "absent", "neither a sweep folder")


def test_help_shows_defaults_and_readable_metavars(tmp_path):
    jobs = {k: real_cli(tmp_path, *argv, name=k) for k, argv in
            {"hessian": ["analyze", "hessian", "--help"], "train": ["train", "--help"], "root": ["--help"]}.items()}
    res = {k: j.wait() for k, j in jobs.items()}
    for r in res.values():
        assert r.rc == 0 and not r.err, r.describe()
        assert "<list[" not in r.out and "<bool>" not in r.out, r.describe()
    hessian = " ".join(res["hessian"].out.split())     # help text is wrapped at 80 columns
    for needle in ("[default: train]", "[default: auto]", "[default: best]", "[default: LA]", "[default: hutch++]",
                   "--subset <train|val|test>", "auto|cpu|cuda|cuda:N|mps", "RUNS Run folders"):
        assert needle in hessian, needle
    train = " ".join(res["train"].out.split())
    for needle in ("[default: (micro)]", "[default: (auto)]", "[default: (sqrt)]", "[default: (cosine)]",
                   "--model <micro|micro_plain|tiny|small|base|timm:NAME>"):
        assert needle in train, needle
    assert "[default: (torch default)" in " ".join(res["root"].out.split())


def test_python_dash_m_landscape(tmp_path):
    res = subprocess.run([sys.executable, "-m", "landscape", "analyze", "--help"], cwd=REPO, env=ENV,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Usage: landscape analyze") and "hessian" in res.stdout


def test_command_line_imports_no_torch_before_a_command_runs(tmp_path):
    code = ("import sys, cli; heavy = [m for m in ('torch', 'timm', 'h5py', 'matplotlib', 'numpy') if m in sys.modules]; "
            "print(heavy)")
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip() == "[]", res.stdout + res.stderr


SLOW_REPORT = '''
import faulthandler, signal, sys, time
import landscape.report.build as build

faulthandler.register(signal.SIGUSR1, all_threads=True)   # the test's diagnosis if Ctrl-C ever hangs
# what a command started from a terminal has: a suite run in the background (``cmd &`` in a script)
# starts every process with SIGINT ignored, where no Ctrl-C can reach the CLI at all
signal.signal(signal.SIGINT, signal.default_int_handler)

def _forever(*args, **kwargs):
    print("inside the command", flush=True)
    time.sleep(300)

build.build_report = _forever
import cli
cli.main(["report", sys.argv[1]])
'''


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path, server):
    from landscape.cli.app import INTERRUPTED

    script = tmp_path / "slow_report.py"
    script.write_text(SLOW_REPORT)
    job = server.start(str(tmp_path / "sweep"), script=script, name="sigint")
    out = job.prefix.parent / (job.prefix.name + ".out")
    wait_for(lambda: out.exists() and "inside the command" in out.read_text(), "the command to start", job)
    job.send(signal.SIGINT)
    try:
        wait_for(lambda: not job.running(), "the interrupted command to exit", timeout=60, every=0.05)
    except AssertionError:
        job.send(signal.SIGUSR1)                                  # dump every thread's stack to stderr
        time.sleep(2)
        err = job.prefix.parent / (job.prefix.name + ".err")
        job.kill()
        raise AssertionError("Ctrl-C did not end the command within 60 s; its stacks:\n" + err.read_text()) from None
    res = job.wait(timeout=60)
    assert res.rc == 130, res.describe()
    assert res.err_lines == [INTERRUPTED], res.describe()
