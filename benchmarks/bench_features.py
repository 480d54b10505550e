"""Benchmark: build features and labels for the production-sized synthetic panel (4,000 x 2,650 days).

Target (Features issue 15): under 60 s wall time and under 8 GB peak memory on 2 cores (first issue:
120 s and 12 GB). Generates the raw store first (untimed; or pass ``--raw DIR`` to reuse one), then times
``atft data build`` in a child process and writes ``benchmarks/results/features.json``.

``--before SRC`` times a second copy of the package too (e.g. ``git archive`` of an older commit's ``src``,
``configs`` and ``pyproject.toml`` into a folder, SRC being its ``src``), alternating the two builds
``--runs`` times each on the same store, and records its medians under ``before``: a speed-up measured
side by side, not against a figure from another day. It then compares the last two datasets table by
table (``identical_output``: every column equal, nulls included; the manifests apart from
``created_at``). Usage: ``.venv/bin/python benchmarks/bench_features.py [--stocks N --days N | --raw DIR]
[--before SRC --runs N --before-label TEXT] [--name features]``; writes ``results/<name>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
from harness import env_with_src, run_cli, save_result

WALL_S, PEAK_GB = 60, 8


def _build(raw: Path, out: Path, src: Path | None) -> dict[str, float]:
    """One ``atft data build`` in a child process (of the package in ``src`` when given)."""
    if src is None:
        return run_cli("data", "build", "--raw", str(raw), "--out", str(out))
    start = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-m", "atft.cli.app", "data", "build", "--raw", str(raw), "--out", str(out)],
        env=env_with_src(src),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # wait4 gives this child's own peak RSS (ru_maxrss of RUSAGE_CHILDREN is the largest of all children).
    _, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise subprocess.CalledProcessError(status, child.args)
    return {
        "wall_s": round(time.perf_counter() - start, 1),
        "peak_rss_gb": round(usage.ru_maxrss / 1024**2, 2),
    }


def _differences(a: Path, b: Path) -> list[str]:
    """What differs between two datasets: tables or columns (compared a few columns at a time, to bound
    memory), and manifest keys other than ``created_at``."""
    found = []
    for file in sorted(a.glob("*.parquet")):
        other = b / file.name
        names = list(pl.read_parquet_schema(file))
        if not other.is_file() or list(pl.read_parquet_schema(other)) != names:
            found.append(f"{file.name}: columns")
            continue
        for start in range(0, len(names), 12):
            part = names[start : start + 12]
            if not pl.read_parquet(file, columns=part).equals(
                pl.read_parquet(other, columns=part), null_equal=True
            ):
                found.append(f"{file.name}: {part}")
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    found += [
        f"manifest: {k}" for k in sorted(set(ma) | set(mb)) if k != "created_at" and ma.get(k) != mb.get(k)
    ]
    return found


def _median(runs: list[dict[str, float]]) -> dict[str, object]:
    return {
        "wall_s": round(statistics.median(r["wall_s"] for r in runs), 1),
        "peak_rss_gb": round(statistics.median(r["peak_rss_gb"] for r in runs), 2),
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stocks", type=int, default=4000)
    ap.add_argument("--days", type=int, default=2650)
    ap.add_argument("--raw", type=Path, help="An existing raw store to build from (skips generation).")
    ap.add_argument("--before", type=Path, help="The src folder of an older package to time side by side.")
    ap.add_argument("--runs", type=int, default=1, help="Builds of each version (with --before).")
    ap.add_argument("--before-label", help="What --before is (e.g. a commit), recorded under before.code.")
    ap.add_argument("--name", default="features", help="results/<name>.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw
        if raw is None:
            raw = Path(tmp) / "raw"
            run_cli(
                "data", "synth", "--stocks", str(args.stocks), "--days", str(args.days), "--out", str(raw)
            )
        synth_peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        out, out_before = Path(tmp) / "dataset", Path(tmp) / "dataset_before"
        before, after = [], []
        src = Path(__file__).resolve().parents[1] / "src" if args.before else None
        for _ in range(args.runs if args.before else 1):
            shutil.rmtree(out, ignore_errors=True)  # a build refuses to replace a dataset
            if args.before:
                shutil.rmtree(out_before, ignore_errors=True)
                before.append(_build(raw, out_before, args.before))
            after.append(_build(raw, out, src))
        manifest = json.loads((out / "manifest.json").read_text())
        size_mb = sum(f.stat().st_size for f in out.iterdir()) / 1024**2
        differences = _differences(out_before, out) if args.before else None
    timing = _median(after) if args.before else after[0]
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
    if args.before:
        result["before"] = {"code": args.before_label, **_median(before)}
        result["identical_output"] = not differences
        result["differences"] = differences
    save_result(args.name, result)
    ok = result["wall_s"] < WALL_S and result["peak_rss_gb"] < PEAK_GB
    print("PASS" if ok else "FAIL: over target")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
