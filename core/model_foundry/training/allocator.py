"""Keep the memory a training step frees for the next step (glibc's ``malloc``).

By default glibc gives freed memory at the top of the heap back to the system once more than
``M_TRIM_THRESHOLD`` bytes are free there, and serves blocks over ``M_MMAP_THRESHOLD`` with fresh
mappings; both thresholds move with what the process freed before. A training step frees its
activations (tens of MB for the quickstart's GPT-2) and allocates them again in the next step,
so, depending on the process's history, each step faults in thousands of fresh pages: the
quickstart's ``foundry train`` measured 1.6k to 10.9k minor page faults per step, a plain script
4.9k to 6.1k, and the CPU seconds per step followed (0.91x the plain script's at 10.7k).
With the thresholds fixed, both run with no page faults and the same CPU seconds per step
(``tests/benchmarks/bench_train_process.py``, docs/benchmarks.md).
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # the largest glibc accepts on 64-bit; larger blocks still get their own mapping
TRIM_THRESHOLD = 1 << 30
ENVIRONMENT = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")  # the user's own settings of the same


def keep_freed_memory() -> bool:
    """Fix glibc's thresholds so freed memory stays with the process; whether it did (not on another
    C library, nor when the environment sets either threshold itself)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc" or any(name in os.environ for name in ENVIRONMENT):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
