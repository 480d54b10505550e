"""Shared pieces of the benchmarks: time an ``atft`` command in a child process, build the synthetic demo market
or the JP sample once, and save a result.

A child process makes the peak RSS the whole job's (imports included) and nothing else's.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).parent / "results"
# the real JP sample (../shared/data, read-only; see its README)
SAMPLE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jp_large_caps"


def run_cli(*args: str) -> dict[str, float]:
    """Run ``atft ARGS...`` in a child process; returns its wall time (s) and peak RSS (GiB)."""
    start = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "atft.cli.app", *args],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wall = time.perf_counter() - start
    # ru_maxrss is in KiB on Linux, and the largest over the children run so far.
    peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    return {"wall_s": round(wall, 1), "peak_rss_gb": round(peak_gb, 2)}


def env_with_src(src: Path | None) -> dict[str, str]:
    """This process's environment, with the package under ``src`` imported first (an older version, timed
    side by side); the caller's own PYTHONPATH stays after it (gpu_checks.sh puts its wheels there)."""
    if src is None:
        return dict(os.environ)
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH")) if p),
    }


def dataset(work: Path, name: str) -> Path:
    """The demo market or the JP sample, built under ``work`` once."""
    if not (work / name).is_dir():
        if name == "synth":
            run_cli("data", "synth", "--out", str(work / "synth_raw"))
        else:
            run_cli("data", "import", "--prices", str(SAMPLE / "prices.parquet"), "--index",
                    str(SAMPLE / "index_n225.parquet"), "--listed-info", str(SAMPLE / "listed_info.csv"),
                    "--out", str(work / "jp_raw"))  # fmt: skip
        run_cli("data", "build", "--raw", str(work / f"{name}_raw"), "--out", str(work / name))
    return work / name


def save_result(name: str, result: Any) -> None:
    """Write ``results/<name>.json`` (the latest figures, quoted in README) and print it."""
    RESULTS.mkdir(exist_ok=True)
    text = json.dumps(result, indent=2) + "\n"
    (RESULTS / f"{name}.json").write_text(text)
    print(text, end="")
