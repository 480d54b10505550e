"""The engine that enforces the configuration schema of ``atft.config.schema``.

The schema declares each setting with its type and rules; this module applies them to user input:

- **keys**: ``field_spec`` looks a dotted key up and refuses an unknown one with "did you mean"
  suggestions (``suggest_keys``), or a section given where a value is expected;
- **type coercion**: ``coerce_value`` converts text from the command line or environment and YAML
  values to the schema type of the key (``parse_bool`` for booleans);
- **per-field rules**: ``validate_fields`` checks every value against the rules declared on its own
  field (range, choices, length, order, strict ``YYYY-MM-DD`` dates, see ``parse_date``);
- **rules that link keys**: ``CROSS_CHECKS``, run by ``validate_cross_fields`` on a complete config
  (one loss weight per horizon, warm-up shorter than training, a monitor that is reported, ...);
- **derived defaults**: ``adapt_defaults`` adapts defaults that follow another key (the early-stopping
  monitor follows ``data.horizons``, the warm-up shrinks to fit ``train.max_epochs``).

Every check works on the config as plain nested dicts and raises ``ConfigError`` with a one-line
message that names the key and, through ``origin_of``, where its value came from. The order of layers
and the bookkeeping of sources belong to ``atft.config.loader``.
"""

from __future__ import annotations

import datetime as dt
import difflib
import itertools
import math
import re
import typing
from collections.abc import Callable, Collection, Iterator, Mapping
from typing import Any

from atft.config.errors import ConfigError
from atft.config.schema import (
    MONITORED_METRICS,
    FieldSpec,
    parse_monitor,
    reported_metrics,
    required_mode,
    schema_fields,
    schema_sections,
    type_name,
    unwrap_optional,
)

# --------------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------------


def field_spec(key: str) -> FieldSpec:
    """The spec of one leaf key; raises ConfigError (with a suggestion) for anything else."""
    leaves, sections = schema_fields(), schema_sections()
    if key in leaves:
        return leaves[key]
    if key in sections:
        children = [k for k in leaves if k.startswith(key + ".")]
        raise ConfigError(
            f"'{key}' is a section, not a value; set one of its keys, e.g. '{children[0]}'", key=key
        )
    hint = suggest_keys(key)
    suggestion = " Did you mean " + " or ".join(f"'{k}'" for k in hint) + "?" if hint else ""
    raise ConfigError(f"Unknown config key '{key}'.{suggestion}", key=key)


def suggest_keys(key: str, limit: int = 3) -> list[str]:
    """Valid keys close to a mistyped one: by whole key first, then by its last part."""
    leaves = list(schema_fields())
    close = difflib.get_close_matches(key, leaves, n=1, cutoff=0.75)
    if close:  # one clear candidate; listing near-misses of a near-miss only confuses
        return close
    # "train.lr" or "model.hiden_size": the leaf name is usually right, the section path is not.
    leaf = key.rsplit(".", 1)[-1]
    names = {k.rsplit(".", 1)[-1] for k in leaves}
    near = set(difflib.get_close_matches(leaf, names, n=limit, cutoff=0.75))
    return [k for k in leaves if k.rsplit(".", 1)[-1] in near][:limit]


# --------------------------------------------------------------------------------------------------
# Type coercion
# --------------------------------------------------------------------------------------------------

TRUE_WORDS = frozenset({"1", "true", "yes"})
FALSE_WORDS = frozenset({"0", "false", "no"})
BOOL_WORDS = "1/0, true/false, yes/no"


def parse_bool(text: str) -> bool | None:
    """Strict boolean text: 1/0/true/false/yes/no in any case; None for anything else."""
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    return None


class _Mismatch(Exception):
    """Internal: a value that does not fit its type, with the position inside a list if any."""

    def __init__(self, expected: str, value: Any, index: int | None = None) -> None:
        super().__init__(expected)
        self.expected, self.value, self.index = expected, value, index


