"""Benchmark: the Quality issue's ablations on the synthetic demo market, as `atft experiment` plans.

Runs, each against the demo's setting of its time: ``configs/experiments/quality_synth.yaml`` (learning rate,
weight averaging, loss balance), ``quality_synth_arch.yaml`` (variable selection, the IC loss, horizon weights,
FAN, the graph), ``quality_synth_seeds.yaml`` (the winners on two more seeds), ``quality_synth_targets.yaml``
(labels, capacity, context, graph), ``quality_synth_groups.yaml`` (drop-one feature groups),
``quality_synth_schedule.yaml`` (epochs, dropout, weight decay, lookback), ``quality_synth_history.yaml`` (no
200-day features) and ``quality_synth_loss.yaml`` (ListNet and Sharpe terms); and on the JP sample, 3 seeds
each, ``quality_jp_targets.yaml`` (the training label), ``quality_jp_recency.yaml`` (recency weighting),
``quality_jp_recency_earlier.yaml`` (the same on an earlier fold) and ``quality_jp_history.yaml`` (a longer
history without the 200-day features). Copies
each plan's report (compare.md, experiment.json) to ``results/<plan>/``. Resumable like `atft experiment`:
finished variants are reused. The winner is read on validation; docs/quality.md has the table.
Usage: ``.venv/bin/python benchmarks/bench_quality_plans.py [--work DIR]`` (about 10 minutes a variant on
one core on the demo market, 3 on JP; the datasets are built under --work when they are not there;
``--only PLAN`` runs one plan).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from harness import RESULTS, dataset, run_cli

PLANS = Path(__file__).resolve().parents[1] / "configs" / "experiments"
SYNTH_PLANS = (
    "quality_synth",
    "quality_synth_arch",
    "quality_synth_seeds",
    "quality_synth_targets",
    "quality_synth_groups",
    "quality_synth_schedule",
    "quality_synth_history",
    "quality_synth_loss",
)
JP_PLANS = ("quality_jp_targets", "quality_jp_recency", "quality_jp_recency_earlier", "quality_jp_history")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--only", choices=SYNTH_PLANS + JP_PLANS, default=None, help="one plan instead of all")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="atft_quality_"))
    for name in [args.only] if args.only else SYNTH_PLANS + JP_PLANS:
        data = dataset(work, "jp" if name in JP_PLANS else "synth")
        out = work / name
        timing = run_cli(
            "experiment", str(PLANS / f"{name}.yaml"), "--data-path", str(data), "--out", str(out)
        )
        (RESULTS / name).mkdir(parents=True, exist_ok=True)
        for file in ("compare.md", "experiment.json"):
            shutil.copy(out / file, RESULTS / name / file)
        print(name, timing, flush=True)


if __name__ == "__main__":
    main()
