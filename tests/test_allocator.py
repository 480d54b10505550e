"""``keep_freed_memory``: after it, a freed tensor's memory is reused instead of page-faulted in afresh."""

from __future__ import annotations

import json
import platform
import subprocess
import sys

import pytest

from atft.training import allocator

# In a child process: the setting is process-wide and lasting, and the suite's own process must keep glibc's
# defaults for the tests that measure memory.
CHILD = """
import json, resource
import torch
from atft.training.allocator import keep_freed_memory

MIB64 = 16 * 1024 * 1024  # float32 values: above glibc's largest automatic mmap threshold (32 MiB)

def resident_mib():
    return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20

def faults_per_tensor(n=5):
    # After a warm-up: glibc settles where its freed blocks fit the next request of the same size.
    for _ in range(10):
        torch.ones(MIB64)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(n):
        torch.ones(MIB64)
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / n

default = faults_per_tensor()
kept = keep_freed_memory()
after = faults_per_tensor()
settled = resident_mib()
faults_per_tensor(n=30)
print(json.dumps({"default": default, "kept": kept, "after": after, "grew_mib": resident_mib() - settled}))
"""


def _huge_pages_always() -> bool:
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[always]" in f.read()
    except OSError:
        return False


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the allocator settings are glibc's")
@pytest.mark.skipif(_huge_pages_always(), reason="transparent huge pages 'always': faults count 2 MiB pages")
def test_freed_tensor_memory_is_reused_not_faulted_in_again():
    out = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    measured = json.loads(out.stdout.strip().splitlines()[-1])
    assert measured["kept"] is True
    pages = 64 * 1024 * 1024 // 4096
    assert measured["default"] > pages / 2  # by default each 4 KiB page of a fresh mapping faults once
    assert measured["after"] < pages / 20
    assert measured["grew_mib"] < 64  # the kept memory is reused, not added to


def test_other_c_libraries_are_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.platform, "libc_ver", lambda: ("", ""))
    assert allocator.keep_freed_memory() is False
