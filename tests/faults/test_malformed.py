"""Malformed inputs that load safely: checkpoint configs, resume states, HDF5 results, edited JSON,
OS errors and out-of-range options. Each ends in one line naming the file or value and the
problem, exit code 2, no traceback, and no input file changed or deleted.

One tiny run (micro model, 2 epochs) is trained by the CLI; its Hessian and surface analyses
are run once; then every case is a copy of those files with one defect, all run at once
through the fork server (real processes, real files).
"""
from __future__ import annotations

import json
import shutil
import textwrap

import h5py
import numpy as np
import pytest
import torch
from faultkit import RUN, copy_run, one_line_error, run_all, train_args

from landscape.provenance import sha256_file

HESSIAN = ["analyze", "hessian", "--samples", "8", "--batch-size", "8", "--top-k", "1", "--trace-matvecs", "4",
           "--device", "cpu"]
SURFACE = ["analyze", "surface", "--grid", "-1:1:3", "--samples", "8", "--batch-size", "8", "--no-plots",
           "--device", "cpu"]

CKPT_CASES = {   # name -> (edit of the payload, needle of the error line)
    "no_depths": (lambda p: p["model_config"].pop("depths"), "lacks required key 'depths'"),
    "img_abc": (lambda p: p["model_config"].update(img_size="abc"), "img_size='abc'"),
    "config_list": (lambda p: p.update(model_config=[1, 2]), "model_config is list"),
    "state_list": (lambda p: p.update(state_dict=[1, 2]), "state_dict is list"),
    "embed_huge": (lambda p: p["model_config"].update(embed_dim=2 ** 22), "between 1 and 4096"),
    "params_huge": (lambda p: p["model_config"].update(embed_dim=4096, depths=[2, 2, 18, 2], num_heads=[4, 8, 16, 32]),
                    "the limit is 1e+09"),
    "alpha_str": (lambda p: p["meta"]["config"].update(ranking_alpha="lots"), "ranking_alpha='lots'"),
    "extra_arch": (lambda p: p["model_config"].update(extra={"in_chans": 1}), "extra key 'in_chans' is not allowed"),
    "extra_file": (lambda p: p["model_config"].update(extra={"pretrained_cfg_overlay": {"file": "/x.pt"}}),
                   "extra key 'pretrained_cfg_overlay'"),
    "timm_kwargs_file": (lambda p: p.update(model_config={"family": "timm", "img_size": 64, "score_range": [0, 1],
                                                          "timm": {"name": "x", "head": "own",
                                                                   "kwargs": {"checkpoint_path": "/x.pt"}}}),
                         "timm.kwargs key 'checkpoint_path' is refused"),
}
STATE_CASES = {
    "epoch_abc": (lambda s: s.update(epoch="abc"), "epoch='abc'"),
    "state_is_list": (lambda s: [1, 2], "training state is list"),
    "no_optimizer": (lambda s: s.pop("optimizer"), "lacks 'optimizer'"),
    "format_v9": (lambda s: s.update(format="landscape-train-state-v9"), "'landscape-train-state-v9' is not"),
}
ENOSPC = textwrap.dedent('''
    import errno, pathlib, sys
    import cli
    def full(self, *a, **k):
        with open(self, "w") as fh:
            fh.write("partial")                           # something was written, then the disk filled
        raise OSError(errno.ENOSPC, "No space left on device", str(self))
    pathlib.Path.write_text = full
    cli.main(sys.argv[1:])
''')


def _sha(folder):
    return {str(p): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and not p.name.endswith(".lock")}


