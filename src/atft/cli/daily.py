"""``atft predict``, ``atft bundle`` and ``atft serve``: the daily ranked list a user acts on."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from atft.cli.ui import console, fail, say, user_errors

SOURCE = typer.Argument(
    ..., help="A run folder of `atft train` or a bundle file of `atft bundle`.", show_default=False
)
RAW = typer.Option(
    None, "--raw", help="The raw store to read (default: the store the model's dataset was built from)."
)


def predict(
    source: Path = SOURCE,
    date: str = typer.Option("latest", "--date", help="'latest' (the store's last day) or YYYY-MM-DD."),
    top_k: int | None = typer.Option(None, "--top-k", help="Rows per horizon in the files (default: all)."),
    raw: Path | None = RAW,
    out: Path | None = typer.Option(
        None, "--out", help="Folder for the lists (default: RUN/daily/DATE, or BUNDLE_daily/DATE)."
    ),
) -> None:
    """Rank every eligible stock for one day, point in time: ranked_<h>d.csv/.parquet, skipped.csv, summary.json."""
    from atft.workflow.predict import predict_day  # torch loads only when needed

    with user_errors():
        daily, folder = predict_day(source, date, raw_dir=raw, top_k=top_k, out=out, say=say)
    horizon = 5 if 5 in daily.info["horizons"] else daily.info["horizons"][0]
    table = Table(
        title=f"{daily.date}: the top of the {horizon}-day list ({daily.info['scored']} stocks scored)"
    )
    for column in ("rank", "code", "sector", "score", "neighbours"):
        table.add_column(column, justify="right" if column in ("rank", "score") else "left")
    for row in daily.for_horizon(horizon, 10).iter_rows(named=True):
        table.add_row(
            str(row["rank"]),
            escape(row["code"]),
            escape(str(row["sector"] or "")),
            f"{row['score']:+.4f}",
            escape(row["neighbours"] or ""),
        )
    console.print(table)
    if daily.skipped.height:
        console.print(
            f"Skipped {daily.skipped.height} stocks: "
            + ", ".join(f"{reason} {n}" for reason, n in daily.info["skipped_by_reason"].items())
            + " (skipped.csv says why, stock by stock)"
        )
    console.print(f"Wrote [bold]{escape(str(folder))}[/]")


def bundle(
    run_dir: Path = typer.Argument(..., help="A run folder of `atft train`.", show_default=False),
    out: Path = typer.Option(..., "--out", help="The bundle file to write (e.g. model.atft)."),
) -> None:
    """Write a self-contained model bundle: weights, config, the feature list and its hash, provenance."""
    from atft.training.bundle import ModelBundle

    with user_errors():
        path = ModelBundle.from_run(run_dir).write(out)
    console.print(f"Wrote [bold]{escape(str(path))}[/] ({path.stat().st_size / 1024:.0f} KiB)")


def serve(
    source: Path = SOURCE,
    raw: Path | None = RAW,
    host: str = typer.Option("127.0.0.1", "--host", help="Interface to listen on (loopback by default)."),
    port: int = typer.Option(8000, "--port", help="TCP port."),
    key_env: str = typer.Option(
        "ATFT_API_KEY", "--api-key-env", help="Environment variable holding the API key clients must send."
    ),
) -> None:
    """Serve the daily ranked list over HTTP: POST /predict (header X-API-Key), GET /healthz."""
    import uvicorn

    from atft.training.bundle import ModelBundle
    from atft.workflow.service import create_app

    api_key = os.environ.get(key_env, "")
    if not api_key:
        fail(f"set the API key in the environment variable {key_env} (clients send it as X-API-Key)")
    with user_errors():
        model = ModelBundle.open(source)
        raw_dir = raw or model.raw_dir
        if raw_dir is None:
            raise ValueError("the model records no raw store: pass --raw DIR")
        app = create_app(model, raw_dir, api_key)
    say(f"serving {source} over {raw_dir} on http://{host}:{port} (POST /predict, GET /healthz)")
    uvicorn.run(app, host=host, port=port, log_level="info")
