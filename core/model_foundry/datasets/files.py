"""What dataset kinds that read user files share: finding them, and caching what was derived from them.

A cache entry is a directory named by a hash of everything that decides its content (the
files' paths, sizes and modification times, and the options that change how they are
read), written atomically, so a second run with the same files and options reads it back
instead of decoding anything, and an edited file is never served stale.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from model_foundry.checkpoint import atomic_directory
from model_foundry.errors import ConfigError, Problem

ARRAYS_FILE = "arrays.npz"


def fingerprint(value: Any) -> str:
    """A short, stable hash of plain data (the name of a cache entry)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:24]


def file_stamps(files: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(path, size, modification time)`` of each file: what a cache entry is keyed by."""
    stamps = []
    for path in files:
        stat = os.stat(path)
        stamps.append((path, stat.st_size, stat.st_mtime_ns))
    return stamps


def folder_files(path: str, extensions: tuple[str, ...], what: str) -> list[str]:
    """The files under the folder ``data.path`` (recursively) with one of ``extensions``
    (lower-case, with the dot; matched case-insensitively), as sorted absolute paths."""
    folder = os.path.abspath(os.path.expanduser(path))
    if not os.path.isdir(folder):
        problem = "is a file; data.path names a folder" if os.path.exists(folder) else "not found"
        raise ConfigError(Problem(f"{path!r} {problem} (relative paths start at {os.getcwd()})", "data.path"))
    found = sorted(
        os.path.join(root, name)
        for root, _, names in os.walk(folder, followlinks=True)
        for name in names
        if name.lower().endswith(extensions)
    )
    if not found:
        raise ConfigError(Problem(f"no {what} in {folder!r} (searched sub-folders too, for {', '.join(extensions)})", "data.path"))
    return found


def cached_arrays(
    cache_dir: str, prefix: str, key: Any, build: Callable[[], dict[str, np.ndarray]]
) -> tuple[dict[str, np.ndarray], bool]:
    """The arrays of the cache entry for ``key``, built by ``build()`` and stored first if there is
    none. Returns ``(arrays, was_cached)``."""
    directory = os.path.join(cache_dir, f"{prefix}-{fingerprint(key)}")
    stored = os.path.join(directory, ARRAYS_FILE)
    if os.path.isfile(stored):
        with np.load(stored, allow_pickle=False) as entry:
            return {name: entry[name] for name in entry.files}, True
    arrays = build()
    with atomic_directory(directory) as staging:
        np.savez(os.path.join(staging, ARRAYS_FILE), **arrays)
    return arrays, False
