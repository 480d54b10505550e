"""``atft experiment``: a plan of config variants, trained in order, compared, and a winner chosen by validation.

A plan (YAML, docs/experiments.md) names a base config and a list of variants, each a set of overrides
(dotted keys or the previous system's alias names such as ``SHARPE_WEIGHT``). Variants run in the plan's
order, each after a parent (by default the variant before it; ``after: <variant>`` names another, ``after:
null`` none): a variant runs only when its parent ran and passed its own ``continue_if`` rule
(``"val/rankic_5d > 0.02"``: a validation metric, one of > >= < <=, a number); otherwise it is skipped,
with the reason. Each variant trains with ``train_run`` into ``OUT/runs/<variant>/`` (a finished run is
reused, so an interrupted experiment resumes), and its test forecasts are scored like a unit of ``atft
compare`` into the same table (the variant name in the "model" column). The winner is the variant with the
best validation RankIC at 5 days; the test columns are shown and never used to choose.

``search`` runs an Optuna study (TPE sampler, seeded; median pruner) over the loss weights and the learning
rate from the plan's base config, maximizing the validation RankIC at 5 days. Its trials train with
``with_test=False``: the test segment is never served, forecast or scored. It writes ``OUT/search.json``.

Files of an experiment folder ``OUT/``::

    experiment.json     the plan, every variant's status (trained, reused, skipped and why), the winner
    compare.md/csv/json the comparison report and table (``atft.workflow.compare_folder``), and its plots
    settings.json, units/  the comparison's settings and scored units (``CompareFolder``)
    runs/<variant>/     each variant's run folder (``RunFolder``)
    search.json         the study of ``--search`` (trials, parameters, values, states, the best)
    search/trial_<k>/   each trial's run folder (validation only)
"""

from __future__ import annotations

import json
import math
import operator
import os
import re
import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import optuna
import yaml
from lightning.pytorch.callbacks import Callback

from atft.config import DEFAULT_PRESET, ENV_ALIASES, ATFTConfig, ConfigError, config_changes, load_config
from atft.config.schema import MONITORED_METRICS
from atft.config.validation import parse_bool
from atft.data.splits import splits_from_config
from atft.evaluation.evaluate import json_ready
from atft.features.dataset import DatasetFolder
from atft.reporting.compare_report import plot_compare, render_compare_markdown
from atft.training.run_folder import RunFolder, atomic_text
from atft.workflow.compare import paired_tests, peak_memory_mb, reset_peak_memory, score_unit, summarize
from atft.workflow.compare_folder import CompareFolder, UnitRecord
from atft.workflow.train import train_run

Say = Callable[[str], None]
Progress = Callable[[str, int, int], None]

WINNER_METRIC = "rankic_5d"  # the one number that picks the winner and that the search maximizes
WINNER_MONITOR = f"val/{WINNER_METRIC}"
PLAN_KEYS = ("name", "base", "variants")
BASE_KEYS = ("preset", "overrides")
VARIANT_KEYS = ("name", "overrides", "continue_if", "after")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a variant becomes a folder name
_RULE = re.compile(
    r"\s*(val/[A-Za-z0-9_]+)\s*(>=|<=|>|<)\s*([-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)\s*"
)
_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}

# The search space of ``--search``: (low, high, log scale). ListNet is switched on so that its weight counts.
SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "loss.weights.rankic": (0.0, 1.0, False),
    "loss.weights.sharpe": (0.0, 0.5, False),
    "loss.weights.cs_ic": (0.0, 0.5, False),
    "loss.weights.huber": (0.1, 2.0, False),
    "loss.weights.listnet": (0.0, 0.5, False),
    "train.optimizer.lr": (1e-4, 3e-3, True),
}
SEARCH_FIXED = ("loss.listnet.enabled=true",)


class PlanError(ValueError):
    """A plan that cannot run: the message names the plan file, the variant and the key."""


# ---- the plan ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    """``val/<metric>_<h>d <op> <number>``, read against a variant's own validation metrics."""

    metric: str  # "val/rankic_5d"
    op: str
    threshold: float

    @property
    def key(self) -> str:
        """The metric's key in ``summary.json``'s ``valid_metrics`` (``rankic_5d``)."""
        return self.metric.removeprefix("val/")

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.threshold:g}"

    def check(self, metrics: Mapping[str, Any]) -> tuple[bool, float]:
        """(passed, value); a missing or non-finite value never passes."""
        value = metrics.get(self.key)
        value = float(value) if isinstance(value, int | float) else math.nan
        return (math.isfinite(value) and _OPS[self.op](value, self.threshold)), value


