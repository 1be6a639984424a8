"""What the CPU can do, for choosing speed knobs and for printing beside every speed figure."""
from __future__ import annotations

import os
from functools import lru_cache

# The flags that change which kernels torch/oneDNN and ONNX Runtime pick on x86.
SPEED_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "avx512_vnni", "avx_vnni")


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            line = next(line for line in cpuinfo if line.startswith("flags"))
    except (OSError, StopIteration):
        return frozenset()
    return frozenset(line.split(":", 1)[1].split())


def describe_cpu() -> str:
    """``avx2 yes, avx512f no, ...`` for the flags in :data:`SPEED_FLAGS` (``unknown`` off Linux), and torch's
    kernels where they are held below what the CPU has (a fast machine measuring the slow class's figures)."""
    flags = cpu_flags()
    text = ", ".join(f"{flag} {'yes' if flag in flags else 'no'}" for flag in SPEED_FLAGS) if flags else \
        "CPU flags unknown"
    held = [f"{name}={os.environ[name]}" for name in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(name)]
    return text + (f"; torch held to {' '.join(held)}" if held else "")


def has_native_bf16() -> bool:
    """bf16 matrix units (avx512_bf16 or AMX): elsewhere oneDNN emulates bf16, several times slower."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def usable_cores() -> int:
    """The cores this process may run on (its affinity where the OS reports it: a container's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
