"""Device-level helpers: device resolution, out-of-memory detection, freeing, limits and peak memory (bytes).

- :func:`resolve_device` turns ``auto``/``cpu``/``cuda[:N]`` into a ``torch.device``.
- :func:`is_oom` classifies an exception as out-of-memory (CUDA or host allocator).
- :func:`free_memory` collects garbage, empties the CUDA cache and returns freed heap
  pages to the OS (glibc ``malloc_trim``), so the next peak measures only the next step.
- :func:`default_memory_limit` is the GPU's total memory on CUDA; on CPU the memory this
  process can use now, ``current RSS + MemAvailable`` (``/proc/meminfo``; ``sysconf``
  elsewhere).
- Peak memory (:func:`reset_peak`, :func:`peak_bytes`, :func:`memory_kind`): CUDA max
  allocated on GPU, the process's peak RSS (``VmHWM``) on CPU. On Linux ``VmHWM`` is reset
  by writing ``5`` to ``/proc/self/clear_refs``, so a peak can be measured per run or per
  batch size; where that is impossible the reading is the process-lifetime peak
  (:func:`reset_peak` returns False).
"""
from __future__ import annotations

import ctypes
import gc
import os
import resource
from pathlib import Path

import torch

from landscape.errors import LandscapeError

# ------------------------------------------------------------------ out of memory


def is_oom(error: BaseException) -> bool:
    """True for CUDA/CPU out-of-memory errors (``torch.OutOfMemoryError``, ``MemoryError``,
    a RuntimeError saying "out of memory" or the CPU allocator's "can't allocate memory")."""
    if isinstance(error, (MemoryError, torch.cuda.OutOfMemoryError)):
        return True
    text = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def trim_host_memory() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``), so peak RSS measures this step."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def free_memory(device: torch.device | str | None = None) -> None:
    """Collect garbage, empty the CUDA cache (on CUDA, or when ``device`` is None) and trim the host heap."""
    gc.collect()
    if torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        torch.cuda.empty_cache()
    trim_host_memory()


# ------------------------------------------------------------------ limits


def _proc_status_bytes(field: str) -> int | None:
    """A ``kB`` field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``) in bytes; None if unreadable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _rss_bytes() -> int:
    """Current resident set size of this process (bytes; 0 where ``/proc`` is missing)."""
    return _proc_status_bytes("VmRSS") or 0


def default_memory_limit(device: torch.device | str) -> tuple[int, str]:
    """``(bytes, source)``: the GPU's total memory on CUDA; on CPU the memory available to this
    process now, ``current RSS + MemAvailable`` (``/proc/meminfo``; ``sysconf`` elsewhere)."""
    device = torch.device(device)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        return int(props.total_memory), f"total memory of {props.name}"
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    if available is None:
        available = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES")
    return _rss_bytes() + int(available), "process RSS + MemAvailable"


# ------------------------------------------------------------------ peak memory


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
    """Peak memory since the last :func:`reset_peak` (CUDA allocated, or process peak RSS)."""
    device = torch.device(device)
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    hwm = _proc_status_bytes("VmHWM")
    if hwm is not None:
        return hwm
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def memory_kind(device: torch.device | str) -> str:
    """What :func:`peak_bytes` reads: ``cuda_max_allocated`` on CUDA, ``peak_rss`` elsewhere."""
    return "cuda_max_allocated" if torch.device(device).type == "cuda" else "peak_rss"


# ------------------------------------------------------------------ device resolution


def resolve_device(name: str) -> torch.device:
    """``auto`` -> ``cuda`` when available, else ``cpu``; any other name as ``torch.device(name)``.

    An unparsable name, or a CUDA device without CUDA, is a one-line :class:`LandscapeError`.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LandscapeError(f"unknown device '{name}'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LandscapeError(f"device '{name}' requested but CUDA is not available")
    return device


__all__ = ["is_oom", "trim_host_memory", "free_memory", "default_memory_limit", "reset_peak", "peak_bytes",
           "memory_kind", "resolve_device"]