@pytest.fixture(scope="module")
def bad(tmp_path_factory, dataset, server):
    root = tmp_path_factory.mktemp("malformed")
    train = [a if a != "3" else "2" for a in train_args(dataset, root / "sweep")]   # --epochs 2
    res = server.run(*train, name="train")
    assert res.rc == 0, res.describe()
    sweep, run = root / "sweep", root / "sweep" / RUN
    # the analyses key their parts by the checkpoint's path: analyse each folder where it will be edited
    h, e, t, d = (copy_run(run, root / name / RUN).parent for name in ("h5_bytes", "h5_empty", "h5_trace", "h5_done"))
    done = run_all(server, {"bytes": [*HESSIAN, h / RUN], "empty": [*HESSIAN, e / RUN], "trace": [*HESSIAN, t / RUN],
                            "surface": [*SURFACE, d / RUN]})
    assert all(r.rc == 0 for r in done.values()), [r.describe() for r in done.values()]
    cases: dict[str, list] = {}
    expect: dict[str, tuple[str, ...]] = {}
    best = torch.load(run / "best.pt", weights_only=True)
    for name, (edit, needle) in CKPT_CASES.items():
        payload = {**best, "model_config": dict(best["model_config"]), "meta": {**best["meta"],
                                                                                "config": dict(best["meta"]["config"])}}
        edit(payload)
        path = root / f"ck_{name}.pt"
        torch.save(payload, path)
        cases[f"ck_{name}"], expect[f"ck_{name}"] = [*HESSIAN, path], (str(path), needle)
    state = torch.load(run / "train_state.pt", weights_only=True)
    for name, (edit, needle) in STATE_CASES.items():
        folder = root / f"st_{name}"
        shutil.copytree(sweep, folder)
        (folder / RUN / "final.json").unlink()
        s = dict(state)
        out = edit(s)
        torch.save(out if isinstance(out, list) else s, folder / RUN / "train_state.pt")
        cases[f"st_{name}"] = [a if a != str(sweep) else str(folder) for a in train]
        expect[f"st_{name}"] = (str(folder / RUN / "train_state.pt"), needle)
    # HDF5 results of the wrong type or shape
    with h5py.File(h / RUN / "analysis.h5", "a") as f:
        del f["hessian/topk/eigenvalues"]
        f["hessian/topk/eigenvalues"] = np.void(b"\x00\x01")
    cases["h5_eig_bytes"], expect["h5_eig_bytes"] = [*HESSIAN, h / RUN], (str(h / RUN / "analysis.h5"), "eigenvalues")
    with h5py.File(e / RUN / "analysis.h5", "a") as f:
        del f["hessian/topk/eigenvalues"]
        f["hessian/topk/eigenvalues"] = np.zeros(0)
    cases["h5_eig_empty"], expect["h5_eig_empty"] = [*HESSIAN, e / RUN], ("eigenvalues is float64 array of shape (0,)",)
    with h5py.File(t / RUN / "analysis.h5", "a") as f:
        f["hessian/trace"].attrs["trace"] = "big"
    cases["h5_trace_str"], expect["h5_trace_str"] = [*HESSIAN, t / RUN], ("hessian/trace/trace is str 'big'",)
    surf = next((d / RUN).glob("surface-*.h5"))
    with h5py.File(surf, "a") as f:
        del f["done"]
        f["done"] = np.zeros((2, 2), dtype=np.uint8)
    cases["h5_done_shape"], expect["h5_done_shape"] = [*SURFACE, d / RUN], (str(surf), "done is uint8 array of shape (2, 2)")
    # edited JSON, read by report
    def edited(name, rel, change, needle):
        folder = root / f"js_{name}"
        shutil.copytree(sweep, folder)
        target = folder / rel
        if target.suffix == ".jsonl":
            target.write_text(target.read_text() + "{broken\n")
        else:
            target.write_text(json.dumps(change(json.loads(target.read_text()))))
        cases[f"js_{name}"] = ["report", folder, "--out", root / f"rep_{name}", "--n-boot", "2000"]
        expect[f"js_{name}"] = (str(target), needle)

    edited("no_runs", "sweep.json", lambda j: {k: v for k, v in j.items() if k != "runs"}, "lacks the key 'runs'")
    edited("runs_str", "sweep.json", lambda j: {**j, "runs": [r["name"] for r in j["runs"]]}, "runs[0] is")
    edited("no_status", f"{RUN}/final.json", lambda j: {k: v for k, v in j.items() if k != "status"}, "'status'")
    edited("peak_str", f"{RUN}/final.json",
           lambda j: {**j, "metrics": {**j["metrics"], "peak_memory_bytes": "lots"}}, "'peak_memory_bytes' is 'lots'")
    edited("no_batch", f"{RUN}/config.json", lambda j: {k: v for k, v in j.items() if k != "batch_size"},
           "lacks the key 'batch_size'")
    edited("log_broken", f"{RUN}/log.jsonl", None, "line 3 is not valid JSON")
    latin = root / "latin1.yaml"
    latin.write_bytes("dataset: synthetic:caf\xe9\n".encode("latin-1"))
    cases["cfg_latin1"], expect["cfg_latin1"] = ["train", "--config", latin, "--out", root / "o_latin"], \
        (str(latin), "not UTF-8")
    eight = root / "eight.yaml"
    eight.write_text("dataset: synthetic:x\nseeds: [eight]\n")
    cases["cfg_list_type"], expect["cfg_list_type"] = ["train", "--config", eight, "--out", root / "o_eight"], \
        ("'seeds': expected list[int], got list ['eight']",)
    # OS errors
    afile = root / "a_file"
    afile.write_text("keep me\n")
    cases["out_is_file"] = ["report", sweep, "--out", afile / "report"]
    expect["out_is_file"] = (str(afile), "Not a directory")
    # bounds
    cases["seed_neg"] = [*train[:train.index("--seeds") + 1], "-1", *train[train.index("--seeds") + 2:-1],
                         root / "o_seed_neg"]
    expect["seed_neg"] = ("seed=-1", "between 0 and 9223372036854775807")
    cases["seed_big"] = [*cases["seed_neg"][:-1], root / "o_seed_big"]
    cases["seed_big"][cases["seed_big"].index("-1")] = str(2 ** 63)
    expect["seed_big"] = (f"seed={2 ** 63}", "between 0 and 9223372036854775807")
    cases["grid_huge"] = [*SURFACE[:3], "-1:1:200000", *SURFACE[4:], root / "bounds" / RUN]
    copy_run(run, root / "bounds" / RUN)
    expect["grid_huge"] = ("-1:1:200000", "between 1 and 1001")
    cases["traj_num0"] = ["analyze", "trajectory", "--num", "0", "--device", "cpu", root / "bounds" / RUN]
    expect["traj_num0"] = ("--num=0", "between 2 and 1001")
    before = _sha(root)
    script = root / "enospc.py"
    script.write_text(ENOSPC)
    jobs = {name: server.start(*map(str, argv), name=name) for name, argv in cases.items()}
    jobs["enospc"] = server.start("report", str(sweep), "--out", str(root / "rep_full"), script=script, name="enospc")
    results = {name: job.wait() for name, job in jobs.items()}
    return {"root": root, "r": results, "expect": expect, "before": before, "after": _sha(root)}