def parse_rule(text: Any) -> Rule:
    """``"val/rankic_5d > 0.02"`` as a Rule; a ValueError that shows the expected form otherwise."""
    found = _RULE.fullmatch(text) if isinstance(text, str) else None
    if found is None:
        raise ValueError(
            f"continue_if {text!r} is not a rule: write 'val/<metric>_<h>d <op> <number>' with <op> one of "
            f"{', '.join(_OPS)} (e.g. 'val/rankic_5d > 0.02')"
        )
    return Rule(found[1], found[2], float(found[3]))


@dataclass
class Variant:
    """One variant of a plan: its overrides as ``key=value`` tokens (aliases already translated)."""

    name: str
    overrides: list[str] = field(default_factory=list)
    continue_if: Rule | None = None
    after: str | None = None  # the parent variant; None: runs whatever happened before


@dataclass
class Plan:
    """A validated plan: where it came from, its base config and its variants in order."""

    path: Path
    name: str
    preset: str | None
    base: list[str]
    variants: list[Variant]

    def where(self, variant: str | None = None, key: str | None = None) -> str:
        """``plan.yaml: variant 'x': key 'y'``: the prefix of every error about the plan."""
        parts = [str(self.path)]
        if variant is not None:
            parts.append(f"variant {variant!r}")
        if key is not None:
            parts.append(f"key {key!r}")
        return ": ".join(parts)


