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
import sys
import tempfile
from pathlib import Path

from harness import run_cli, save_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--days", type=int, default=2650)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw"
        size = ("--stocks", str(args.stocks), "--days", str(args.days), "--seed", str(args.seed))
        timing = run_cli("data", "synth", *size, "--out", str(out))
        manifest = json.loads((out / "manifest.json").read_text())
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1024**2
    result = {
        "benchmark": "synth",
        "stocks": args.stocks,
        "days": args.days,
        "rows": manifest["rows"],
        **timing,
        "store_mb": round(size_mb, 1),
        "oracle_rank_ic": manifest["oracle_rank_ic"],
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "targets": {"wall_s": 60, "peak_rss_gb": 6},
    }
    save_result("synth", result)
    ok = result["wall_s"] < 60 and result["peak_rss_gb"] < 6
    print("PASS" if ok else "FAIL: over target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