def _check(bad, name):
    return one_line_error(bad["r"][name], *map(str, bad["expect"][name]))


@pytest.mark.parametrize("name", list(CKPT_CASES))
def test_malformed_checkpoint_configs_are_refused_before_building(bad, name):
    _check(bad, f"ck_{name}")


@pytest.mark.parametrize("name", list(STATE_CASES))
def test_malformed_train_state_is_refused_on_resume(bad, name):
    _check(bad, f"st_{name}")


@pytest.mark.parametrize("name", ["h5_eig_bytes", "h5_eig_empty", "h5_trace_str", "h5_done_shape"])
def test_hdf5_results_of_wrong_type_or_shape_are_refused(bad, name):
    _check(bad, name)


@pytest.mark.parametrize("name", ["no_runs", "runs_str", "no_status", "peak_str", "no_batch", "log_broken"])
def test_edited_json_is_refused(bad, name):
    _check(bad, f"js_{name}")
    assert not (bad["root"] / f"rep_{name}" / "index.html").exists()


@pytest.mark.parametrize("name", ["cfg_latin1", "cfg_list_type"])
def test_bad_config_files_are_one_line(bad, name):
    _check(bad, name)


@pytest.mark.parametrize("name", ["seed_neg", "seed_big", "grid_huge", "traj_num0"])
def test_out_of_range_options_state_the_limit_before_writing(bad, name):
    _check(bad, name)
    for out in ("o_seed_neg", "o_seed_big"):
        assert not (bad["root"] / out).exists()


def test_os_errors_are_one_line_naming_the_path(bad):
    _check(bad, "out_is_file")
    line = one_line_error(bad["r"]["enospc"], "No space left on device")
    assert str(bad["root"] / "rep_full") in line
    assert not list((bad["root"] / "rep_full").rglob("*.tmp")), "temp files of the failed write were left behind"


def test_no_input_file_was_changed_or_deleted(bad):
    # the trainer rewrites a run's config.json/dataset.json (fresh provenance) before it reads the resume point
    rewritten = ("config.json", "dataset.json")
    changed = [p for p, sha in bad["before"].items() if bad["after"].get(p) != sha
               and not ("/st_" in p and p.endswith(rewritten) and p in bad["after"])]
    assert not changed, changed
