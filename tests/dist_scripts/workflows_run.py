"""The analysis workflows (``landscape analyze ...``) on a trained run under torchrun (tests/test_distributed.py).

``python -m torch.distributed.run --nproc_per_node 2 workflows_run.py RUN OUT``: first the
analyzers on a tiny model (``analyzers.main(OUT / "tiny")``, one launch for both), then the
Hessian, a sharpness measure and a 3 x 3 loss surface of RUN, each data- or cell-parallel
over the ranks; every rank writes what it got to ``OUT/rank<r>.json``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

OPTS = dict(samples=8, batch_size=4, seed=0, which="last", device="cpu")
HESSIAN = dict(top_k=1, tol=1e-2, max_iter=40, trace=True, trace_method="hutchinson", trace_matvecs=4)
GRID = "-1:1:3"


def main(run: Path, out: Path) -> None:
    import analyzers  # beside this script (sys.path[0])
    import torch

    from landscape import distributed as dist
    from landscape import sharpness as S
    from landscape.analyze import jobs as workflows

    torch.set_num_threads(1)
    analyzers.main(out / "tiny")
    one = workflows.AnalysisOptions(subsets=("train",), **OPTS)
    rows = workflows.hessian([run], one, **HESSIAN)
    sharp = workflows.sharpness([run], one, measures=["keskar"], eps=[1e-3], keskar_spaces=["random"],
                                keskar=S.KeskarConfig(maxiter=2))
    two = workflows.AnalysisOptions(subsets=("train", "test"), **OPTS)
    res = workflows.surface(run, two, grid=GRID, plots=False, progress=False)
    (out / f"rank{dist.rank()}.json").write_text(json.dumps({
        "world": dist.world_size(), "hessian": rows, "sharpness": sharp, "surface_path": str(res.path),
        "computed_now": res.computed_now, "done": int(res.done.sum())}))


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