def _coerce(tp: Any, value: Any) -> Any:
    inner, optional = unwrap_optional(tp)
    if value is None:
        if optional:
            return None
        raise _Mismatch(type_name(tp), value)
    if typing.get_origin(inner) is list:
        if not isinstance(value, list | tuple):
            raise _Mismatch(type_name(tp), value)
        item_type = typing.get_args(inner)[0]
        out = []
        for i, item in enumerate(value):
            try:
                out.append(_coerce(item_type, item))
            except _Mismatch as exc:
                raise _Mismatch(exc.expected, exc.value, i) from None
        return out
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        parsed = parse_bool(value) if isinstance(value, str) else None
        if parsed is None:
            raise _Mismatch(f"bool ({BOOL_WORDS})", value)
        return parsed
    if inner is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise _Mismatch("int", value)
    if inner is float:
        number: float | None = None
        if isinstance(value, int | float) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value.strip())  # also reads "3e-4", which YAML 1.1 leaves a string
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise _Mismatch("float (finite)" if number is not None else "float", value)
        return number
    if inner is str:
        if isinstance(value, str):
            return value
        # YAML reads `precision: 32` as an int and `2000-01-03` as a date; both are meant as text.
        if isinstance(value, dt.date):
            return value.isoformat()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
        raise _Mismatch("str (quote it if YAML read it as something else)", value)
    raise TypeError(f"unsupported schema type {tp!r}")  # a schema bug, not a user error


def coerce_value(key: str, value: Any, origin: str | None = None) -> Any:
    """Convert a user-supplied value to the schema type of ``key``, or raise a ConfigError naming it."""
    spec = field_spec(key)
    try:
        return _coerce(spec.type, value)
    except _Mismatch as exc:
        where = key if exc.index is None else f"{key}[{exc.index}]"
        raise ConfigError(
            f"{_where(where, origin)}: expected {exc.expected}, got {exc.value!r}", key=key
        ) from None


# --------------------------------------------------------------------------------------------------
# Per-field rules
# --------------------------------------------------------------------------------------------------


def _where(key: str, origin: str | None) -> str:
    return f"{key} (from {origin})" if origin else key


def _num(x: Any) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def bounds_text(rules: Mapping[str, Any]) -> str | None:
    """The allowed range of a field as text: ``>= 0``, ``> 0`` or ``in [0, 1)``; None when unbounded."""
    lo = ("[", rules["ge"]) if "ge" in rules else ("(", rules["gt"]) if "gt" in rules else None
    hi = ("]", rules["le"]) if "le" in rules else (")", rules["lt"]) if "lt" in rules else None
    if lo and hi:
        return f"in {lo[0]}{_num(lo[1])}, {_num(hi[1])}{hi[0]}"
    if lo:
        return (">= " if lo[0] == "[" else "> ") + _num(lo[1])
    if hi:
        return ("<= " if hi[0] == "]" else "< ") + _num(hi[1])
    return None


def _in_bounds(x: Any, rules: Mapping[str, Any]) -> bool:
    return not (
        ("ge" in rules and x < rules["ge"])
        or ("gt" in rules and x <= rules["gt"])
        or ("le" in rules and x > rules["le"])
        or ("lt" in rules and x >= rules["lt"])
    )


def _check_scalar(x: Any, rules: Mapping[str, Any]) -> str | None:
    """The problem with one value under the bound/choice rules, or None."""
    if "choices" in rules and x not in rules["choices"]:
        allowed = ", ".join(repr(c) for c in rules["choices"])
        noun = rules.get("choices_noun")
        if noun:  # "'mlp' is not an available model; the models that exist are 'atft_gat_fan'"
            return f"{x!r} is not an available {noun}; the {noun}s that exist are {allowed}"
        return f"{x!r} is not an allowed choice; choose one of {allowed}"
    if isinstance(x, int | float) and not isinstance(x, bool) and not _in_bounds(x, rules):
        return f"{_num(x)} is out of range; must be {bounds_text(rules)}"
    return None