class _PlanLoader(yaml.SafeLoader):
    """YAML's safe loader that keeps dates as text and refuses a key written twice in one mapping."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class reports it
                    continue
                if first is not key_node:
                    lines = (first.start_mark.line + 1, key_node.start_mark.line + 1)
                    raise PlanError(
                        f"key {key!r} is written twice in one mapping (lines {lines[0]} and {lines[1]}); YAML "
                        "would silently keep the last, so remove one"
                    )
        return super().construct_mapping(node, deep=deep)


_PlanLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_plan(path: str | Path, *, require_variants: bool = True) -> Plan:
    """Read and check a plan file; every error is a PlanError naming the file, the variant and the key.

    This checks the plan's shape and rules; ``resolve_configs`` checks each variant's config.
    """
    path = Path(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_PlanLoader)  # noqa: S506 - SafeLoader
    except PlanError as e:
        raise PlanError(f"{path}: {e}") from None
    except UnicodeDecodeError:
        raise PlanError(f"{path} is not UTF-8 text; save the plan as UTF-8") from None
    except OSError as e:
        raise PlanError(f"cannot read the plan {path}: {e.strerror or e}") from None
    except yaml.YAMLError as e:
        raise PlanError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    if not isinstance(data, dict):
        raise PlanError(f"{path}: a plan is a mapping with {', '.join(PLAN_KEYS)} (docs/experiments.md)")
    plan = Plan(path, "", None, [], [])
    _refuse_unknown(data, PLAN_KEYS, plan.where(), "the plan")
    name = data.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PlanError(
            f"{plan.where(key='name')}: give the plan a name of letters, digits, _ . - (got {name!r})"
        )
    plan.name = name
    plan.preset, plan.base = _read_base(data.get("base"), plan)
    variants = data.get("variants")
    if variants is None and not require_variants:
        variants = []
    if not isinstance(variants, list) or (require_variants and not variants):
        raise PlanError(f"{plan.where(key='variants')}: give a list of variants, each a mapping with a name")
    for i, entry in enumerate(variants):
        plan.variants.append(_read_variant(entry, i, plan))
    return plan


def _refuse_unknown(data: Mapping[str, Any], allowed: Sequence[str], where: str, what: str) -> None:
    unknown = [str(k) for k in data if k not in allowed]
    if unknown:
        raise PlanError(
            f"{where}: unknown key(s) {', '.join(repr(k) for k in unknown)} in {what}; allowed: {', '.join(allowed)}"
        )


def _read_base(base: Any, plan: Plan) -> tuple[str | None, list[str]]:
    """``base``: a preset name or file, a list of overrides, or a mapping with ``preset`` and ``overrides``."""
    where = plan.where(key="base")
    if base is None:
        return None, []
    if isinstance(base, str):
        return base, []
    if isinstance(base, list):
        return None, _tokens(base, where)
    if isinstance(base, dict):
        _refuse_unknown(base, BASE_KEYS, where, "base")
        preset = base.get("preset")
        if preset is not None and not isinstance(preset, str):
            raise PlanError(f"{where}: preset must be a preset name or a .yaml file, got {preset!r}")
        return preset, _tokens(base.get("overrides") or [], where)
    raise PlanError(
        f"{where}: give a preset name, a list of KEY=VALUE overrides, or a mapping (preset, overrides)"
    )


def _read_variant(entry: Any, i: int, plan: Plan) -> Variant:
    if not isinstance(entry, dict):
        raise PlanError(f"{plan.where()}: variant #{i + 1} must be a mapping with a name, got {entry!r}")
    name = entry.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise PlanError(
            f"{plan.where()}: variant #{i + 1} needs a name of letters, digits, _ . - (it names its run "
            f"folder), got {name!r}"
        )
    where = plan.where(name)
    if any(v.name == name for v in plan.variants):
        raise PlanError(f"{where}: the name is used twice; every variant needs its own name")
    _refuse_unknown(entry, VARIANT_KEYS, where, "the variant")
    variant = Variant(name, _tokens(entry.get("overrides") or {}, f"{where}: overrides"))
    if entry.get("continue_if") is not None:
        try:
            variant.continue_if = parse_rule(entry["continue_if"])
        except ValueError as e:
            raise PlanError(f"{where}: {e}") from None
    if "after" in entry:  # present and null: no parent
        after = entry["after"]
        if after is not None and not any(v.name == after for v in plan.variants):
            earlier = ", ".join(v.name for v in plan.variants) or "none"
            raise PlanError(
                f"{where}: after {after!r} names no earlier variant (variants run in the plan's order; "
                f"earlier ones: {earlier})"
            )
        variant.after = after
    elif plan.variants:
        variant.after = plan.variants[-1].name  # one chain by default
    return variant


def _tokens(items: Any, where: str) -> list[str]:
    """Overrides as ``dotted.key=value`` tokens, from a mapping (nested mappings are dotted) or a list of
    ``KEY=VALUE`` strings (a later one wins, as on the command line); alias names (``SHARPE_WEIGHT``) become
    their dotted keys, and a mapping that sets one key twice (an alias and its dotted key) is refused."""
    pairs: list[tuple[str, Any]] = []
    if isinstance(items, dict):
        pairs = _flatten(items)
    elif isinstance(items, list):
        for item in items:
            key, sep, text = item.partition("=") if isinstance(item, str) else ("", "", "")
            if not sep or not key.strip():
                raise PlanError(f"{where}: {item!r} is not KEY=VALUE (e.g. train.optimizer.lr=3e-4)")
            pairs.append((key.strip(), text))
    else:
        raise PlanError(f"{where}: give the overrides as a mapping of key: value, got {items!r}")
    tokens, given = [], {}
    for key, value in pairs:
        alias = ENV_ALIASES.get(key)
        dotted = alias.key if alias is not None else key
        if dotted in given and isinstance(
            items, dict
        ):  # in a list, a later KEY=VALUE wins, as on the command line
            raise PlanError(f"{where}: key {key!r} sets {dotted}, which {given[dotted]!r} already sets")
        given[dotted] = key
        if alias is not None and alias.switch:
            on = parse_bool(_text(value))
            if on is None:
                raise PlanError(f"{where}: key {key!r} is a switch: give true or false, got {value!r}")
            if on:
                tokens.append(f"{dotted}={_text(alias.when_true)}")
            continue
        tokens.append(f"{dotted}={_text(value)}")
    return tokens


def _flatten(data: Mapping[Any, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            out.extend(_flatten(value, dotted + "."))
        else:
            out.append((dotted, value))
    return out


def _text(value: Any) -> str:
    """A YAML value as the text of a command-line override."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_text(v) for v in value) + "]"
    return str(value)


