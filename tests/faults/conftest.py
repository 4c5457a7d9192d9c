"""Session fixtures of the fault suite (helpers in ``faultkit``)."""
from __future__ import annotations

import json
import signal
import time

import h5py
import pytest
import torch
from faultkit import (
    COMMANDS,
    RUN,
    SEQUENCE,
    TIMEOUT,
    Analyses,
    Crafted,
    Evil,
    Server,
    Training,
    copy_run,
    hessian_parts,
    real_cli,
    sharpness_parts,
    surface_done,
    surface_file,
    train_args,
    wait_for,
)

from landscape.provenance import sha256_file


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("cli"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def dataset(tmp_path_factory):
    from landscape.data import generate_synthetic

    return generate_synthetic(tmp_path_factory.mktemp("data") / "synthetic", n_references=9, size=72)


@pytest.fixture(scope="session")
def training(tmp_path_factory, dataset, server) -> Training:
    """Reference sweep and a sweep SIGKILLed after its first complete epoch, then resumed."""
    root = tmp_path_factory.mktemp("train")
    logs = root / "logs"
    ref = real_cli(logs, *train_args(dataset, root / "ref"), name="ref")
    victim = real_cli(logs, *train_args(dataset, root / "killed"), name="victim")
    state = root / "killed" / RUN / "train_state.pt"
    wait_for(state.exists, "the first epoch's train_state.pt", victim)
    killed = victim.kill()
    run_dir = root / "killed" / RUN
    log = (run_dir / "log.jsonl").read_text().splitlines() if (run_dir / "log.jsonl").exists() else []
    files = sorted(p.name for p in run_dir.iterdir())
    loads, shas = {}, {}
    for p in sorted(run_dir.glob("*.pt")):
        try:
            torch.load(p, map_location="cpu", weights_only=True)
            loads[p.name] = "ok"
        except Exception as e:  # noqa: BLE001 - recorded for the test to report
            loads[p.name] = f"{type(e).__name__}: {e}"
        shas[p.name] = sha256_file(p)
    resume = real_cli(logs, *train_args(dataset, root / "killed"), name="resume").wait()
    ref_result = ref.wait()
    assert ref_result.rc == 0, ref_result.describe()
    return Training(root / "ref", root / "killed", len(log), files, loads, shas, killed, resume, ref_result)


@pytest.fixture(scope="session")
def analyses(tmp_path_factory, training, server) -> Analyses:
    """Each analysis (Hessian, sharpness, surface grid) of a copy of the reference run is started
    by the CLI, frozen (SIGSTOP) as soon as its first part (surface: first 16 cells) is on disk,
    challenged by a second process running the same command, SIGKILLed, and resumed; one
    uninterrupted process runs all three on another copy."""
    root = tmp_path_factory.mktemp("analysis")
    ref = copy_run(training.ref_run, root / "ref" / RUN)
    runs = {name: copy_run(training.ref_run, root / name / RUN) for name in COMMANDS}
    script = root / "sequence.py"
    script.write_text(SEQUENCE)
    ref_job = server.start(json.dumps([[*cmd, str(ref)] for cmd in COMMANDS.values()]), script=script, name="ref")
    victims = {name: server.start(*cmd, str(runs[name]), name=f"victim-{name}") for name, cmd in COMMANDS.items()}
    h5 = {name: runs[name] / "analysis.h5" for name in ("hessian", "sharpness")}
    ready = {"hessian": lambda: hessian_parts(h5["hessian"]),
             "sharpness": lambda: sharpness_parts(h5["sharpness"]),
             "surface": lambda: surface_done(runs["surface"]) >= 16}
    pending = dict(victims)
    t0 = time.monotonic()
    while pending:                                   # freeze each victim once its first part is stored
        for name, job in list(pending.items()):
            if ready[name]():
                job.send(signal.SIGSTOP)
                del pending[name]
            elif not job.running():
                raise AssertionError(f"{name} ended before it was frozen:\n{job.wait().describe()}")
        assert time.monotonic() - t0 < TIMEOUT, "victims never stored a part"
        time.sleep(0.01)
    files = {**h5, "surface": surface_file(runs["surface"])}
    at_kill = {"hessian": hessian_parts(h5["hessian"]), "sharpness": sharpness_parts(h5["sharpness"]),
               "surface": surface_done(runs["surface"])}
    with h5py.File(h5["hessian"], "r") as f:
        attrs_at_kill = {p: dict(f[f"hessian/{p}"].attrs) for p in at_kill["hessian"]}
    sha = {name: sha256_file(p) for name, p in files.items()}
    contenders = {name: server.start(*cmd, str(runs[name]), name=f"contender-{name}")
                  for name, cmd in COMMANDS.items()}
    contenders = {name: job.wait() for name, job in contenders.items()}
    sha_after = {name: sha256_file(p) for name, p in files.items()}
    killed = {name: job.kill() for name, job in victims.items()}
    resumed = {name: server.start(*cmd, str(runs[name]), name=f"resume-{name}") for name, cmd in COMMANDS.items()}
    resumed = {name: job.wait() for name, job in resumed.items()}
    ref_result = ref_job.wait()
    assert ref_result.rc == 0, ref_result.describe()
    return Analyses(ref, runs, at_kill, attrs_at_kill, sha, killed, contenders, sha_after, resumed, ref_result)


@pytest.fixture(scope="session")
def crafted(tmp_path_factory, training) -> Crafted:
    import pickle

    from landscape.models import SwinIQAConfig, create_model
    from landscape.models.checkpoint import FORMAT, build_model, load_checkpoint, save_checkpoint

    d = tmp_path_factory.mktemp("crafted")
    best = training.ref_run / "best.pt"
    raw = best.read_bytes()
    marker = d / "PAYLOAD_RAN"
    evil = d / "evil.pt"
    torch.save({"format": FORMAT, "model_config": {}, "state_dict": {"w": Evil(marker)}, "content_hash": "0"}, evil)
    evil_raw = d / "evil_raw.pt"
    evil_raw.write_bytes(pickle.dumps({"state_dict": Evil(marker)}, protocol=2))
    (d / "evil_p5.pt").write_bytes(pickle.dumps({"state_dict": Evil(marker)}, protocol=5))
    (d / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    flipped = bytearray(raw)
    mid = len(raw) // 2
    flipped[mid:mid + 64] = bytes(b ^ 0xFF for b in flipped[mid:mid + 64])
    (d / "corrupt.pt").write_bytes(bytes(flipped))
    (d / "empty.pt").write_bytes(b"")
    ck = load_checkpoint(best)
    other = SwinIQAConfig.from_dict({**ck.model_config, "embed_dim": 48, "depths": [2, 1]})
    torch.manual_seed(0)
    save_checkpoint(d / "other_arch.pt", create_model(other), ck.model_config, ck.meta)
    for name, value in (("nan", float("nan")), ("inf", float("inf"))):
        model = build_model(ck)
        with torch.no_grad():
            dict(model.named_parameters())["head.4.weight"][0, 0] = value
        save_checkpoint(d / f"{name}.pt", model, ck.model_config, ck.meta)
    assert not marker.exists()
    return Crafted(d, marker, evil, evil_raw, d / "evil_p5.pt", d / "truncated.pt", d / "corrupt.pt", d / "empty.pt",
                   d / "other_arch.pt", d / "nan.pt", d / "inf.pt")