# Dates are written as YYYY-MM-DD with ASCII digits and nothing else. date.fromisoformat alone is too
# lenient: it also takes "20200103" and week dates like "2020-W01-1", and other Python versions take
# more; str.isdigit-style checks would let full-width digits ("２０２０") through. [0-9] is ASCII only.
_DATE_FORMAT = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")
DATE_FORMAT_TEXT = "YYYY-MM-DD (ASCII digits, a real calendar day, e.g. 2020-01-03)"


def parse_date(text: Any) -> dt.date | None:
    """A strict ``YYYY-MM-DD`` calendar date, or None for anything else (other formats, 2020-02-30)."""
    # fullmatch, not match: "$" alone would also accept a trailing newline.
    if not isinstance(text, str) or not _DATE_FORMAT.fullmatch(text):
        return None
    try:
        return dt.date.fromisoformat(text)
    except ValueError:  # the right shape but no such day
        return None


def _check_list(items: list[Any], rules: Mapping[str, Any]) -> str | None:
    """The problem with a list as a whole (length, order, date pair), or None."""
    if "length" in rules and len(items) != rules["length"]:
        return f"{items!r} must have exactly {rules['length']} items, got {len(items)}"
    if "min_length" in rules and len(items) < rules["min_length"]:
        return f"{items!r} must have at least {rules['min_length']} item(s)"
    if rules.get("increasing") and any(a >= b for a, b in itertools.pairwise(items)):
        return f"{items!r} must be strictly increasing"
    if rules.get("date_range"):
        dates = [parse_date(x) for x in items]
        for item, date in zip(items, dates, strict=True):
            if date is None:
                return f"{item!r} is not a date; expected [start, end] as {DATE_FORMAT_TEXT}"
        if dates[0] > dates[-1]:
            return f"{items!r} must be [start, end] with start <= end"
    return None