def plan_env() -> dict[str, str]:
    """The environment configs are resolved with: the process's, less the alias variables (a plan sets
    every value itself, so that the plan file is the whole record of what ran)."""
    return {k: v for k, v in os.environ.items() if k not in ENV_ALIASES}


def plan_preset(plan: Plan, preset: str | None) -> str:
    """The preset: the command line's when given, else the plan's base, else the default."""
    return preset or plan.preset or DEFAULT_PRESET


def resolve_configs(plan: Plan, preset: str | None = None) -> dict[str, ATFTConfig]:
    """Every variant's config, resolved before anything trains; checks the horizons and the rules' metrics."""
    used = plan_preset(plan, preset)
    env = plan_env()
    configs: dict[str, ATFTConfig] = {}
    horizons = None
    for variant in plan.variants:
        where = plan.where(variant.name)
        try:
            cfg = load_config(used, [*plan.base, *variant.overrides], env=env).cfg
        except ConfigError as e:
            raise PlanError(f"{where}: {e}") from None
        hs = list(cfg.data.horizons)
        if 5 not in hs:
            raise PlanError(f"{where}: data.horizons {hs} lacks 5: the winner is chosen by {WINNER_MONITOR}")
        if horizons is None:
            horizons = hs
        elif hs != horizons:
            raise PlanError(
                f"{where}: data.horizons {hs} differs from {horizons} of the variants before it; variants "
                "are compared horizon by horizon, so they share data.horizons"
            )
        rule = variant.continue_if
        if rule is not None:
            known = {f"val/{m}_{h}d" for m in MONITORED_METRICS for h in hs}
            if rule.metric not in known:
                raise PlanError(
                    f"{where}: continue_if names {rule.metric!r}, which is no validation metric of this "
                    f"variant; use val/<metric>_<h>d with <metric> one of {', '.join(MONITORED_METRICS)} and "
                    f"<h> one of {', '.join(map(str, hs))}"
                )
        configs[variant.name] = cfg
    return configs


# ---- running a plan --------------------------------------------------------------------------------------


@dataclass
class VariantResult:
    """What happened to one variant."""

    name: str
    status: str  # "trained", "reused" or "skipped"
    model: str
    overrides: list[str]
    reason: str = ""  # why it was skipped
    run_dir: str | None = None
    valid_metrics: dict[str, Any] = field(default_factory=dict)
    best_epoch: int | None = None
    epochs_run: int | None = None
    seconds: float | None = None
    rule: str | None = None
    rule_value: float | None = None
    passed: bool | None = None  # None: skipped; True also when there is no rule

    @property
    def ran(self) -> bool:
        return self.status != "skipped"

    @property
    def valid_rankic_5d(self) -> float:
        value = self.valid_metrics.get(WINNER_METRIC)
        return float(value) if isinstance(value, int | float) else math.nan


@dataclass
class ExperimentResult:
    """What ``run_experiment`` wrote."""

    plan: Plan
    out: Path
    preset: str
    variants: list[VariantResult]
    winner: str | None
    horizons: list[int]
    rows: list[dict[str, Any]]
    paired: list[dict[str, Any]]
    same_test_rows: bool = True


def default_out(plan: Plan, preset: str | None = None) -> Path:
    """``<train.runs_dir>/experiments/<plan name>``."""
    cfg = load_config(plan_preset(plan, preset), plan.base, env=plan_env()).cfg
    return Path(cfg.train.runs_dir) / "experiments" / plan.name


