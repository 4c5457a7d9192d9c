"""Fork server of the fault suite: import the heavy modules once, run each CLI call in a fresh child.

Starting ``python cli.py`` costs several seconds of imports (torch, timm, torchvision) on a busy
2-core machine, and the fault suite makes dozens of calls. This server (started with
``sys.executable`` in the repository root, ``OMP_NUM_THREADS=1``) imports those modules, then
for every request forks a child process that runs ``cli.py`` as ``__main__`` with the requested
arguments -- exactly what ``python cli.py ARGS`` runs after its imports -- or a given script.
Each child is a real process: it can be killed by a signal, holds its own file locks, and
exits with the code ``cli.main`` chose (an uncaught exception prints its traceback and exits 1,
as the interpreter would).

Protocol on stdin/stdout, one JSON object per line: the server prints ``{"ready": pid}``;
a request ``{"argv": [...], "prefix": "/path/name", "script": optional path}`` is answered
``{"pid": child_pid}``. The child writes its stdout/stderr to ``PREFIX.out``/``PREFIX.err`` and,
when it exits by itself, its exit code to ``PREFIX.rc`` (a child killed by a signal leaves
none). Children are reaped automatically (SIGCHLD ignored in the server).
"""
from __future__ import annotations

import json
import os
import runpy
import signal
import sys
import warnings

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _child(req: dict) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    prefix = req["prefix"]
    for fd, suffix in ((1, ".out"), (2, ".err")):
        f = os.open(prefix + suffix, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    sys.stdin = open(os.devnull)
    os.environ.update(req.get("env", {}))
    warnings.resetwarnings()          # a fresh interpreter shows each warning again
    script = req.get("script") or os.path.join(REPO, "cli.py")
    sys.argv = [script, *req["argv"]]
    code = 0
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        if e.code is None:
            code = 0
        elif isinstance(e.code, int):
            code = e.code
        else:
            print(e.code, file=sys.stderr)
            code = 1
    except BaseException:
        sys.excepthook(*sys.exc_info())
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        with open(prefix + ".rc.tmp", "w") as f:
            f.write(str(code))
        os.replace(prefix + ".rc.tmp", prefix + ".rc")
        os._exit(code)


def main() -> None:
    os.chdir(REPO)
    sys.path.insert(0, REPO)
    import h5py  # noqa: F401
    import matplotlib  # noqa: F401
    import timm  # noqa: F401
    import torch  # noqa: F401
    import typer  # noqa: F401

    import landscape.analyze.jobs  # noqa: F401
    import landscape.hessian  # noqa: F401
    import landscape.models.checkpoint  # noqa: F401
    import landscape.report.build  # noqa: F401
    import landscape.sharpness  # noqa: F401
    import landscape.surface  # noqa: F401
    import landscape.train.sweep  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        req = json.loads(line)
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(req)
        print(json.dumps({"pid": pid}), flush=True)


if __name__ == "__main__":
    main()
