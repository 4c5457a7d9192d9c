"""Training, real processes: a second ``train`` on the same ``--out`` stops at once, and a bad
``--pretrained`` file is refused in one line before anything is written."""
from __future__ import annotations

import torch
from faultkit import RUN, one_line_error, train_args, wait_for


def test_second_train_on_the_same_out_stops_at_once(tmp_path, server, dataset):
    out = tmp_path / "sweep"
    first = server.start(*train_args(dataset, out), name="train-first")
    wait_for((out / RUN / "config.json").exists, "the first trainer's config.json", first)
    second = server.run(*train_args(dataset, out), name="train-second")
    line = one_line_error(second, str(out), "in use by another training process (pid ")
    assert f"(pid {first.pid})" in line, line
    done = first.wait()
    assert done.rc == 0, done.describe()
    assert (out / RUN / "final.json").exists()


def test_pretrained_file_matching_nothing_is_refused_before_writing(tmp_path, server, dataset):
    weights = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(4, 4)}, weights)
    out = tmp_path / "sweep"
    res = server.run(*train_args(dataset, out, "--pretrained", str(weights)), name="bad-pretrained")
    one_line_error(res, str(weights), "no key matches the SwinTransformer backbone", "refusing to train from random init")
    assert not out.exists()