def run_experiment(
    plan_path: str | Path,
    data_path: str | Path,
    out: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    say: Say = print,
    progress: Progress | None = None,
) -> ExperimentResult:
    """Train the plan's variants in order (skipping those whose parent failed its rule), score them on the
    test segment like ``atft compare``, pick the winner by validation RankIC at 5 days, write the report.

    ``preset`` (the command line's ``-p``) replaces the plan's base preset when given; ``overrides`` (the
    command line's ``KEY=VALUE``) follow the plan's base overrides, before each variant's own.
    """
    plan = load_plan(plan_path)
    plan.base = [*plan.base, *overrides]
    configs = resolve_configs(plan, preset)
    used = plan_preset(plan, preset)
    out = Path(out) if out is not None else default_out(plan, preset)
    dataset = DatasetFolder(data_path)
    dataset.calendar()  # a wrong --data-path stops here, before anything is written
    folder = CompareFolder(out)
    folder.start(experiment=plan.name, data_path=str(Path(data_path).resolve()), preset=used,
                 overrides=plan.base, n_folds=1)  # fmt: skip
    ignored = sorted(k for k in ENV_ALIASES if os.environ.get(k, "").strip())
    if ignored:
        say(f"ignoring the environment alias(es) {', '.join(ignored)}: a plan sets every value itself")

    results: dict[str, VariantResult] = {}
    records: list[UnitRecord] = []
    total = len(plan.variants)
    for i, variant in enumerate(plan.variants):
        cfg = configs[variant.name]
        result = VariantResult(variant.name, "skipped", str(cfg.model.name), variant.overrides)
        result.rule = str(variant.continue_if) if variant.continue_if else None
        results[variant.name] = result
        why = _skip_reason(variant, results)
        if why:
            result.reason = why
            say(f"{variant.name}: skipped ({why})")
            continue
        if progress is not None:
            progress(f"{variant.name} ({i + 1} of {total})", i, total)
        record = _run_variant(plan, variant, cfg, dataset, folder, result, say)
        records.append(record)
        if variant.continue_if is not None:
            result.passed, result.rule_value = variant.continue_if.check(result.valid_metrics)
            verdict = "passed" if result.passed else "failed"
            say(f"{variant.name}: {variant.continue_if}: {_f(result.rule_value, '.4f')}, {verdict}")
        else:
            result.passed = True
    if progress is not None:
        progress("report", total, total)

    variants = list(results.values())
    winner = pick_winner(variants)
    horizons = list(next(iter(configs.values())).data.horizons)
    ran = [v.name for v in variants if v.ran]
    rows = summarize(records, ran, horizons) if records else []
    for row in rows:
        row["valid_rankic_5d"] = results[row["model"]].valid_rankic_5d
        row["winner"] = row["model"] == winner
    order = [winner, *(n for n in ran if n != winner)] if winner else ran
    paired = paired_tests(folder, records, order, horizons) if len(ran) > 1 else []
    same_rows = _same_test_rows(folder, records)
    result = ExperimentResult(plan, out, used, variants, winner, horizons, rows, paired, same_rows)
    folder.record_request(models=ran, seeds={name: 1 for name in ran})
    folder.write_tables(rows, paired, render_experiment_markdown(result, folder.settings()))
    if records:
        curves = {name: folder.mean_book_curve(name, [r for r in records if r.model == name]) for name in ran}
        plot_compare(rows, curves, horizons, folder.plot_paths())
    write_experiment_json(result)
    return result


def _skip_reason(variant: Variant, results: Mapping[str, VariantResult]) -> str:
    """Why the variant does not run ("" when it runs): its parent was skipped or failed its rule."""
    if variant.after is None:
        return ""
    parent = results[variant.after]
    if not parent.ran:
        return f"after {parent.name}, which was skipped"
    if parent.passed is False:
        return f"after {parent.name}, whose rule {parent.rule} failed ({_f(parent.rule_value, '.4f')})"
    return ""


def _run_variant(
    plan: Plan,
    variant: Variant,
    cfg: ATFTConfig,
    dataset: DatasetFolder,
    folder: CompareFolder,
    result: VariantResult,
    say: Say,
) -> UnitRecord:
    """Train the variant (or reuse its finished run) and score its test forecasts."""
    run_dir = folder.root / "runs" / variant.name
    run = RunFolder(run_dir)
    fold = len(splits_from_config(dataset.calendar(), cfg)) - 1  # train_run's fold=None: the last one
    record = None
    if run.is_finished():
        changed = config_changes(cfg, run.read_config())
        if changed:
            raise PlanError(
                f"{plan.where(variant.name)}: {run_dir} was trained with another config than the plan now "
                f"gives ({', '.join(changed[:5])}{', ...' if len(changed) > 5 else ''}): delete {run_dir} to "
                "train it again, or give another --out"
            )
        summary = run.read_summary() or {}
        result.status = "reused"
        record = folder.read_unit(variant.name, 0, fold)
        say(f"{variant.name}: reusing the finished run {run_dir}")
    else:
        if run.root.exists():  # an interrupted variant starts again: only finished runs are reused
            shutil.rmtree(run.root)
        say(f"{variant.name}: training into {run_dir}")
        reset_peak_memory()
        summary = train_run(cfg, dataset.root, run_dir, say=say, progress_bar=False)
        result.status = "trained"
    result.run_dir = str(run_dir)
    result.valid_metrics = dict(summary.get("valid_metrics") or {})
    result.best_epoch, result.epochs_run = summary.get("best_epoch"), summary.get("epochs_run")
    result.seconds = summary.get("seconds")
    if record is None:
        peak = peak_memory_mb() if result.status == "trained" else math.nan
        record = score_unit(cfg, dataset, variant.name, 0, fold, run.read_predictions("test"),
                            seconds=float(summary.get("seconds") or math.nan),
                            parameters=int(summary.get("parameters") or 0), peak_mb=peak)  # fmt: skip
        folder.write_unit(record)
    return record


