"""Probe: what touching fresh memory costs on this machine, a GiB at a time (``docs/feature_speed.md``).

Maps ``--gib`` anonymous GiB one after another, keeps them all, and writes one byte per 4 KiB page of each,
timing each GiB. On the virtual machines of this project, after a quiet while, the first ~4.5 GiB cost
~0.6 s each and every GiB after that 11-14 s (the host backs them only when touched); right after a job
that used as much, all of them cost ~0.6 s. So a build that touches less memory is also faster there, and
build times move with what ran before them. Usage:
``.venv/bin/python benchmarks/probe_fresh_memory.py [--gib 10]``; writes results/fresh_memory.json.
"""

from __future__ import annotations

import argparse
import mmap
import resource
import time

from harness import save_result

PAGE = 4096


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gib", type=int, default=10)
    args = ap.parse_args()
    maps, seconds, system = [], [], []
    for _ in range(args.gib):
        block = mmap.mmap(-1, 1 << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = memoryview(block)
        before, start = resource.getrusage(resource.RUSAGE_SELF).ru_stime, time.perf_counter()
        for offset in range(0, 1 << 30, PAGE):
            view[offset] = 1
        seconds.append(round(time.perf_counter() - start, 2))
        system.append(round(resource.getrusage(resource.RUSAGE_SELF).ru_stime - before, 2))
        maps.append((block, view))  # kept: each GiB is fresh memory, not a reused one
        print(f"GiB {len(seconds)}: {seconds[-1]} s ({system[-1]} s system)", flush=True)
    save_result(
        "fresh_memory", {"probe": "fresh_memory", "seconds_per_gib": seconds, "system_s_per_gib": system}
    )


if __name__ == "__main__":
    main()
