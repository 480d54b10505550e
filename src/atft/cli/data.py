"""``atft data ...``: make, import and inspect market data stores."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import typer
from rich.markup import escape

from atft.cli.splits import splits
from atft.cli.ui import PRESET, console, print_manifest, stages, user_errors
from atft.config import load_config
from atft.data.store import check_tables, check_target, read_manifest

app = typer.Typer(help="Make, import and inspect market data.", no_args_is_help=True)


@app.command("synth")
def synth(
    out: Path = typer.Option(..., "--out", help="Folder to write the raw store to."),
    stocks: int = typer.Option(500, "--stocks", help="Number of stocks."),
    days: int = typer.Option(1500, "--days", help="Number of trading days."),
    seed: int = typer.Option(0, "--seed", help="Random seed; the same seed gives the same market."),
    signal_strength: float = typer.Option(
        1.0,
        "--signal-strength",
        help="Scales every planted signal; 1.0 gives an oracle 5-day RankIC near 0.1.",
    ),
    late_listing_frac: float = typer.Option(
        0.05, "--late-listing-frac", help="Share of stocks that list late."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
) -> None:
    """Generate the synthetic market (prices, index, sectors and the oracle) as a raw store."""
    from atft.data.synthetic import SynthParams, synthesize, write_synthetic

    with user_errors():
        check_target(out, overwrite=overwrite, kind="synthetic")  # before minutes of work, not after
        params = SynthParams(
            n_stocks=stocks,
            n_days=days,
            seed=seed,
            signal_strength=signal_strength,
            late_listing_frac=late_listing_frac,
        )
        with stages("synthesizing") as say:
            market = synthesize(params, progress=say)
            say("measuring the oracle and writing the store")
            manifest = write_synthetic(market, out, overwrite=overwrite)
    print_manifest(manifest)
    console.print(f"Wrote [bold]{escape(str(out))}[/]")


@app.command("import")
def import_(
    prices: Path = typer.Option(
        ..., "--prices", help="Long CSV/parquet (date, code, OHLCV) or a folder of per-ticker CSVs."
    ),
    out: Path = typer.Option(..., "--out", help="Folder to write the raw store to."),
    index: Path | None = typer.Option(None, "--index", help="The market index series (CSV or parquet)."),
    listed_info: Path | None = typer.Option(
        None, "--listed-info", help="Table mapping code to sector and market."
    ),
    strict: bool = typer.Option(False, "--strict", help="Fail on any problem instead of repairing it."),
    extreme_move: float = typer.Option(
        0.25, "--extreme-move", help="Flag daily moves larger than this (0.25 = 25%)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
) -> None:
    """Import a real daily panel into the canonical raw store, validating it and counting every repair."""
    from atft.data.importer import import_market

    with user_errors():
        check_target(out, overwrite=overwrite, kind="imported")
        with stages("importing") as say:
            manifest = import_market(
                prices,
                out,
                index=index,
                listed_info=listed_info,
                strict=strict,
                extreme_move=extreme_move,
                overwrite=overwrite,
                progress=say,
            )
    print_manifest(manifest)
    console.print(f"Wrote [bold]{escape(str(out))}[/]")


def _day(text: str, option: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{option} must be a date YYYY-MM-DD, got {text!r}") from None


@app.command("fetch-jquants")
def fetch_jquants_(
    start: str = typer.Option(..., "--from", help="First date to fetch, YYYY-MM-DD."),
    end: str = typer.Option(..., "--to", help="Last date to fetch, YYYY-MM-DD."),
    out: Path = typer.Option(..., "--out", help="Folder to write the raw store to."),
    cache: Path | None = typer.Option(
        None,
        "--cache",
        help="Cache of fetched periods (default: <out>_cache beside --out); reused by re-runs.",
    ),
    env_file: Path = typer.Option(
        Path(".env"), "--env-file", help="Read JQUANTS_API_KEY from this file when the variable is not set."
    ),
    rate_limit: float = typer.Option(
        60.0, "--rate-limit", help="Requests per minute, over all workers: your J-Quants plan's limit."
    ),
    workers: int = typer.Option(4, "--workers", help="Requests in flight at once."),
    max_retries: int = typer.Option(
        6, "--max-retries", help="Retries of a request on 429, 5xx or no answer."
    ),
    skip: list[str] | None = typer.Option(
        None, "--skip", help="Leave out statements, trades_spec or margin_interest (e.g. not in your plan)."
    ),
    base_url: str = typer.Option(
        "https://api.jquants.com/v2",
        "--base-url",
        help="The API's address (V2): a proxy, or a test's emulator.",
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store at --out."),
) -> None:
    """Fetch the Japanese market from J-Quants (API V2) into a raw store, caching every period fetched."""
    # Imported here, like the other commands' stages: pandas and the J-Quants client load in ~0.5 s.
    from atft.data.jquants.client import JQuantsClient, RetryPolicy, api_key
    from atft.data.jquants.fetch import fetch_jquants

    with user_errors():
        first, last = _day(start, "--from"), _day(end, "--to")
        check_target(out, overwrite=overwrite, kind="jquants")
        client = JQuantsClient(
            api_key(env_file),
            base_url=base_url,
            requests_per_minute=rate_limit,
            retry=RetryPolicy(max_retries=max_retries),
        )
        with stages("fetching from J-Quants") as say:
            manifest = fetch_jquants(
                first,
                last,
                out,
                cache_dir=cache or out.with_name(f"{out.name}_cache"),
                client=client,
                workers=workers,
                skip=tuple(skip or ()),
                overwrite=overwrite,
                progress=say,
            )
    print_manifest(manifest)
    console.print(f"Wrote [bold]{escape(str(out))}[/]")


@app.command("build")
def build(
    overrides: list[str] | None = typer.Argument(
        None, metavar="KEY=VALUE", help="Config overrides, e.g. features.normalization=z.", show_default=False
    ),
    raw: Path | None = typer.Option(
        None, "--raw", help="The raw store to build from (default: data.raw_dir)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="Folder to write the dataset to (default: data.dataset_dir)."
    ),
    preset: str = PRESET,
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out."),
) -> None:
    """Build the dataset (point-in-time features, labels, stock ids) that every model reads from a raw store."""
    from atft.features.build import build_dataset

    with user_errors():
        cfg = load_config(preset, overrides or ()).cfg
        raw = raw or (Path(cfg.data.raw_dir) if cfg.data.raw_dir else None)
        out = out or (Path(cfg.data.dataset_dir) if cfg.data.dataset_dir else None)
        if raw is None or out is None:
            raise ValueError(
                "give the raw store with --raw (or data.raw_dir) and the output with --out (or data.dataset_dir)"
            )
        check_target(out, overwrite=overwrite, kind="dataset")
        with stages("building") as say:
            build_dataset(raw, out, cfg, overwrite=overwrite, progress=say)
        manifest = read_manifest(out)
    print_manifest(manifest)
    console.print(f"Wrote [bold]{escape(str(out))}[/]")


app.command("splits")(splits)


@app.command("info")
def info(
    path: Path = typer.Argument(..., help="A store or dataset folder (one with manifest.json)."),
) -> None:
    """Print a store's or dataset's manifest: size, date range, tables, checks, features and exclusions.

    Every table the manifest lists must open first: a truncated or damaged file is an error naming it.
    """
    with user_errors():
        manifest = read_manifest(path)
        check_tables(path)  # the manifest alone would describe a damaged store as sound
    print_manifest(manifest)
