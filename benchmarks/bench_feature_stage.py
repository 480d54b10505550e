"""Benchmark: the feature stage of ``atft predict`` at production size, old code against new.

``atft predict`` reads the raw store and runs ``compute_features`` over the whole history (no labels, no
dataset written). This times exactly that, in a child process per version (its own peak RSS), on one raw
store: ``--before SRC`` is an older package's ``src`` (as for ``bench_features.py``), run first. Usage:
``.venv/bin/python benchmarks/bench_feature_stage.py --raw DIR [--before SRC]``; writes
results/feature_stage.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from harness import env_with_src, save_result

STAGE = """
import json, resource, sys, time
from atft.data.store import RawStore
from atft.features.build import compute_features, priced_rows
from atft.features.point_in_time import jquants_sources
start = time.perf_counter()
store = RawStore.read(sys.argv[1], oracle=False)
prices, _ = priced_rows(store, "sector17")
frame, _ = compute_features(prices, store.index, sources=jquants_sources(store))
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
print(json.dumps({"rows": frame.height, "wall_s": round(wall, 1), "peak_rss_gb": round(peak, 2)}))
"""


def _stage(raw: Path, src: Path | None) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", STAGE, str(raw)],
        env=env_with_src(src),
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--raw", type=Path, required=True)
    ap.add_argument("--before", type=Path, help="The src folder of an older package, timed first.")
    args = ap.parse_args()
    result = {"benchmark": "feature_stage", "raw": str(args.raw)}
    if args.before:
        result["before"] = _stage(args.raw, args.before)
    result["after"] = _stage(args.raw, Path(__file__).resolve().parents[1] / "src")
    print(json.dumps(result, indent=2))
    save_result("feature_stage", result)


if __name__ == "__main__":
    main()
