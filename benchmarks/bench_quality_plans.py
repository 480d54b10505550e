"""Benchmark: the Quality issue's ablations on the synthetic demo market, as `atft experiment` plans.

Runs ``configs/experiments/quality_synth.yaml`` (learning rate, weight averaging, loss balance),
``quality_synth_arch.yaml`` (variable selection, the IC loss, horizon weights, FAN, the graph) and
``quality_synth_seeds.yaml`` (the winner on two more seeds), ``quality_synth_targets.yaml`` (labels, capacity,
context, graph) and ``quality_synth_groups.yaml`` (drop-one feature groups), each against the demo's setting
of its time, and copies
each plan's report (compare.md, experiment.json) to ``results/<plan>/``. Resumable like `atft experiment`:
finished variants are reused. The winner is read on validation; docs/quality.md has the table.
Usage: ``.venv/bin/python benchmarks/bench_quality_plans.py [--work DIR]`` (about 10 minutes a variant on
one core; the demo market is built under --work when it is not there).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from harness import RESULTS, run_cli

PLANS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
NAMES = (
    "quality_synth",
    "quality_synth_arch",
    "quality_synth_seeds",
    "quality_synth_targets",
    "quality_synth_groups",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="atft_quality_"))
    if not (work / "synth").is_dir():
        run_cli("data", "synth", "--out", str(work / "synth_raw"))
        run_cli("data", "build", "--raw", str(work / "synth_raw"), "--out", str(work / "synth"))
    for name in NAMES:
        out = work / name
        timing = run_cli("experiment", str(PLANS / f"{name}.yaml"), "--data-path", str(work / "synth"),
                         "--out", str(out))  # fmt: skip
        (RESULTS / name).mkdir(parents=True, exist_ok=True)
        for file in ("compare.md", "experiment.json"):
            shutil.copy(out / file, RESULTS / name / file)
        print(name, timing, flush=True)


if __name__ == "__main__":
    main()
