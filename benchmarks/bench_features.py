"""Benchmark: build features and labels for the production-sized synthetic panel (4,000 x 2,650 days).

Target (Features issue): under 120 s wall time and under 12 GB peak memory on 2 cores.
Generates the raw store first (untimed; or pass ``--raw DIR`` to reuse one), then times
``atft data build`` in a child process and writes ``benchmarks/results/features.json``.
Usage: ``.venv/bin/python benchmarks/bench_features.py [--stocks N --days N | --raw DIR]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
from pathlib import Path

from harness import run_cli, save_result

WALL_S, PEAK_GB = 120, 12


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--days", type=int, default=2650)
    ap.add_argument("--raw", type=Path, help="An existing raw store to build from (skips generation).")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw
        if raw is None:
            raw = Path(tmp) / "raw"
            run_cli(
                "data", "synth", "--stocks", str(args.stocks), "--days", str(args.days), "--out", str(raw)
            )
        synth_peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        out = Path(tmp) / "dataset"
        timing = run_cli("data", "build", "--raw", str(raw), "--out", str(out))
        manifest = json.loads((out / "manifest.json").read_text())
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1024**2
    result = {
        "benchmark": "features",
        "rows": manifest["rows"],
        "stocks": manifest["n_stocks"],
        "dates": manifest["n_dates"],
        "features": len(manifest["model_features"]),
        **timing,
        # ru_maxrss covers every child so far: a build peak below the generator's would be hidden by it.
        "generator_peak_rss_gb": round(synth_peak_gb, 2),
        "dataset_mb": round(size_mb, 1),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "targets": {"wall_s": WALL_S, "peak_rss_gb": PEAK_GB},
    }
    save_result("features", result)
    ok = result["wall_s"] < WALL_S and result["peak_rss_gb"] < PEAK_GB
    print("PASS" if ok else "FAIL: over target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