def pick_winner(variants: Sequence[VariantResult]) -> str | None:
    """The variant that ran with the highest finite validation RankIC at 5 days (the first on a tie); None
    when none has one. Test metrics are never read."""
    best: VariantResult | None = None
    for v in variants:
        if (
            v.ran
            and math.isfinite(v.valid_rankic_5d)
            and (best is None or v.valid_rankic_5d > best.valid_rankic_5d)
        ):
            best = v
    return best.name if best is not None else None


def _same_test_rows(folder: CompareFolder, records: list[UnitRecord]) -> bool:
    keys = [folder.read_keys(r) for r in records]
    return all(k.equals(keys[0]) for k in keys[1:])


def render_experiment_markdown(result: ExperimentResult, settings: Mapping[str, Any]) -> str:
    """``compare.md`` of an experiment: the variants and their decisions, the winner and its rule, then the
    comparison table of ``atft compare`` on the test segment."""
    plan = result.plan
    lines = [
        f"# Experiment `{plan.name}`",
        "",
        f"Plan `{plan.path}`, dataset `{settings.get('data_path')}`, preset `{result.preset}`, base overrides "
        f"`{' '.join(plan.base) or '-'}`. Each variant trains once (seed `train.seed`) on the last "
        "walk-forward fold into `runs/<variant>/`.",
        "",
    ]
    if result.winner:
        best = next(v for v in result.variants if v.name == result.winner)
        lines.append(
            f"**Winner: `{result.winner}`** (validation RankIC 5d {best.valid_rankic_5d:.4f}). The winner is the "
            "variant with the highest validation RankIC at 5 days (the best checkpoint's forecasts of the "
            "validation segment); the test columns below are shown but never used to choose."
        )
    else:
        lines.append("No winner: no variant that ran has a finite validation RankIC at 5 days.")
    lines += [
        "",
        "## Variants, in the plan's order",
        "",
        "| variant | model | status | overrides | best epoch | valid RankIC 5d | decision |",
        "|---|---|---|---|---|---|---|",
    ]
    for v in result.variants:
        epoch = f"{v.best_epoch} of {v.epochs_run}" if v.best_epoch is not None else "-"
        if not v.ran:
            decision = f"skipped: {v.reason}"
        elif v.rule:
            decision = f"{v.rule}: {_f(v.rule_value, '.4f')}, {'passed' if v.passed else 'failed'}"
        else:
            decision = "no rule"
        name = f"**{v.name}** (winner)" if v.name == result.winner else v.name
        lines.append(
            f"| {name} | {v.model} | {v.status} | `{' '.join(v.overrides) or '-'}` | {epoch} | "
            f"{_f(v.valid_rankic_5d, '.4f')} | {decision} |"
        )
    if result.rows:
        lines += ["", "## Test segment: shown, never used to choose", ""]
        if not result.same_test_rows:
            lines += [
                "The variants were scored on different test rows (a variant changes data.*): compare with care.",
                "",
            ]
        shown = [{**row, "model": f"{row['model']} (winner)" if row.get("winner") else row["model"]}
                 for row in result.rows]  # fmt: skip
        table = render_compare_markdown(shown, result.paired, result.horizons, dict(settings))
        body = table.split("\n")
        lines += [("#" + line if line.startswith("## ") else line) for line in body[2:]]  # below our title
    return "\n".join(lines).rstrip() + "\n"


