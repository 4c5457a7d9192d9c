"""The CLI error contract, checked on plain ``python cli.py`` processes.

Every other module of this suite checks its CLI errors through the fork server (``cli_server``);
here the same calls run as ordinary ``python cli.py ...`` processes and must give the same exit
code and the same stderr, so the fork server changes nothing that is checked. ``--debug``
turns the one-line error into the full traceback.
"""
from __future__ import annotations

import pytest

from faultkit import HESSIAN, SHARPNESS, one_line_error, real_cli


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
