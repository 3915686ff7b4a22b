"""``foundry train`` keeps the memory a step frees for the next step (issue 24 item 3)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

import model_foundry

# Allocates, touches and frees 20 MB twice and prints the minor page faults of the second time.
# The module is loaded from its file: importing model_foundry.training would import torch (seconds).
SECOND_FAULTS = textwrap.dedent("""
    import ctypes, importlib.util, resource, sys
    spec = importlib.util.spec_from_file_location("allocator", sys.argv[2])
    allocator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(allocator)
    if sys.argv[1] == "keep":
        assert allocator.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    size = 20 << 20
    for attempt in range(2):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(size)
        ctypes.memset(block, 1, size)
        libc.free(block)
        faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(faults)
""")


def second_faults(way: str) -> int:
    env = {"PATH": "/usr/bin:/bin"}  # no MALLOC_ settings of the caller's
    path = os.path.join(os.path.dirname(model_foundry.__file__), "training", "allocator.py")
    done = subprocess.run([sys.executable, "-c", SECOND_FAULTS, way, path], capture_output=True, text=True, env=env, check=True)
    return int(done.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")
def test_a_step_reuses_the_memory_the_step_before_freed():
    pages = (20 << 20) // 4096
    assert second_faults("default") > pages // 2  # glibc's own thresholds: the 20 MB come back as fresh pages
    assert second_faults("keep") < pages // 20


def test_the_environment_settings_win(monkeypatch):
    from model_foundry.training.allocator import keep_freed_memory

    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert not keep_freed_memory()


def test_foundry_train_keeps_freed_memory(monkeypatch):
    from model_foundry.commands import train
    from model_foundry.training import allocator

    calls = []
    monkeypatch.setattr(allocator, "keep_freed_memory", lambda: calls.append(True))

    class Stop(Exception):
        pass

    def stop(*_args, **_kwargs):
        raise Stop

    monkeypatch.setattr(train, "load_config", stop)
    with pytest.raises(Stop):
        train.run(type("Args", (), {"config": "c.yaml", "overrides": []})())
    assert calls == [True]
