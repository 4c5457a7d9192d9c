"""Machinery of the fault suite (fixtures in ``conftest.py``): real processes, one-line-error checks.

- :class:`Server`: a fork server (``cli_server.py``) that runs ``cli.py`` (or a script) in a
  fresh child process per call without paying the torch/timm imports again; children are
  real processes (signals, locks, exit codes). ``real_cli`` starts ``python cli.py`` itself.
- :func:`one_line_error`: exactly one ``error:`` line on stderr (the last), the exit code, no
  traceback, no warnings.
- The CLI settings of the tiny training sweep and analyses, and what the session fixtures
  ``training``, ``analyses`` and ``crafted`` return (:class:`Training`, :class:`Analyses`,
  :class:`Crafted`).
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
       "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
RUN = "bs16_acc1_sqrt_seed0"
TIMEOUT = 400.0


# ----------------------------------------------------------------------------- processes

@dataclass
class Result:
    rc: int | None          # exit code; -N when killed by signal N; None when it vanished
    out: str
    err: str
    argv: list[str]

    def describe(self) -> str:
        return f"argv {self.argv}\nrc {self.rc}\n--- stdout\n{self.out[-3000:]}\n--- stderr\n{self.err[-3000:]}"

    @property
    def err_lines(self) -> list[str]:
        """stderr lines as a terminal shows them (a progress bar redraws a line with ``\\r``)."""
        lines = [ln.rsplit("\r", 1)[-1].strip() for ln in self.err.splitlines()]
        return [ln for ln in lines if ln]


@dataclass
class Job:
    """A running process started by the fork server or by ``subprocess``."""

    pid: int
    prefix: Path
    argv: list[str]
    popen: subprocess.Popen | None = None
    signalled: int | None = None
    _files: list = field(default_factory=list)

    def running(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        if (self.prefix.parent / (self.prefix.name + ".rc")).exists():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def send(self, sig: int) -> None:
        """Send ``sig`` to this process (only to it: its own pid)."""
        if sig in (signal.SIGKILL, signal.SIGTERM):
            self.signalled = sig
        os.kill(self.pid, sig)

    def kill(self) -> Result:
        """SIGKILL and wait until the process is gone."""
        self.send(signal.SIGKILL)
        return self.wait()

    def wait(self, timeout: float = TIMEOUT) -> Result:
        t0 = time.monotonic()
        while self.running():
            if time.monotonic() - t0 > timeout:
                self.send(signal.SIGKILL)
                raise AssertionError(f"timed out after {timeout:.0f} s: {self.argv}")
            time.sleep(0.02)
        if self.popen is not None:
            rc = self.popen.wait()
            for f in self._files:
                f.close()
        else:
            rc_file = self.prefix.parent / (self.prefix.name + ".rc")
            rc = int(rc_file.read_text()) if rc_file.exists() else (-self.signalled if self.signalled else None)
        read = lambda s: (self.prefix.parent / (self.prefix.name + s)).read_text(errors="replace")  # noqa: E731
        return Result(rc, read(".out"), read(".err"), self.argv)


class Server:
    """Client of ``cli_server.py`` (module docstring); started at once, ready on first use."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.n = 0
        self.proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("cli_server.py"))],
                                     cwd=REPO, env=ENV, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, bufsize=1)
        self.ready = False
        self.jobs: list[Job] = []

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"fork server exited with {self.proc.wait()}")
        return json.loads(line)

    def start(self, *argv: str, script: str | Path | None = None, name: str = "job") -> Job:
        if not self.ready:
            assert "ready" in self._reply()
            self.ready = True
        self.n += 1
        prefix = self.folder / f"{self.n:03d}-{name}"
        req = {"argv": [str(a) for a in argv], "prefix": str(prefix)}
        if script is not None:
            req["script"] = str(script)
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        job = Job(self._reply()["pid"], prefix, req["argv"])
        self.jobs.append(job)
        return job

    def run(self, *argv: str, **kw) -> Result:
        return self.start(*argv, **kw).wait()

    def close(self) -> None:
        for job in self.jobs:
            if job.running():
                job.send(signal.SIGKILL)
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def real_cli(folder: Path, *argv: str, name: str = "real") -> Job:
    """``python cli.py ARGV`` from the repository root, as a user runs it."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = folder / f"{name}-{time.monotonic_ns()}"
    out = open(prefix.parent / (prefix.name + ".out"), "w")
    err = open(prefix.parent / (prefix.name + ".err"), "w")
    cmd = [sys.executable, "cli.py", *map(str, argv)]
    p = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
    return Job(p.pid, prefix, cmd, popen=p, _files=[out, err])


def wait_for(condition, what: str, job: Job | None = None, timeout: float = TIMEOUT, every: float = 0.01):
    """Poll ``condition()`` until true; fail if ``job`` ends first or on timeout."""
    t0 = time.monotonic()
    while True:
        value = condition()
        if value:
            return value
        if job is not None and not job.running():
            raise AssertionError(f"process ended before {what}:\n{job.wait().describe()}")
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(every)


# ----------------------------------------------------------------------------- checks

def one_line_error(res: Result, *needles: str, rc: int = 2) -> str:
    """Assert the CLI failed cleanly: exit ``rc``, one ``error:`` line (the last line of stderr)
    containing every needle, no traceback and no warning anywhere. Returns the line."""
    lines = res.err_lines
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert res.rc == rc, res.describe()
    assert len(errors) == 1 and lines[-1] == errors[0], res.describe()
    text = res.out + res.err
    assert "Traceback" not in text and 'File "' not in text, res.describe()
    assert not [ln for ln in lines if "Warning" in ln], res.describe()
    for needle in needles:
        assert needle in errors[0], f"{needle!r} not in {errors[0]!r}"
    return errors[0]


def copy_run(src: Path, dst: Path, *, analyses: bool = False) -> Path:
    """Copy a run folder (config, checkpoints, final.json); analysis files only when asked."""
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.is_file() and (analyses or not p.name.endswith((".h5", ".lock"))):
            shutil.copy2(p, dst / p.name)
    return dst


def train_args(dataset: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--dataset", f"synthetic:{dataset}", "--model", "micro", "--batch-sizes", "16",
            "--seeds", "0", "--epochs", "3", "--patience", "0", "--train-patches", "1", "--test-patches", "1",
            "--train-eval-images", "16", "--lr", "1e-3", "--save-every", "1", "--device", "cpu",
            "--out", str(out), *extra]


@dataclass
class Training:
    ref: Path                       # reference sweep folder (uninterrupted)
    resumed: Path                   # sweep folder killed after its first epoch, then resumed
    epochs_at_kill: int             # lines of log.jsonl when the process was killed
    files_at_kill: list[str]        # the run folder's files then
    load_at_kill: dict[str, str]    # every *.pt then: "ok" or the error of torch.load(weights_only=True)
    sha_at_kill: dict[str, str]     # their SHA-256
    killed: Result
    resume: Result
    ref_result: Result

    @property
    def ref_run(self) -> Path:
        return self.ref / RUN


# ----------------------------------------------------------------------------- analyses

HESSIAN = ["analyze", "hessian", "--samples", "8", "--batch-size", "8", "--top-k", "1", "--trace-matvecs", "12",
           "--density", "--density-runs", "2", "--density-steps", "12", "--device", "cpu"]
SHARPNESS = ["analyze", "sharpness", "--samples", "8", "--batch-size", "8", "--m", "8",
             "--measures", "keskar,average", "--keskar-spaces", "random", "--eps", "1e-3,5e-4",
             "--rho-average", "0.1,0.2", "--device", "cpu"]
SURFACE = ["analyze", "surface", "--grid", "-1:1:7", "--samples", "8", "--batch-size", "8", "--no-plots",
           "--device", "cpu"]
COMMANDS = {"hessian": HESSIAN, "sharpness": SHARPNESS, "surface": SURFACE}
HESSIAN_PARTS = ("topk", "trace", "density")
N_SHARPNESS_PARTS = 4
N_CELLS = 49

SEQUENCE = '''
import json, sys
import cli
for argv in json.loads(sys.argv[1]):
    print("=== " + " ".join(argv[:2]), flush=True)
    try:
        cli.main(argv)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
'''


def hessian_parts(h5: Path) -> set[str]:
    import h5py

    if not h5.exists():
        return set()
    with h5py.File(h5, "r") as f:
        return {p for p in HESSIAN_PARTS if f"hessian/{p}" in f}


def sharpness_parts(h5: Path) -> set[str]:
    import h5py

    if not h5.exists():
        return set()
    with h5py.File(h5, "r") as f:
        root = f.get("sharpness")
        return set() if root is None else {f"{m}/{k}" for m in root for k in root[m]
                                           if root[m][k].attrs.get("complete", False)}


def surface_file(run_dir: Path) -> Path | None:
    found = sorted(run_dir.glob("surface-*.h5"))
    return found[0] if found else None


def surface_done(run_dir: Path) -> int:
    import h5py

    path = surface_file(run_dir)
    if path is None:
        return 0
    with h5py.File(path, "r") as f:
        return int(f["done"][()].sum())


@dataclass
class Analyses:
    """The three analyses of the reference run: uninterrupted (``ref``) and killed + resumed."""

    ref: Path                              # run folder analysed without interruption
    runs: dict[str, Path]                  # analyzer -> run folder analysed with a kill
    at_kill: dict[str, object]             # analyzer -> stored parts (hessian/sharpness) or done cells
    attrs_at_kill: dict[str, dict]         # hessian part -> its HDF5 attributes at the kill
    file_sha_at_kill: dict[str, str]
    killed: dict[str, Result]
    contenders: dict[str, Result]          # the same command started while the victim held the file
    file_sha_after_contender: dict[str, str]
    resumed: dict[str, Result]
    ref_result: Result


def run_all(server: Server, cases: dict[str, list[str]]) -> dict[str, Result]:
    """Start every CLI call at once (fork server), then wait for all: ``{name: Result}``."""
    jobs = {name: server.start(*argv, name=name) for name, argv in cases.items()}
    return {name: job.wait() for name, job in jobs.items()}


class Evil:
    """A pickle payload that runs ``touch MARKER`` when unpickled by plain ``pickle``/``torch.load``."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@dataclass
class Crafted:
    """Bad checkpoint files made from the reference run's best.pt (conftest ``crafted``)."""

    folder: Path
    marker: Path          # created if any payload ever runs
    evil: Path            # torch.save zip with an os.system payload inside the state dict
    evil_raw: Path        # a bare pickle (legacy format, protocol 2) of the payload
    evil_p5: Path         # the same with pickle protocol 5
    truncated: Path       # first half of best.pt
    corrupt: Path         # best.pt with 64 bytes flipped in the middle
    empty: Path
    other_arch: Path      # weights of another Swin (embed 48, depths 2,1) under the micro config
    nan: Path             # best.pt weights with one NaN
    inf: Path             # best.pt weights with one +inf
