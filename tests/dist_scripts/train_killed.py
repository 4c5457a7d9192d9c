"""Start a sweep member under torchrun and kill it after its first epoch (tests/test_distributed.py).

``python -m torch.distributed.run --nproc_per_node 2 train_killed.py CONFIG.json OUT INDEX``:
trains sweep member INDEX of CONFIG into OUT exactly as ``landscape train --config CONFIG
--out OUT --only INDEX`` would, and raises on rank 0 once epoch 0 is stored (the other
rank is then stopped by torchrun): a job killed mid-run, to be resumed by the CLI.
"""
from __future__ import annotations

import sys
from pathlib import Path


class Killed(RuntimeError):
    pass


def main(config: Path, out: Path, index: int) -> None:
    from landscape import distributed as dist
    from landscape.train.config import load_config_file, resolve_config
    from landscape.train.sweep import expand_sweep, prepare_output
    from landscape.train.trainer import train_run

    cfg = resolve_config(load_config_file(config), {})
    dist.init_from_env(cfg.device)
    prepare_output(cfg, out)
    spec = expand_sweep(cfg)[index]

    def kill_after_first_epoch(info: dict) -> None:
        if info.get("done") and info["epoch"] == 0:
            raise Killed("simulated kill after epoch 0")

    train_run(cfg, spec, out / spec.name, progress=kill_after_first_epoch)


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
