"""Peak memory of a training step: CUDA max allocated on GPU, peak RSS on CPU (bytes).

On Linux the process's peak RSS (``VmHWM``) is reset by writing ``5`` to
``/proc/self/clear_refs``, so a peak can be measured per run or per batch size;
where that is impossible the reading is the process-lifetime peak (``resettable=False``).
"""
from __future__ import annotations

import resource
from pathlib import Path

import torch


def _read_vmhwm() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def reset_peak(device: torch.device | str) -> bool:
    """Reset the peak counter for ``device``; returns whether the reset took effect."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_bytes(device: torch.device | str) -> int:
    """Peak memory since the last :func:`reset_peak` (CUDA allocated, or process RSS)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    hwm = _read_vmhwm()
    if hwm is not None:
        return hwm
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def memory_kind(device: torch.device | str) -> str:
    return "cuda_max_allocated" if torch.device(device).type == "cuda" else "peak_rss"
