"""Quality benchmark: the oracle's mean daily RankIC with all planted signals, each one alone, and at
several signal strengths (500 stocks x 1,500 days, seed 1). Reproduces the table in docs/synthetic.md and
writes ``benchmarks/results/synth_signals.json``. Usage: ``.venv/bin/python benchmarks/synth_signals.py``.
"""

from __future__ import annotations

import json

from harness import RESULTS

from atft.data.synthetic import SynthParams, oracle_rank_ic, synthesize

SIGNALS = ("reversal", "momentum", "volume_shock", "lead_lag")


def rank_ic(**kw) -> dict[str, float]:
    return oracle_rank_ic(synthesize(SynthParams(n_stocks=500, n_days=1500, seed=1, **kw)))


def main() -> None:
    off = {s: 0.0 for s in SIGNALS}
    rows = {"all signals": rank_ic()}
    for s in SIGNALS:
        rows[f"{s} only"] = rank_ic(**{**off, s: getattr(SynthParams(), s)})
    for strength in (0.0, 0.5, 2.0):
        rows[f"signal strength {strength}"] = rank_ic(signal_strength=strength)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "synth_signals.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(f"{'market':28s} " + " ".join(f"{h:>7s}" for h in rows["all signals"]))
    for name, r in rows.items():
        print(f"{name:28s} " + " ".join(f"{v:7.4f}" for v in r.values()))


if __name__ == "__main__":
    main()
