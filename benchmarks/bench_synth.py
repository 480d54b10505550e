"""Benchmark: generate and write the production-sized synthetic market (4,000 stocks x 2,650 days).

Target (Foundation issue): under 60 s wall time and under 6 GB peak memory on 2 cores.
Runs the real CLI in a child process so that peak RSS is the whole job's, then writes
``benchmarks/results/synth.json``. Usage: ``.venv/bin/python benchmarks/bench_synth.py [--stocks N --days N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--days", type=int, default=2650)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw"
        cmd = [
            sys.executable,
            "-m",
            "atft.cli.app",
            "data",
            "synth",
            "--stocks",
            str(args.stocks),
            "--days",
            str(args.days),
            "--seed",
            str(args.seed),
            "--out",
            str(out),
        ]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - start
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2  # KiB -> GiB
        manifest = json.loads((out / "manifest.json").read_text())
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1024**2
    result = {
        "benchmark": "synth",
        "stocks": args.stocks,
        "days": args.days,
        "rows": manifest["rows"],
        "wall_s": round(wall, 1),
        "peak_rss_gb": round(peak_gb, 2),
        "store_mb": round(size_mb, 1),
        "oracle_rank_ic": manifest["oracle_rank_ic"],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "targets": {"wall_s": 60, "peak_rss_gb": 6},
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synth.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    ok = result["wall_s"] < 60 and result["peak_rss_gb"] < 6
    print("PASS" if ok else "FAIL: over target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