def write_experiment_json(result: ExperimentResult) -> Path:
    """``experiment.json``: the plan, every variant's outcome and the winner, with the rule that chose it."""
    plan = result.plan
    record = {
        "plan": str(plan.path),
        "name": plan.name,
        "preset": result.preset,
        "base_overrides": plan.base,
        "winner": result.winner,
        "winner_rule": f"highest {WINNER_MONITOR} (validation segment); test metrics are never used",
        "variants": [
            {
                "name": v.name,
                "status": v.status,
                "reason": v.reason,
                "model": v.model,
                "overrides": v.overrides,
                "after": next(p.after for p in plan.variants if p.name == v.name),
                "continue_if": v.rule,
                "rule_value": v.rule_value,
                "passed": v.passed,
                "run_dir": v.run_dir,
                "best_epoch": v.best_epoch,
                "epochs_run": v.epochs_run,
                "seconds": v.seconds,
                "valid_metrics": v.valid_metrics,
            }
            for v in result.variants
        ],
    }
    path = result.out / "experiment.json"
    atomic_text(path, json.dumps(json_ready(record), indent=2, default=str))
    return path


def _f(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) and math.isfinite(value) else "-"


# ---- the search -------------------------------------------------------------------------------------------


class PruneOnValidation(Callback):
    """Reports ``val/rankic_5d`` to an Optuna trial after each epoch's validation and raises
    ``optuna.TrialPruned`` when the pruner says so.

    It acts at the end of the training epoch, after the run logger wrote the epoch's metrics.csv row (the
    validation of an epoch runs before its end); Lightning then tears the trainer down and re-raises.
    """

    def __init__(self, trial: optuna.Trial, monitor: str = WINNER_MONITOR) -> None:
        self.trial, self.monitor = trial, monitor
        self.reported: dict[int, float] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        value = trainer.callback_metrics.get(self.monitor)
        epoch = trainer.current_epoch
        if value is None or epoch in self.reported:
            return
        value = float(value)
        if not math.isfinite(value):
            return  # nothing to compare with: a NaN is neither reported nor pruned on
        self.reported[epoch] = value
        self.trial.report(value, epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}: {self.monitor}={value:.4f}")


@dataclass
class SearchResult:
    """What ``search`` wrote."""

    out: Path
    trials: list[dict[str, Any]]
    best: dict[str, Any] | None
    path: Path


def search(
    plan_path: str | Path,
    data_path: str | Path,
    n_trials: int,
    out: str | Path | None = None,
    *,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    pruner: optuna.pruners.BasePruner | None = None,
    say: Say = print,
    progress: Progress | None = None,
) -> SearchResult:
    """An Optuna study of ``n_trials`` over ``SEARCH_SPACE`` from the plan's base config, maximizing the
    validation RankIC at 5 days; every trial trains with ``with_test=False``, so the test days are never
    served. Writes ``OUT/search.json`` after each trial. The default pruner is the median pruner (from the
    third trial, after each trial's second epoch)."""
    if n_trials < 1:
        raise ValueError(f"--search needs at least 1 trial, got {n_trials}")
    plan = load_plan(plan_path, require_variants=False)
    plan.base = [*plan.base, *overrides]
    used = plan_preset(plan, preset)
    env = plan_env()
    try:
        base = load_config(used, plan.base, env=env).cfg
    except ConfigError as e:
        with_cli = " (with the command line's overrides)" if overrides else ""
        raise PlanError(f"{plan.where(key='base')}{with_cli}: {e}") from None
    if 5 not in base.data.horizons:
        raise PlanError(
            f"{plan.where(key='base')}: data.horizons lacks 5: the search maximizes {WINNER_MONITOR}"
        )
    out = Path(out) if out is not None else default_out(plan, preset)
    trials_dir, path = out / "search", out / "search.json"
    if path.exists() or trials_dir.exists():
        raise ValueError(
            f"{out} already holds a search ({path.name}, {trials_dir.name}/): give another --out, or delete "
            "both to search again"
        )
    trials_dir.mkdir(parents=True)
    if pruner is None:
        pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
        pruner_text = "MedianPruner(n_startup_trials=2, n_warmup_steps=1)"
    else:
        pruner_text = type(pruner).__name__
    seed = int(base.train.seed)
    sampler = optuna.samplers.TPESampler(seed=seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # the trials are reported here, one line each
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner, study_name=plan.name)
    data_path = Path(data_path)

    def objective(trial: optuna.Trial) -> float:
        if progress is not None:
            progress(f"trial {trial.number} ({trial.number + 1} of {n_trials})", trial.number, n_trials)
        params = {}
        for key, (low, high, log) in SEARCH_SPACE.items():
            params[key] = float(f"{trial.suggest_float(key, low, high, log=log):.4g}")  # as printed
        tokens = [*SEARCH_FIXED, *(f"{k}={v:g}" for k, v in params.items())]
        trial.set_user_attr("overrides", tokens)
        cfg = load_config(used, [*plan.base, *tokens], env=env).cfg
        run_dir = trials_dir / f"trial_{trial.number}"
        trial.set_user_attr("run_dir", str(run_dir))
        say(f"trial {trial.number}: {' '.join(tokens)}")
        try:
            summary = train_run(cfg, data_path, run_dir, with_test=False, callbacks=[PruneOnValidation(trial)],
                                say=say, progress_bar=False)  # fmt: skip
        except optuna.TrialPruned as e:
            folder = RunFolder(run_dir)
            folder.event("pruned", message=str(e))
            folder.log(f"Pruned by the search: {e}")
            say(f"trial {trial.number}: {e}")
            raise
        value = (summary.get("valid_metrics") or {}).get(WINNER_METRIC)
        value = float(value) if isinstance(value, int | float) else math.nan
        say(f"trial {trial.number}: {WINNER_MONITOR} = {_f(value, '.4f')}")
        return value  # NaN: Optuna marks the trial failed

    def record(study: optuna.Study, _trial: optuna.trial.FrozenTrial) -> None:
        write_search_json(path, study, plan, used, data_path, seed=seed, pruner_text=pruner_text)

    study.optimize(objective, n_trials=n_trials, callbacks=[record], catch=())
    if progress is not None:
        progress("done", n_trials, n_trials)
    body = write_search_json(path, study, plan, used, data_path, seed=seed, pruner_text=pruner_text)
    return SearchResult(out, body["trials"], body["best"], path)


