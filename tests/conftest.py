import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)  # tiny models: one thread avoids OpenMP sync overhead


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