def _lookup(values: Mapping[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        node = node[part]
    return node


# --------------------------------------------------------------------------------------------------
# Rules that link keys
# --------------------------------------------------------------------------------------------------

MONITOR_KEY = "train.early_stopping.monitor"
HORIZON_WEIGHTS_KEY = "loss.horizon_weights"
MODE_KEY = "train.early_stopping.mode"
WARMUP_KEY = "train.scheduler.warmup_epochs"
MAX_EPOCHS_KEY = "train.max_epochs"

# A cross-field check gets the whole config as nested dicts and returns (keys involved, problem) or None.
CrossCheck = Callable[[Mapping[str, Any]], tuple[tuple[str, ...], str] | None]


def _horizon_weights_match(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    horizons = values["data"]["horizons"]
    weights = values["loss"]["horizon_weights"]
    if len(weights) != len(horizons):
        return (
            ("loss.horizon_weights", "data.horizons"),
            f"needs one weight per horizon: {len(weights)} weight(s) {weights} for "
            f"{len(horizons)} horizon(s) {horizons}; set both together",
        )
    return None


def _explicit_split_has_dates(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    split = values["data"]["split"]
    if split["mode"] != "explicit":
        return None
    if split["train"] is None:
        return (
            ("data.split.mode", "data.split.train"),
            "mode 'explicit' needs [start, end] dates for data.split.train",
        )
    if split["valid"] is None and split["test"] is None:
        keys = ("data.split.valid", "data.split.test")
        return (
            ("data.split.mode", *keys),
            "mode 'explicit' needs [start, end] dates for data.split.valid or data.split.test",
        )
    return None


def _grading_ordered(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    g = values["eval"]["grading"]
    if not g["minimum_rankic"] <= g["target_rankic"] <= g["stretch_rankic"]:
        return (
            ("eval.grading.minimum_rankic", "eval.grading.target_rankic", "eval.grading.stretch_rankic"),
            "must satisfy minimum_rankic <= target_rankic <= stretch_rankic",
        )
    return None


def _warmup_too_long(values: Mapping[str, Any]) -> bool:
    """True when the warm-up of the ``warmup_cosine`` schedule leaves no epoch for the cosine decay."""
    train = values["train"]
    return (
        train["scheduler"]["name"] == "warmup_cosine"
        and train["scheduler"]["warmup_epochs"] >= train["max_epochs"]
    )


def _warmup_shorter_than_training(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    if not _warmup_too_long(values):
        return None
    warmup, epochs = values["train"]["scheduler"]["warmup_epochs"], values["train"]["max_epochs"]
    return (
        (WARMUP_KEY, MAX_EPOCHS_KEY),
        f"warmup ({warmup} epochs) must be shorter than training ({epochs} epochs), or the cosine decay "
        f"never starts; set {WARMUP_KEY} below {epochs} (e.g. {WARMUP_KEY}={max(0, epochs - 1)}), raise "
        f"{MAX_EPOCHS_KEY} above {warmup}, or choose another train.scheduler.name (plateau, constant)",
    )


def _monitor_is_a_reported_metric(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    monitor = values["train"]["early_stopping"]["monitor"]
    horizons = values["data"]["horizons"]
    allowed = reported_metrics(horizons)
    if monitor == "val/sharpe_" + monitor.rsplit("_", 1)[-1] and 1 not in horizons:
        return (
            (MONITOR_KEY, "data.horizons"),
            f"{monitor!r} needs the 1-day horizon in data.horizons: the long-short portfolio earns the "
            "1-day forward return (docs/metrics.md), so without it the metric is always NaN",
        )
    if monitor in allowed:
        return None
    listing = f"valid names for data.horizons {horizons}: {', '.join(allowed)}"
    parsed = parse_monitor(monitor)
    if parsed and parsed[0] in MONITORED_METRICS:
        # A real metric at a horizon that is not predicted: data.horizons is half of the problem.
        return (
            (MONITOR_KEY, "data.horizons"),
            f"{monitor!r} watches the {parsed[1]}-day horizon, which is not in data.horizons; {listing}",
        )
    return ((MONITOR_KEY,), f"{monitor!r} is not a reported validation metric; {listing}")


def _mode_fits_monitor(values: Mapping[str, Any]) -> tuple[tuple[str, ...], str] | None:
    early = values["train"]["early_stopping"]
    needed = required_mode(early["monitor"])
    if needed is None or early["mode"] == needed:
        return None
    better = "lower" if needed == "min" else "higher"
    return (
        (MODE_KEY, MONITOR_KEY),
        f"{early['monitor']!r} is better when {better}, so {MODE_KEY} must be {needed!r}, "
        f"not {early['mode']!r}",
    )


CROSS_CHECKS: tuple[CrossCheck, ...] = (
    _horizon_weights_match,
    _explicit_split_has_dates,
    _grading_ordered,
    _warmup_shorter_than_training,
    _monitor_is_a_reported_metric,  # first: for a misspelled monitor, that is the useful message
    _mode_fits_monitor,
)


# --------------------------------------------------------------------------------------------------
# Defaults that follow other keys
# --------------------------------------------------------------------------------------------------


def adapt_defaults(
    values: Mapping[str, Any], *, explicit: Collection[str], user_set: Collection[str]
) -> list[tuple[str, Any, str]]:
    """Defaults that depend on another key, adapted to the final config.

    Returns ``(key, new value, key it follows)`` for each default that has to change. Keys in
    ``explicit`` (set by a preset, an environment alias or an override) are never changed: a value the
    user chose is checked by ``CROSS_CHECKS`` and reported if wrong, not silently replaced. The one
    exception is the warm-up, which only keys in ``user_set`` (last set by an environment alias or an
    override, not by a preset) protect: a preset's warm-up is sized for the preset's epochs.

    - ``train.early_stopping.monitor``: the default ``val/rankic_5d`` needs horizon 5. If
      ``data.horizons`` lacks the monitor's horizon, the same metric at the horizon closest to it is
      watched instead (ties go to the shorter horizon), e.g. ``val/rankic_1d`` for ``[1, 10]``.
    - ``train.early_stopping.mode``: set to what the monitored metric needs (``min`` for losses and
      errors, ``max`` for IC, RankIC, Sharpe, ...), e.g. ``min`` when only the monitor is set to
      ``val/loss``.
    - ``loss.horizon_weights``: the default weighs every horizon equally; with other horizons it stays
      equal, one weight per horizon.
    - ``train.scheduler.warmup_epochs``: with the ``warmup_cosine`` schedule, a warm-up that comes from
      the schema default or a preset and is not shorter than ``train.max_epochs`` shrinks to
      ``max(0, max_epochs - 1)``, so that ``atft train --max-epochs 1`` works with any preset.
    """
    changes: list[tuple[str, Any, str]] = []
    weights = values["loss"]["horizon_weights"]
    n_horizons = len(values["data"]["horizons"])
    if (
        HORIZON_WEIGHTS_KEY not in explicit
        and len(weights) != n_horizons
        and len(set(weights)) <= 1  # uniform, as the default is: nothing to guess
    ):
        changes.append((HORIZON_WEIGHTS_KEY, [weights[0] if weights else 1.0] * n_horizons, "data.horizons"))
    early = values["train"]["early_stopping"]
    monitor = early["monitor"]
    horizons = values["data"]["horizons"]
    parsed = parse_monitor(monitor)
    if MONITOR_KEY not in explicit and parsed and parsed[1] is not None and parsed[1] not in horizons:
        metric, horizon = parsed
        nearest = min(horizons, key=lambda h: (abs(h - horizon), h))
        monitor = f"val/{metric}_{nearest}d"
        changes.append((MONITOR_KEY, monitor, "data.horizons"))
    needed = required_mode(monitor)
    if MODE_KEY not in explicit and needed is not None and early["mode"] != needed:
        changes.append((MODE_KEY, needed, MONITOR_KEY))
    if WARMUP_KEY not in user_set and _warmup_too_long(values):
        changes.append((WARMUP_KEY, max(0, values["train"]["max_epochs"] - 1), MAX_EPOCHS_KEY))
    return changes


# --------------------------------------------------------------------------------------------------
# Running the checks
# --------------------------------------------------------------------------------------------------


Origin = Callable[[str], str | None]


def validate_fields(values: Mapping[str, Any], origin_of: Origin = lambda key: None) -> None:
    """Check every field of ``values`` (the config as nested dicts) against its own rules.

    These are the rules declared on each field (range, choices, length, order, dates); they never look
    at another key, so they can run after each layer is merged and blame the layer that broke one.
    ``origin_of(key)`` describes where a key's value came from, so that the error can name the preset
    file, environment variable or override token. Raises ConfigError on the first problem.
    """
    for key, spec in schema_fields().items():
        value = _lookup(values, key)
        if value is None or not spec.rules:
            continue
        for where, problem in _field_problems(key, value, spec.rules):
            if problem:
                raise ConfigError(f"{_where(where, origin_of(key))}: {problem}", key=key)


def _field_problems(key: str, value: Any, rules: Mapping[str, Any]) -> Iterator[tuple[str, str | None]]:
    """(where, problem or None) for a value: a list as a whole, then each item as ``key[i]``."""
    if isinstance(value, list):
        yield key, _check_list(value, rules)
        for i, item in enumerate(value):
            yield f"{key}[{i}]", _check_scalar(item, rules)
    else:
        yield key, _check_scalar(value, rules)


def validate_cross_fields(values: Mapping[str, Any], origin_of: Origin = lambda key: None) -> None:
    """Run the ``CROSS_CHECKS``, the rules that relate several keys, on a complete config.

    Run them on the final config only: a layer may legitimately set one of two linked keys and a later
    layer the other. The error names every key involved, each with ``origin_of(key)`` if known.
    """
    for check in CROSS_CHECKS:
        found = check(values)
        if found:
            keys, problem = found
            named = ", ".join(_where(k, origin_of(k)) for k in keys)
            raise ConfigError(f"{named}: {problem}", key=keys[0])


def validate(values: Mapping[str, Any], origin_of: Origin = lambda key: None) -> None:
    """Check a complete config: every field against its own rules, then the rules linking fields.

    ``origin_of(key)`` describes where a key's value came from, so that the error can name the preset
    file, environment variable or override token. Raises ConfigError on the first problem.
    """
    validate_fields(values, origin_of)
    validate_cross_fields(values, origin_of)
