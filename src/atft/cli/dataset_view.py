"""How ``atft data info`` shows a dataset manifest: size, features by group, nulls, exclusions, guard."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text

# Feature null rates shown: the worst ones; the full list is in manifest.json.
WORST_NULL_RATES = 10


def dataset_tables(manifest: dict[str, Any], cell) -> list[Table | Text]:
    """Rich tables for a dataset manifest; ``cell`` renders one value as plain text (see ``cli.ui``).

    Entries of an unexpected shape are shown as they are: a hand-edited manifest must not crash ``info``.
    """
    overview = Table(title="Dataset", show_header=False)
    for key in ("rows", "n_stocks", "n_dates", "date_range", "horizons", "warmup_days", "sector_level",
                "normalization", "schema_hash", "created_at"):  # fmt: skip
        if key in manifest:
            overview.add_row(key, cell(manifest[key]))
    source = manifest.get("source")
    if isinstance(source, dict):
        overview.add_row("source", cell(source.get("raw_dir", "?")))
    out: list[Table | Text] = [overview]

    groups = manifest.get("features")
    if isinstance(groups, dict):
        table = Table(title=f"Features ({sum(len(v) for v in groups.values() if isinstance(v, list))})")
        table.add_column("group")
        table.add_column("n", justify="right")
        table.add_column("features", overflow="fold")
        for group, names in groups.items():
            names = names if isinstance(names, list) else [names]
            table.add_row(cell(group), cell(len(names)), cell(", ".join(map(str, names)), limit=10_000))
        out.append(table)

    nulls = manifest.get("null_rate_after_warmup")
    if isinstance(nulls, dict) and nulls:
        worst = sorted(nulls.items(), key=lambda kv: -kv[1] if isinstance(kv[1], int | float) else 0)
        table = Table(title=f"Null rate after the warmup (worst {min(WORST_NULL_RATES, len(worst))})")
        table.add_column("feature")
        table.add_column("null rate", justify="right")
        for name, rate in worst[:WORST_NULL_RATES]:
            table.add_row(cell(name), Text(f"{rate:.2%}" if isinstance(rate, int | float) else str(rate)))
        out.append(table)

    excluded = manifest.get("excluded_rows")
    if isinstance(excluded, dict):
        table = Table(title="Excluded rows: never a sample, kept in files")
        table.add_column("reason")
        table.add_column("rows", justify="right")
        reasons = excluded.get("reasons")
        for reason, n in reasons.items() if isinstance(reasons, dict) else []:
            table.add_row(cell(reason), cell(n))
        table.add_row(Text("total", style="bold"), cell(excluded.get("total", "?")))
        out.append(table)
        by_feature = excluded.get("null_feature_by_feature")
        if isinstance(by_feature, dict) and by_feature:
            shown = ", ".join(
                f"{name} {n:,}" if isinstance(n, int) else f"{name} {n}"
                for name, n in list(by_feature.items())[:8]
            )
            out.append(Text(f"null_feature rows by feature: {shown}"))

    guard = manifest.get("guard")
    if isinstance(guard, dict):
        passed = guard.get("passed")
        lines = [f"Guard: {'passed' if passed else 'FAILED'}"]
        for kind in ("problems", "warnings"):
            items = guard.get(kind)
            lines += [f"  {kind[:-1]}: {p}" for p in (items if isinstance(items, list) else [])]
        out.append(Text("\n".join(lines)))
    return out