def write_search_json(
    path: Path,
    study: optuna.Study,
    plan: Plan,
    preset: str,
    data_path: Path,
    *,
    seed: int,
    pruner_text: str,
) -> dict[str, Any]:
    """``search.json``: the space, every trial (state, parameters, value, per-epoch values) and the best."""
    trials = []
    for t in study.get_trials(deepcopy=False):
        overrides = t.user_attrs.get("overrides", [])
        trials.append({
            "number": t.number,
            "state": t.state.name,
            "params": {k: float(f"{v:.4g}") for k, v in t.params.items()},
            "overrides": overrides,
            "value": t.value,
            "intermediate": {str(k): v for k, v in sorted(t.intermediate_values.items())},
            "run_dir": t.user_attrs.get("run_dir"),
            "seconds": t.duration.total_seconds() if t.duration is not None else None,
        })  # fmt: skip
    complete = [t for t in trials if t["state"] == "COMPLETE" and isinstance(t["value"], float)]
    best = max(complete, key=lambda t: t["value"]) if complete else None
    if best is not None:
        best = {**best, "command": train_command(data_path, preset, [*plan.base, *best["overrides"]])}
    body = {
        "plan": str(plan.path),
        "name": plan.name,
        "data_path": str(data_path.resolve()),
        "preset": preset,
        "base_overrides": plan.base,
        "objective": f"maximize {WINNER_MONITOR} of the best checkpoint on the validation segment; "
        "the test segment is never served (train_run with_test=False)",
        "space": {k: {"low": lo, "high": hi, "log": log} for k, (lo, hi, log) in SEARCH_SPACE.items()},
        "fixed": list(SEARCH_FIXED),
        "sampler": f"TPESampler(seed={seed})",
        "pruner": pruner_text,
        "trials": trials,
        "best": best,
    }
    atomic_text(path, json.dumps(json_ready(body), indent=2, default=str))
    return body


def train_command(data_path: Path, preset: str, overrides: Sequence[str]) -> str:
    """The ``atft train`` command that trains with these overrides."""
    words = ["atft", "train", "--data-path", str(data_path)]
    if preset != DEFAULT_PRESET:
        words += ["-p", preset]
    return " ".join(shlex.quote(w) for w in [*words, *overrides])
