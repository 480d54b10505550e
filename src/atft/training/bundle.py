"""The model bundle: one self-contained file that scores stocks without the run folder or its dataset.

``atft bundle RUN --out FILE`` writes it; ``atft predict`` and ``atft serve`` read it. This module is the one
reader and writer of the format, a zip archive of three members::

    bundle.json   format version, model, horizons, quantiles, the feature list and its hash, the feature
                  normalization (per date, so there are no fitted statistics to carry: the method and clip
                  are the statistics), the dataset's manifest hash and where its raw store was, provenance
    config.yaml   the run's resolved configuration
    weights.pt    the selected checkpoint's model weights (a plain state dict, read with weights_only=True,
                  so loading a bundle never runs pickled code)

The feature hash is checked at load: a bundle whose feature list was edited, or that was damaged, is refused
with one line. Label scaling (``target_scale``) is a buffer of the weights, so it travels with them.
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from atft.config import ATFTConfig, ConfigError, load_config
from atft.data.store import atomic_write, first_line
from atft.features.dataset import DatasetFolder
from atft.training.module import ForecastModule
from atft.training.run_folder import RunFolder

FORMAT = "atft-bundle"
VERSION = 1
_MEMBERS = ("bundle.json", "config.yaml", "weights.pt")


class BundleError(ValueError):
    """A bundle file is missing, damaged, of another format, or its feature list fails its hash."""


def feature_hash(feature_names: list[str], normalization: dict[str, Any]) -> str:
    """sha256 of the model's input features in order and how they were normalized per date.

    Two feature sets with the same hash feed the model the same columns, built and scaled the same way.
    """
    text = json.dumps({"features": list(feature_names), "normalization": normalization}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _normalization(manifest: dict[str, Any]) -> dict[str, Any]:
    """The part of a dataset manifest that decides the scale of every input: method, clip and warmup."""
    norm = manifest.get("normalization") or {}
    return {
        "method": norm.get("method"),
        "clip": norm.get("clip"),
        "warmup_days": manifest.get("warmup_days"),
    }


def _raw_dir(dataset: DatasetFolder) -> str | None:
    """The raw store a dataset was built from, as an absolute path where it can be found (a relative path
    in the manifest was relative to wherever ``atft data build`` ran)."""
    raw = (dataset.manifest.get("source") or {}).get("raw_dir")
    if not raw or Path(raw).is_absolute():
        return raw
    for base in (Path.cwd(), dataset.root.resolve().parent):
        if (base / raw).is_dir():
            return str((base / raw).resolve())
    return raw


@dataclass
class ModelBundle:
    """A trained forecaster with everything needed to score a new day: the module, its config and provenance.

    ``info`` is ``bundle.json`` (see the module docstring); ``source`` the run folder or bundle file it came
    from. Build one with :meth:`from_run` or :meth:`read`; :meth:`open` takes either.
    """

    module: ForecastModule
    cfg: ATFTConfig
    info: dict[str, Any]
    source: Path

    @property
    def feature_names(self) -> list[str]:
        return list(self.info["feature_names"])

    @property
    def horizons(self) -> list[int]:
        return [int(h) for h in self.info["horizons"]]

    @property
    def raw_dir(self) -> Path | None:
        """The raw store the training dataset was built from (where the daily list reads by default)."""
        raw = (self.info.get("dataset") or {}).get("raw_dir")
        return Path(raw) if raw else None

    @classmethod
    def open(cls, source: str | Path) -> ModelBundle:
        """A run folder (its selected checkpoint) or a bundle file."""
        source = Path(source)
        if source.is_dir():
            return cls.from_run(source)
        if not source.exists():
            raise BundleError(
                f"{source} not found: give a run folder of `atft train` or a file of `atft bundle`"
            )
        return cls.read(source)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> ModelBundle:
        """The selected checkpoint of a finished run, with the facts of its dataset."""
        folder = RunFolder(run_dir)
        folder.require_run()
        cfg = folder.read_config()
        checkpoint = folder.selected_checkpoint()
        folder.check_checkpoint(checkpoint)
        module = ForecastModule.load_from_checkpoint(checkpoint, map_location="cpu")
        dataset = DatasetFolder(folder.data_path())
        manifest = dataset.manifest
        normalization = _normalization(manifest)
        features = list(module.hparams["feature_names"])
        info = {
            "format": FORMAT,
            "version": VERSION,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "run": str(Path(run_dir).resolve()),
            "checkpoint": checkpoint.name,
            "model": str(cfg.model.name),
            "horizons": [int(h) for h in module.hparams["horizons"]],
            "quantiles": [float(q) for q in cfg.model.quantiles],
            "feature_names": features,
            "feature_hash": feature_hash(features, normalization),
            "normalization": normalization,
            "target_scale": list(module.hparams.get("target_scale") or []),
            "dataset": {
                "path": str(dataset.root),
                "manifest_sha256": hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest(),
                "schema_hash": manifest.get("schema_hash"),
                "date_range": manifest.get("date_range"),
                "raw_dir": _raw_dir(dataset),
                "sector_level": manifest.get("sector_level"),
            },
        }
        module.eval()
        return cls(module, cfg, info, Path(run_dir))

    def write(self, path: str | Path) -> Path:
        """Write the bundle file atomically (a kill leaves the old file or none, never half of one)."""
        path = Path(path)
        weights = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.module.state_dict().items()}, weights)
        config = OmegaConf.to_yaml(self.cfg, resolve=True)

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
                archive.writestr("bundle.json", json.dumps(self.info, indent=2))
                archive.writestr("config.yaml", config)
                archive.writestr("weights.pt", weights.getvalue())

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)
        return path

    @classmethod
    def read(cls, path: str | Path) -> ModelBundle:
        """Load a bundle file, checking its format, its members and its feature hash; one line when it fails."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                missing = [m for m in _MEMBERS if m not in archive.namelist()]
                if missing:
                    raise BundleError(
                        f"{path} is not an ATFT bundle (no {', '.join(missing)}): write one with `atft bundle`"
                    )
                bad = archive.testzip()
                if bad is not None:
                    raise BundleError(f"{path} is damaged (member {bad} fails its checksum): write it again")
                info = json.loads(archive.read("bundle.json"))
                config_text = archive.read("config.yaml").decode()
                weights = torch.load(
                    io.BytesIO(archive.read("weights.pt")), map_location="cpu", weights_only=True
                )
        except BundleError:
            raise
        except (
            zipfile.BadZipFile,
            json.JSONDecodeError,
            UnicodeDecodeError,
            RuntimeError,
            EOFError,
            OSError,
        ) as e:
            reason = first_line(e)
            raise BundleError(
                f"{path} is damaged or not an ATFT bundle ({reason}): write it again with `atft bundle`"
            ) from None
        if info.get("format") != FORMAT or info.get("version") != VERSION:
            raise BundleError(
                f"{path}: bundle format {info.get('format')!r} version {info.get('version')!r}; "
                f"this ATFT reads {FORMAT!r} version {VERSION}"
            )
        expected = feature_hash(info["feature_names"], info["normalization"])
        if expected != info.get("feature_hash"):
            raise BundleError(
                f"{path}: the feature list does not match its hash (recorded {str(info.get('feature_hash'))[:12]}, "
                f"computed {expected[:12]}): the bundle was edited or damaged; write it again with `atft bundle`"
            )
        try:
            with tempfile.TemporaryDirectory() as tmp:  # the loader reads presets from files
                (Path(tmp) / "config.yaml").write_text(config_text)
                cfg = load_config(Path(tmp) / "config.yaml", env={}).cfg
        except ConfigError as e:
            raise BundleError(f"{path}: config.yaml is not a valid config: {e}") from None
        module = ForecastModule(
            OmegaConf.to_container(cfg, resolve=True),
            list(info["feature_names"]),
            [int(h) for h in info["horizons"]],
            list(info["target_scale"]) or None,
        )
        try:
            module.load_state_dict(weights)
        except RuntimeError as e:
            raise BundleError(
                f"{path}: the weights do not fit the model its config describes ({str(e).splitlines()[0]})"
            ) from None
        module.eval()
        return cls(module, cfg, info, path)
