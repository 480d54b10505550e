"""Tests of the typed configuration: presets, overrides, environment aliases, validation, provenance, CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from typer.testing import CliRunner

from atft.cli import config as config_cli
from atft.config import (
    ENV_ALIASES,
    ATFTConfig,
    ConfigError,
    ResolvedConfig,
    find_config_dir,
    load_config,
    schema_fields,
)
from atft.config.validation import field_spec

REPO = Path(__file__).resolve().parents[1]


def error_of(*args, **kwargs) -> str:
    """The message of the ConfigError that load_config raises (env ignored unless given)."""
    kwargs.setdefault("env", {})
    with pytest.raises(ConfigError) as info:
        load_config(*args, **kwargs)
    return str(info.value)


def write_preset(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


# --- defaults and presets -------------------------------------------------------------------------


def test_schema_defaults_load_without_a_preset():
    resolved = load_config(None, env={})
    assert isinstance(resolved, ResolvedConfig)
    assert resolved.preset == "none"
    assert resolved.sources == {}
    assert resolved.non_default() == []
    cfg = resolved.cfg
    assert OmegaConf.get_type(cfg) is ATFTConfig
    assert cfg.data.horizons == [1, 5, 10, 20]
    assert cfg.model.hidden_size == 64
    assert cfg.train.optimizer.lr == pytest.approx(1e-3)
    assert cfg.train.trainer.precision == "32"
    assert cfg.loss.weights.huber == 1.0
    assert cfg.model.name == "atft_gat_fan"
    assert set(cfg.eval) == {"quantile", "cost_bps", "grading"}
    assert set(resolved.to_container()) == {"data", "features", "model", "train", "loss", "eval"}
    assert "hidden_size: 64" in resolved.to_yaml()


def test_resolved_config_is_read_only():
    resolved = load_config(env={})
    with pytest.raises(Exception, match="read-only"):
        resolved.cfg.model.hidden_size = 128


def test_config_dir_is_found_next_to_pyproject():
    assert find_config_dir({}) == REPO / "configs"


def test_cpu_preset_is_the_default():
    resolved = load_config(env={})
    assert resolved.preset == "cpu"
    cfg = resolved.cfg
    assert (cfg.data.lookback, cfg.model.hidden_size, cfg.train.max_epochs) == (20, 64, 6)
    assert cfg.train.trainer.precision == "auto"  # bf16-mixed where the CPU (or GPU) computes bf16 natively
    assert cfg.train.trainer.accelerator == "auto"  # a GPU is used when present
    # Values equal to the schema default are not provenance, even when the preset restates them.
    regularized = ["model.dropout", "model.vsn.enabled", "model.shortcut_to", "train.early_stopping.patience", "train.max_epochs",
                   "train.optimizer.lr", "train.optimizer.weight_decay", "train.scheduler.warmup_epochs",
                   "train.trainer.precision"]  # fmt: skip
    assert resolved.sources == dict.fromkeys(regularized, "preset:cpu")


def test_production_preset_differs_from_cpu():
    cpu = load_config("cpu", env={}).cfg
    prod_resolved = load_config("production", env={})
    prod = prod_resolved.cfg
    assert (prod.data.lookback, cpu.data.lookback) == (60, 20)
    assert (prod.model.hidden_size, cpu.model.hidden_size) == (256, 64)
    assert (prod.train.trainer.precision, cpu.train.trainer.precision) == ("bf16-mixed", "auto")
    assert (prod.train.trainer.accelerator, cpu.train.trainer.accelerator) == ("gpu", "auto")
    assert (prod.train.batch.train_batch_size, cpu.train.batch.train_batch_size) == (2048, 4096)
    assert prod_resolved.sources["model.hidden_size"] == "preset:production"


def test_preset_given_as_a_path(tmp_path):
    path = write_preset(
        tmp_path, "exp.yaml", "model:\n  dropout: 0.3\ntrain:\n  trainer:\n    precision: 32\n"
    )
    resolved = load_config(path, env={})
    assert resolved.cfg.model.dropout == pytest.approx(0.3)
    assert resolved.cfg.train.trainer.precision == "32"  # an int in YAML becomes the string Lightning wants
    assert resolved.sources == {"model.dropout": f"preset:{path}"}
    assert resolved.preset == str(path)


def test_unknown_preset_lists_the_available_ones():
    message = error_of("gpu")
    assert "'gpu'" in message
    assert "cpu" in message and "production" in message


def test_preset_with_an_unknown_key_names_the_file_and_suggests(tmp_path):
    path = write_preset(tmp_path, "bad.yaml", "model:\n  hiden_size: 128\n")
    message = error_of(path)
    assert str(path) in message
    assert "model.hiden_size" in message
    assert "model.hidden_size" in message.split("Did you mean")[1]


def test_preset_with_a_bad_value_names_the_file(tmp_path):
    path = write_preset(tmp_path, "bad.yaml", "loss:\n  weights:\n    sharpe: -0.5\n")
    message = error_of(path)
    assert str(path) in message
    assert "loss.weights.sharpe" in message and ">= 0" in message


def test_named_preset_from_atft_config_dir(tmp_path):
    write_preset(tmp_path, "mine.yaml", "model:\n  hidden_size: 96\n")
    resolved = load_config("mine", env={"ATFT_CONFIG_DIR": str(tmp_path)})
    assert resolved.cfg.model.hidden_size == 96
    assert resolved.sources == {"model.hidden_size": "preset:mine"}
    assert "mine" in error_of("cpu", env={"ATFT_CONFIG_DIR": str(tmp_path)})


def test_shipped_presets_only_use_known_keys():
    for path in sorted((REPO / "configs").glob("*.yaml")):
        resolved = load_config(path, env={})
        assert all(key in schema_fields() for key in resolved.sources)


# --- command-line overrides -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "key", "expected"),
    [
        ("train.batch.train_batch_size=2048", "train.batch.train_batch_size", 2048),
        ("train.optimizer.lr=3e-4", "train.optimizer.lr", 3e-4),
        ("model.fan.enabled=false", "model.fan.enabled", False),
        ("loss.listnet.enabled=YES", "loss.listnet.enabled", True),
        ("train.trainer.precision=bf16-mixed", "train.trainer.precision", "bf16-mixed"),
        ("model.graph.mode=none", "model.graph.mode", "none"),
        ("data.raw_dir=/data/raw", "data.raw_dir", "/data/raw"),
        ("data.split.train=[2000-01-03,2012-11-30]", "data.split.train", ["2000-01-03", "2012-11-30"]),
        ("model.quantiles=[0.1, 0.5, 0.9]", "model.quantiles", [0.1, 0.5, 0.9]),
    ],
)
def test_dotted_override_sets_a_typed_value(token, key, expected):
    resolved = load_config(None, [token], env={})
    value = OmegaConf.select(resolved.cfg, key)
    if isinstance(expected, list):
        value = OmegaConf.to_container(value)
    assert value == expected
    assert type(value) is type(expected)
    assert resolved.sources == {key: "cli"}


def test_several_overrides_and_linked_lists_together():
    resolved = load_config(
        "production",
        [
            "model.hidden_size=384",
            "data.horizons=[1,5]",
            "loss.horizon_weights=[1.0,0.5]",
            "data.raw_dir=null",
        ],
        env={},
    )
    assert resolved.cfg.model.hidden_size == 384
    assert list(resolved.cfg.data.horizons) == [1, 5]
    assert list(resolved.cfg.loss.horizon_weights) == [1.0, 0.5]
    assert resolved.cfg.data.raw_dir is None
    assert resolved.sources["model.hidden_size"] == "cli"
    assert "data.raw_dir" not in resolved.sources  # null is its default


def test_precision_given_as_a_number_is_the_string_32():
    resolved = load_config("production", ["train.trainer.precision=32"], env={})
    assert resolved.cfg.train.trainer.precision == "32"
    assert "train.trainer.precision" not in resolved.sources  # back at the schema default


def test_unknown_override_key_suggests_the_closest():
    message = error_of(None, ["train.optimizer.lrr=3e-4"])
    assert "'train.optimizer.lrr'" in message
    assert "Did you mean 'train.optimizer.lr'" in message
    assert "train.optimizer.lrr=3e-4" in message  # the token


def test_override_of_a_section_is_refused():
    message = error_of(None, ["model.fan=3"])
    assert "model.fan" in message and "section" in message


@pytest.mark.parametrize(
    ("token", "expected_type", "given"),
    [
        ("model.hidden_size=abc", "expected int", "'abc'"),
        ("train.max_epochs=2.5", "expected int", "'2.5'"),
        ("train.optimizer.lr=fast", "expected float", "'fast'"),
        ("model.fan.enabled=maybe", "expected bool", "'maybe'"),
        ("data.horizons=5", "expected list[int]", "5"),
    ],
)
def test_wrong_type_names_key_and_expected_type(token, expected_type, given):
    message = error_of(None, [token])
    key = token.split("=")[0]
    assert message.startswith(key)
    assert expected_type in message
    assert f"got {given}" in message


@pytest.mark.parametrize(
    ("token", "where", "allowed"),
    [
        ("loss.weights.sharpe=-1", "loss.weights.sharpe", "must be >= 0"),
        ("train.optimizer.lr=0", "train.optimizer.lr", "must be > 0"),
        ("model.dropout=1.0", "model.dropout", "must be in [0, 1)"),
        ("data.horizons=[1,300]", "data.horizons[1]", "must be in [1, 260]"),
        ("model.hidden_size=4", "model.hidden_size", "must be >= 8"),
    ],
)
def test_out_of_range_names_key_and_range(token, where, allowed):
    message = error_of(None, [token])
    assert message.startswith(where)
    assert allowed in message
    assert token in message


def test_bad_choice_lists_the_choices():
    message = error_of(None, ["train.trainer.precision=fp8"])
    assert message.startswith("train.trainer.precision")
    assert "'fp8'" in message
    assert "'32', 'bf16-mixed', '16-mixed'" in message


@pytest.mark.parametrize(
    ("token", "yaml_text"),
    [
        ("eval.split=valid", "eval:\n  split: valid\n"),
        ("eval.top_k=50", "eval:\n  top_k: 50\n"),
        ("eval.rebalance=daily", "eval:\n  rebalance: daily\n"),
    ],
)
def test_removed_eval_keys_are_unknown(tmp_path, token, yaml_text):
    # eval.split, eval.top_k and eval.rebalance were never read; setting them must not look like it works.
    key = token.split("=")[0]
    assert key not in schema_fields()
    message = error_of(None, [token])
    assert message.startswith(f"Unknown config key '{key}'.")
    assert f"override {token!r}" in message
    path = write_preset(tmp_path, "old.yaml", yaml_text)
    message = error_of(path)
    assert f"Unknown config key '{key}'" in message and str(path) in message


@pytest.mark.parametrize("name", ["apex_ranker", "mlp", "lightgbm", "ATFT_GAT_FAN", "APEX"])
def test_model_name_accepts_only_models_that_exist(name):
    message = error_of(None, [f"model.name={name}"])
    assert message.startswith(f"model.name (from override 'model.name={name}')")
    assert f"{name!r} is not an available model" in message
    assert "the models that exist are 'atft_gat_fan', 'apex'" in message
    assert "train" not in message.split(":", 1)[1]  # no other key is blamed


def test_model_name_default_spelling_loads():
    resolved = load_config(None, ["model.name=atft_gat_fan"], env={})
    assert resolved.cfg.model.name == "atft_gat_fan"
    assert resolved.sources == {}  # the default


def test_model_name_apex_and_its_section():
    resolved = load_config(None, ["model.name=apex", "model.apex.d_model=48", "model.apex.stride=4"], env={})
    apex = resolved.cfg.model.apex
    assert resolved.cfg.model.name == "apex"
    assert (apex.patch_len, apex.stride, apex.d_model, apex.n_layers, apex.n_heads) == (5, 4, 48, 2, 4)
    assert resolved.sources == dict.fromkeys(["model.name", "model.apex.d_model", "model.apex.stride"], "cli")


@pytest.mark.parametrize(
    ("token", "allowed"),
    [
        ("model.apex.patch_len=0", ">= 1"),
        ("model.apex.stride=0", ">= 1"),
        ("model.apex.d_model=4", ">= 8"),
        ("model.apex.n_layers=0", ">= 1"),
        ("model.apex.n_heads=0", ">= 1"),
        ("model.apex.dropout=1", "in [0, 1)"),
        ("model.apex.max_patches=0", ">= 1"),
    ],
)
def test_apex_sizes_are_range_checked(token, allowed):
    message = error_of(None, [token])
    assert message.startswith(f"{token.split('=')[0]} (from override {token!r})")
    assert "out of range" in message and allowed in message


def test_apex_preset_selects_apex_and_a_ranking_objective():
    resolved = load_config("apex", env={})
    cfg = resolved.cfg
    assert cfg.model.name == "apex" and cfg.model.head.variant == "apex"
    assert resolved.sources["model.name"] == "preset:apex"
    w = cfg.loss.weights
    assert cfg.loss.listnet.enabled and w.listnet > 0 and w.ranknet > 0
    assert 0 < w.huber
    assert w.rankic == w.cs_ic == w.sharpe == 0  # the other ranking terms are off
    # the CPU training settings of cpu.yaml, restated (a preset cannot build on another)
    cpu = load_config("cpu", env={}).cfg
    for key in ("data.lookback", "train.max_epochs", "train.optimizer.lr", "train.optimizer.weight_decay",
                "train.scheduler.warmup_epochs", "train.early_stopping.patience"):  # fmt: skip
        assert OmegaConf.select(cfg, key) == OmegaConf.select(cpu, key), key
    # but not the precision: bf16's effect on APEX's forecasts is unmeasured (docs/decisions.md 39)
    assert (cfg.train.trainer.precision, cpu.train.trainer.precision) == ("32", "auto")


def test_horizon_weights_must_match_horizons():
    message = error_of(None, ["data.horizons=[1,5]", "loss.horizon_weights=[1,2,3,4]"])
    assert "loss.horizon_weights" in message and "data.horizons" in message
    assert "one weight per horizon" in message


def test_default_equal_horizon_weights_follow_the_horizons():
    resolved = load_config(None, ["data.horizons=[1,5]"], env={})
    assert list(resolved.cfg.loss.horizon_weights) == [1.0, 1.0]
    assert resolved.sources["loss.horizon_weights"] == "derived:data.horizons"


@pytest.mark.parametrize("token", ["model.hidden_size", "=3", "hidden_size 64"])
def test_malformed_token_is_named(token):
    message = error_of(None, [token])
    assert "Malformed override" in message
    assert repr(token) in message


# --- environment aliases --------------------------------------------------------------------------

# For every alias: the text of the variable, and the value it must produce (each differs from the default).
ALIAS_CASES = {
    "SHARPE_WEIGHT": ("0.3", 0.3),
    "RANKIC_WEIGHT": ("0.2", 0.2),
    "CS_IC_WEIGHT": ("0.15", 0.15),
    "HUBER_WEIGHT": ("0.5", 0.5),
    "PINBALL_WEIGHT": ("0.25", 0.25),
    "COVERAGE_WEIGHT": ("0.25", 0.25),
    "RANKNET_WEIGHT": ("0.25", 0.25),
    "VARIANCE_FLOOR_WEIGHT": ("0.25", 0.25),
    "EXPOSURE_WEIGHT": ("0.25", 0.25),
    "TURNOVER_WEIGHT": ("0.25", 0.25),
    "USE_LISTNET_LOSS": ("1", True),
    "LISTNET_WEIGHT": ("0.4", 0.4),
    "LISTNET_TAU": ("0.5", 0.5),
    "LISTNET_TOPK": ("20", 20),
    "TRAIN_SCHEDULER": ("plateau", "plateau"),
    "WARMUP_EPOCHS": ("0", 0),
    "PRED_HEAD_VARIANT": ("apex", "apex"),
    "PRED_HEAD_INIT_STD": ("0.02", 0.02),
    "PRED_HEAD_LAYER_SCALE": ("0.1", 0.1),
    "PRED_HEAD_USE_LAYERNORM": ("true", True),
    "ENABLE_PREDICTION_HEAD_DIAGNOSTICS": ("0", False),
    "GRAD_MONITOR_EVERY": ("10", 10),
    "DISABLE_GRAPH_BUILDER": ("yes", "none"),
    "BYPASS_GAT_COMPLETELY": ("TRUE", False),
}

ALIAS_KEYS = {
    "SHARPE_WEIGHT": "loss.weights.sharpe",
    "RANKIC_WEIGHT": "loss.weights.rankic",
    "CS_IC_WEIGHT": "loss.weights.cs_ic",
    "HUBER_WEIGHT": "loss.weights.huber",
    "PINBALL_WEIGHT": "loss.weights.pinball",
    "COVERAGE_WEIGHT": "loss.weights.coverage",
    "RANKNET_WEIGHT": "loss.weights.ranknet",
    "VARIANCE_FLOOR_WEIGHT": "loss.weights.variance_floor",
    "EXPOSURE_WEIGHT": "loss.weights.exposure",
    "TURNOVER_WEIGHT": "loss.weights.turnover",
    "USE_LISTNET_LOSS": "loss.listnet.enabled",
    "LISTNET_WEIGHT": "loss.weights.listnet",
    "LISTNET_TAU": "loss.listnet.tau",
    "LISTNET_TOPK": "loss.listnet.topk",
    "TRAIN_SCHEDULER": "train.scheduler.name",
    "WARMUP_EPOCHS": "train.scheduler.warmup_epochs",
    "PRED_HEAD_VARIANT": "model.head.variant",
    "PRED_HEAD_INIT_STD": "model.head.init_std",
    "PRED_HEAD_LAYER_SCALE": "model.head.layer_scale",
    "PRED_HEAD_USE_LAYERNORM": "model.head.use_layernorm",
    "ENABLE_PREDICTION_HEAD_DIAGNOSTICS": "train.diagnostics.head_diagnostics",
    "GRAD_MONITOR_EVERY": "train.diagnostics.grad_monitor_every",
    "DISABLE_GRAPH_BUILDER": "model.graph.mode",
    "BYPASS_GAT_COMPLETELY": "model.gat.enabled",
}


def test_alias_table_is_exactly_the_documented_set():
    assert set(ENV_ALIASES) == set(ALIAS_CASES) == set(ALIAS_KEYS)
    assert {var: alias.key for var, alias in ENV_ALIASES.items()} == ALIAS_KEYS


@pytest.mark.parametrize("var", sorted(ALIAS_CASES))
def test_env_alias_sets_its_key(var):
    text, expected = ALIAS_CASES[var]
    key = ALIAS_KEYS[var]
    resolved = load_config(None, env={var: text})
    value = OmegaConf.select(resolved.cfg, key)
    assert value == pytest.approx(expected) if isinstance(expected, float) else value == expected
    assert type(value) is type(expected)
    assert resolved.sources == {key: f"env:{var}"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", True), ("0", False), ("true", True), ("False", False), ("YES", True), ("no", False)],
)
def test_bool_alias_accepts_the_usual_spellings(text, expected):
    resolved = load_config(None, env={"PRED_HEAD_USE_LAYERNORM": text})
    assert resolved.cfg.model.head.use_layernorm is expected


@pytest.mark.parametrize("var", ["DISABLE_GRAPH_BUILDER", "BYPASS_GAT_COMPLETELY"])
def test_false_switch_alias_sets_nothing(var):
    resolved = load_config(None, env={var: "0"})
    assert resolved.cfg.model.graph.mode == "correlation"
    assert resolved.cfg.model.gat.enabled is True
    assert resolved.sources == {}


@pytest.mark.parametrize("var", ["USE_LISTNET_LOSS", "DISABLE_GRAPH_BUILDER", "PRED_HEAD_USE_LAYERNORM"])
def test_bad_bool_env_value_names_the_variable(var):
    message = error_of(None, env={var: "maybe"})
    assert var in message
    assert "'maybe'" in message
    assert "true/false" in message


def test_bad_env_value_names_variable_and_key():
    message = error_of(None, env={"SHARPE_WEIGHT": "-1"})
    assert "loss.weights.sharpe" in message and "SHARPE_WEIGHT" in message and ">= 0" in message
    message = error_of(None, env={"TRAIN_SCHEDULER": "cosine"})
    assert "TRAIN_SCHEDULER" in message and "'warmup_cosine', 'plateau', 'constant'" in message


def test_empty_env_value_is_ignored():
    assert load_config(None, env={"SHARPE_WEIGHT": ""}).sources == {}


# --- precedence and provenance --------------------------------------------------------------------


def test_precedence_preset_then_env_then_cli(tmp_path):
    path = write_preset(
        tmp_path,
        "exp.yaml",
        "loss:\n  weights:\n    sharpe: 0.1\n    rankic: 0.9\nmodel:\n  hidden_size: 128\n",
    )
    env = {"SHARPE_WEIGHT": "0.2", "RANKIC_WEIGHT": "0.8", "PRED_HEAD_VARIANT": "apex"}
    resolved = load_config(path, ["loss.weights.sharpe=0.3"], env=env)
    cfg = resolved.cfg
    assert cfg.loss.weights.sharpe == pytest.approx(0.3)  # cli beats env beats preset
    assert cfg.loss.weights.rankic == pytest.approx(0.8)  # env beats preset
    assert cfg.model.hidden_size == 128  # preset beats default
    assert resolved.sources == {
        "loss.weights.sharpe": "cli",
        "loss.weights.rankic": "env:RANKIC_WEIGHT",
        "model.head.variant": "env:PRED_HEAD_VARIANT",
        "model.hidden_size": f"preset:{path}",
    }
    assert resolved.non_default() == [
        ("loss.weights.rankic", pytest.approx(0.8), "env:RANKIC_WEIGHT"),
        ("loss.weights.sharpe", pytest.approx(0.3), "cli"),
        ("model.head.variant", "apex", "env:PRED_HEAD_VARIANT"),
        ("model.hidden_size", 128, f"preset:{path}"),
    ]


def test_env_none_reads_the_process_environment(monkeypatch):
    monkeypatch.setenv("LISTNET_TOPK", "7")
    resolved = load_config(None)
    assert resolved.cfg.loss.listnet.topk == 7
    assert resolved.sources["loss.listnet.topk"] == "env:LISTNET_TOPK"


# --- docs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("var", sorted(ALIAS_KEYS))
def test_docs_table_lists_every_alias(var):
    rows = [line for line in (REPO / "docs" / "config.md").read_text().splitlines() if f"| `{var}` |" in line]
    assert len(rows) == 1
    assert f"`{ALIAS_KEYS[var]}`" in rows[0]


# --- module layout --------------------------------------------------------------------------------


def test_schema_does_not_import_the_validation_engine():
    tree = ast.parse((REPO / "src" / "atft" / "config" / "schema.py").read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {
        alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    assert not any(name and name.startswith("atft") for name in imported)
    # The engine sees the same keys as the schema.
    assert field_spec("train.optimizer.lr") == schema_fields()["train.optimizer.lr"]


# --- CLI ------------------------------------------------------------------------------------------

# Run the CLI with every alias variable unset, whatever the calling shell has exported.
CLEAN_ENV = dict.fromkeys([*ENV_ALIASES, "ATFT_CONFIG_DIR"])


def test_show_prints_yaml_and_sources():
    runner = CliRunner()
    result = runner.invoke(
        config_cli.app,
        ["show", "--preset", "production", "train.optimizer.lr=3e-4"],
        env={**CLEAN_ENV, "SHARPE_WEIGHT": "0.25"},
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "hidden_size: 256" in out  # the YAML
    table = out[out.index("Non-default values") :]
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") >= 3}
    assert "0.0003" in rows["train.optimizer.lr"] and "cli" in rows["train.optimizer.lr"]
    assert "env:SHARPE_WEIGHT" in rows["loss.weights.sharpe"]
    assert "preset:production" in rows["model.hidden_size"]


def test_show_error_is_one_clean_line_with_exit_code_2():
    result = CliRunner().invoke(config_cli.app, ["show", "model.hidden_size=abc"], env=CLEAN_ENV)
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert "\n" not in err
    assert err.startswith("error: model.hidden_size")
    assert "expected int" in err
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_show_unknown_preset_exits_2():
    result = CliRunner().invoke(config_cli.app, ["show", "--preset", "nope"], env=CLEAN_ENV)
    assert result.exit_code == 2
    assert "production" in result.stderr


def test_show_help_describes_the_command():
    result = CliRunner().invoke(config_cli.app, ["show", "--help"])
    assert result.exit_code == 0
    assert "--preset" in result.stdout
    assert "where it came from" in result.stdout


@pytest.mark.parametrize(
    "bad", ["[2020-13-01,2021-01-01]", "[2020-02-30,2021-01-01]", "[2021-01-01,2020-01-01]"]
)
def test_impossible_split_dates_are_config_errors_naming_the_key(bad):
    with pytest.raises(ConfigError, match=r"data\.split\.train"):
        load_config(overrides=[f"data.split.train={bad}"], env={})


def test_impossible_date_in_a_preset_names_the_file(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("data:\n  split:\n    train: [2020-13-01, 2021-01-01]\n")
    with pytest.raises(ConfigError, match=r"data\.split\.train.*p\.yaml"):
        load_config(path, env={})


def test_split_dates_stay_iso_strings():
    cfg = load_config(overrides=["data.split.train=[2000-01-03,2012-11-30]"], env={}).cfg
    assert list(cfg.data.split.train) == ["2000-01-03", "2012-11-30"]


def test_warmup_must_be_shorter_than_training():
    with pytest.raises(ConfigError, match=r"WARMUP_EPOCHS.*max_epochs|warmup_epochs.*max_epochs"):
        load_config(env={"WARMUP_EPOCHS": "1000"})
    assert (
        load_config(
            env={"WARMUP_EPOCHS": "1000", "TRAIN_SCHEDULER": "constant"}
        ).cfg.train.scheduler.warmup_epochs
        == 1000
    )


# --- warm-up against max_epochs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("preset", "epochs", "warmup"),
    [("cpu", 1, 0), (None, 1, 0), (None, 2, 1), ("production", 2, 1)],
)
def test_default_or_preset_warmup_shrinks_to_fit_max_epochs(preset, epochs, warmup):
    # cpu sets warmup 1, the schema default (and production) 2: both would not fit.
    resolved = load_config(preset, [f"train.max_epochs={epochs}"], env={})
    assert resolved.cfg.train.scheduler.warmup_epochs == warmup
    assert resolved.cfg.train.max_epochs == epochs
    assert resolved.sources["train.scheduler.warmup_epochs"] == "derived:train.max_epochs"


def test_max_epochs_1_works_with_the_default_preset():
    # What `atft train --max-epochs 1` asks for.
    cfg = load_config(overrides=["train.max_epochs=1"], env={}).cfg
    assert (cfg.train.max_epochs, cfg.train.scheduler.warmup_epochs) == (1, 0)


def test_preset_warmup_that_does_not_fit_its_own_epochs_shrinks(tmp_path):
    path = write_preset(tmp_path, "w.yaml", "train:\n  max_epochs: 4\n  scheduler:\n    warmup_epochs: 5\n")
    resolved = load_config(path, env={})
    assert resolved.cfg.train.scheduler.warmup_epochs == 3
    assert resolved.sources["train.scheduler.warmup_epochs"] == "derived:train.max_epochs"


def test_warmup_that_fits_is_left_alone():
    resolved = load_config(overrides=["train.max_epochs=2"], env={})
    assert resolved.cfg.train.scheduler.warmup_epochs == 1  # the cpu preset's
    assert resolved.sources["train.scheduler.warmup_epochs"] == "preset:cpu"
    # Without the warmup_cosine schedule the warm-up is not used, so nothing is adapted or checked.
    resolved = load_config(overrides=["train.max_epochs=1", "train.scheduler.name=constant"], env={})
    assert resolved.cfg.train.scheduler.warmup_epochs == 1
    assert resolved.sources["train.scheduler.warmup_epochs"] == "preset:cpu"


@pytest.mark.parametrize(
    ("overrides", "env", "warmup_origin"),
    [
        (
            ["train.max_epochs=1", "train.scheduler.warmup_epochs=1"],
            {},
            "override 'train.scheduler.warmup_epochs=1'",
        ),
        (["train.max_epochs=1"], {"WARMUP_EPOCHS": "1"}, "environment variable WARMUP_EPOCHS='1'"),
        (["train.max_epochs=3"], {"WARMUP_EPOCHS": "3"}, "environment variable WARMUP_EPOCHS='3'"),
    ],
)
def test_user_set_warmup_that_does_not_fit_is_an_error_naming_both_keys(overrides, env, warmup_origin):
    message = error_of("cpu", overrides, env=env)
    epochs = int(overrides[0].split("=")[1])
    assert message.startswith(f"train.scheduler.warmup_epochs (from {warmup_origin})")
    assert f"train.max_epochs (from override 'train.max_epochs={epochs}')" in message
    # ... and says how to fix it.
    assert f"set train.scheduler.warmup_epochs below {epochs}" in message
    assert f"train.scheduler.warmup_epochs={epochs - 1}" in message
    assert "raise train.max_epochs" in message


def test_show_marks_a_shrunk_warmup_as_derived():
    result = CliRunner().invoke(config_cli.app, ["show", "train.max_epochs=1"], env=CLEAN_ENV)
    assert result.exit_code == 0, result.output
    table = result.stdout[result.stdout.index("Non-default values") :]
    rows = {line.split("│")[1].strip(): line for line in table.splitlines() if line.count("│") >= 3}
    assert "derived:train.max_epochs" in rows["train.scheduler.warmup_epochs"]


def test_early_stopping_monitor_must_be_a_reported_metric():
    with pytest.raises(ConfigError, match=r"train\.early_stopping\.monitor.*val/rankic_5d"):
        load_config(overrides=["train.early_stopping.monitor=val/nonsense"], env={})
    assert (
        load_config(
            overrides=["train.early_stopping.monitor=val/sharpe_20d"], env={}
        ).cfg.train.early_stopping.monitor
        == "val/sharpe_20d"
    )
    with pytest.raises(ConfigError, match="monitor"):  # a horizon that is not predicted
        load_config(overrides=["train.early_stopping.monitor=val/rankic_3d"], env={})


# --- checks that link keys run once, on the final config ------------------------------------------


def test_env_sets_one_linked_key_and_cli_fixes_the_other():
    # After the env layer alone, warm-up (30) >= max_epochs (25): only the final config counts.
    resolved = load_config(None, ["train.max_epochs=50"], env={"WARMUP_EPOCHS": "30"})
    assert (resolved.cfg.train.scheduler.warmup_epochs, resolved.cfg.train.max_epochs) == (30, 50)
    assert resolved.sources == {
        "train.max_epochs": "cli",
        "train.scheduler.warmup_epochs": "env:WARMUP_EPOCHS",
    }


def test_preset_sets_horizons_and_cli_sets_their_weights(tmp_path):
    path = write_preset(tmp_path, "h.yaml", "data:\n  horizons: [1, 5]\n")
    resolved = load_config(path, ["loss.horizon_weights=[1.0, 0.5]"], env={})
    assert list(resolved.cfg.data.horizons) == [1, 5]
    assert list(resolved.cfg.loss.horizon_weights) == [1.0, 0.5]


def test_cross_field_error_names_each_key_and_its_source():
    message = error_of(None, env={"WARMUP_EPOCHS": "30"})
    assert "train.scheduler.warmup_epochs (from environment variable WARMUP_EPOCHS='30')" in message
    assert "train.max_epochs (from the schema default)" in message
    message = error_of(None, ["train.max_epochs=10"], env={"WARMUP_EPOCHS": "30"})
    assert "WARMUP_EPOCHS" in message and "override 'train.max_epochs=10'" in message


def test_per_field_errors_still_name_the_layer_that_set_them():
    # A bad value in the env layer is reported even though the command line sets the key again.
    message = error_of(None, ["loss.weights.sharpe=0.5"], env={"SHARPE_WEIGHT": "-1"})
    assert message.startswith("loss.weights.sharpe (from environment variable SHARPE_WEIGHT='-1')")


# --- early-stopping monitor and mode ----------------------------------------------------------------


# Without 5, the default monitor watches RankIC at the horizon closest to 5 days (ties: the shorter).
@pytest.mark.parametrize(
    ("horizons", "weights", "monitor"),
    [
        ("[1,10]", "[1,1]", "val/rankic_1d"),
        ("[10,20]", "[1,1]", "val/rankic_10d"),
        ("[3,7]", "[1,1]", "val/rankic_3d"),
        ("[1,5,10]", "[1,1,1]", "val/rankic_5d"),
    ],
)
def test_default_monitor_follows_the_horizons(horizons, weights, monitor):
    resolved = load_config(None, [f"data.horizons={horizons}", f"loss.horizon_weights={weights}"], env={})
    assert resolved.cfg.train.early_stopping.monitor == monitor
    assert resolved.cfg.train.early_stopping.mode == "max"
    if monitor != "val/rankic_5d":
        assert resolved.sources["train.early_stopping.monitor"] == "derived:data.horizons"


def test_explicit_monitor_for_a_missing_horizon_lists_the_valid_names():
    message = error_of(
        None,
        ["data.horizons=[1,10]", "loss.horizon_weights=[1,1]", "train.early_stopping.monitor=val/rankic_5d"],
    )
    assert message.startswith("train.early_stopping.monitor (from override")
    assert "data.horizons" in message
    assert "val/rankic_1d" in message and "val/sharpe_10d" in message and "val/loss" in message
    valid_names = message.split("valid names", 1)[1]
    assert "_5d" not in valid_names  # only horizons that are configured are offered


def test_explicit_monitor_in_a_preset_is_not_replaced(tmp_path):
    path = write_preset(
        tmp_path,
        "m.yaml",
        "train:\n  early_stopping:\n    monitor: val/rankic_5d\ndata:\n  horizons: [1, 10]\n",
    )
    message = error_of(path, ["loss.horizon_weights=[1,1]"])
    assert "train.early_stopping.monitor" in message and str(path) in message


@pytest.mark.parametrize(
    ("monitor", "mode", "needed"),
    [
        ("val/loss", "max", "'min'"),
        ("val/mae_5d", "max", "'min'"),
        ("val/rmse_20d", "max", "'min'"),
        ("val/rankic_5d", "min", "'max'"),
        ("val/sharpe_10d", "min", "'max'"),
        ("val/ic_1d", "min", "'max'"),
    ],
)
def test_explicit_mode_must_fit_the_monitor(monitor, mode, needed):
    message = error_of(None, [f"train.early_stopping.monitor={monitor}", f"train.early_stopping.mode={mode}"])
    assert "train.early_stopping.mode" in message and "train.early_stopping.monitor" in message
    assert f"must be {needed}" in message


def test_explicit_mode_against_the_default_monitor_fails():
    message = error_of(None, env={}, overrides=["train.early_stopping.mode=min"])
    assert "train.early_stopping.monitor (from the schema default)" in message
    assert "must be 'max'" in message


@pytest.mark.parametrize(
    ("monitor", "mode"), [("val/loss", "min"), ("val/mae_10d", "min"), ("val/icir_5d", "max")]
)
def test_default_mode_follows_the_monitor(monitor, mode):
    resolved = load_config(None, [f"train.early_stopping.monitor={monitor}"], env={})
    assert resolved.cfg.train.early_stopping.mode == mode
    if mode == "min":
        assert resolved.sources["train.early_stopping.mode"] == "derived:train.early_stopping.monitor"


def test_scale_may_be_watched_either_way():
    for mode in ("min", "max"):
        cfg = load_config(
            None, ["train.early_stopping.monitor=val/scale_5d", f"train.early_stopping.mode={mode}"], env={}
        ).cfg
        assert cfg.train.early_stopping.mode == mode


# --- unreadable and malformed presets ---------------------------------------------------------------


def test_preset_that_is_not_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("model:\n  hidden_size: 64  # café\n".encode("latin-1"))
    message = error_of(path)
    assert str(path) in message and "UTF-8" in message


def test_preset_that_is_a_directory_names_it(tmp_path):
    folder = tmp_path / "exp.yaml"
    folder.mkdir()
    message = error_of(folder)
    assert str(folder) in message and "directory" in message


def test_preset_without_read_permission_names_the_file(tmp_path, monkeypatch):
    path = write_preset(tmp_path, "secret.yaml", "model:\n  hidden_size: 96\n")
    real_read_text = Path.read_text

    def read_text(self, *args, **kwargs):  # chmod does not stop root, so refuse the read here
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    message = error_of(path)
    assert str(path) in message and "Permission denied" in message


def test_duplicate_key_in_a_preset_names_the_file_and_key(tmp_path):
    path = write_preset(
        tmp_path, "dup.yaml", "data:\n  lookback: 20\n  horizons: [1, 5, 10, 20]\n  lookback: 60\n"
    )
    message = error_of(path)
    assert str(path) in message
    assert "'lookback'" in message and "lines 2 and 4" in message


def test_duplicate_section_in_a_preset_is_refused(tmp_path):
    path = write_preset(tmp_path, "dup.yaml", "model:\n  hidden_size: 96\nmodel:\n  dropout: 0.2\n")
    assert "'model'" in error_of(path)


def test_yaml_merge_keys_are_not_duplicates(tmp_path):
    path = write_preset(
        tmp_path,
        "merge.yaml",
        "train:\n  batch:\n    <<: {train_batch_size: 512, days_per_batch: 2}\n    days_per_batch: 3\n",
    )
    cfg = load_config(path, env={}).cfg
    assert (cfg.train.batch.train_batch_size, cfg.train.batch.days_per_batch) == (512, 3)


# --- strict dates -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad", ["２０２０-01-03", "2020-1-3", "2020-01-03T00:00", "20200103", "2020-W01-1", "2020-01-03 "]
)
def test_split_dates_must_be_strict_yyyy_mm_dd(bad):
    message = error_of(None, [f"data.split.valid=[{bad!r},2021-01-01]".replace("'", '"')])
    assert message.startswith("data.split.valid")
    assert "YYYY-MM-DD" in message and "ASCII" in message


def test_strict_date_in_a_preset_names_the_key_and_file(tmp_path):
    path = write_preset(tmp_path, "d.yaml", "data:\n  split:\n    test: ['20200103', '2021-01-01']\n")
    message = error_of(path)
    assert message.startswith("data.split.test") and str(path) in message and "YYYY-MM-DD" in message


def test_interpolation_to_a_missing_key_is_a_config_error():
    message = error_of(None, ["data.raw_dir=${nope}"])
    assert "interpolation" in message and "nope" in message


@pytest.mark.parametrize(
    "dates, named",
    [
        ([], "data.split.train"),
        (["data.split.train=[2015-01-05,2016-12-30]"], "data.split.valid or data.split.test"),
    ],
)
def test_explicit_split_mode_needs_train_and_an_evaluation_segment(dates, named):
    with pytest.raises(ConfigError, match=f"needs \\[start, end\\] dates for {named}"):
        load_config(overrides=["data.split.mode=explicit", *dates])
    ok = load_config(
        overrides=[
            "data.split.mode=explicit",
            "data.split.train=[2015-01-05,2016-12-30]",
            "data.split.test=[2017-03-01,2017-12-29]",
        ]
    )
    assert ok.cfg.data.split.valid is None
