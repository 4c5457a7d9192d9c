import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models: one thread avoids OpenMP sync overhead


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test runs with one torch thread (a CLI call with ``--threads`` may have changed
    it): two threads on a 2-core machine shared with other jobs make tiny kernels stall on OpenMP
    sync (a micro-Swin step went from 0.07 s to 3.5 s), and the planner's timings with them."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
