"""The dataset's namespaces: what a model may read as input, and what it may never read.

Labels (``target_*``, ``label_end_*``) hold the future by construction and the synthetic oracle
(``oracle_*``) holds the answer itself. They live in other files than the features, and
``select_features`` is the one gate through which a model picks its inputs: it refuses them by name.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

from atft.data.store import StoreError, read_manifest
from atft.features.labels import LABEL_PREFIXES

FORBIDDEN_PREFIXES = (*LABEL_PREFIXES, "oracle_")


class DatasetError(ValueError):
    """A dataset folder is missing, malformed, or asked for something it must not give."""


def read_dataset_manifest(path: str | Path) -> dict[str, Any]:
    """The manifest of a dataset folder written by ``atft data build`` (checked as any store's is)."""
    try:
        manifest = read_manifest(path)
    except StoreError as e:
        raise DatasetError(f"{e} (a dataset is made by `atft data build`)") from e
    if manifest.get("kind") != "dataset":
        raise DatasetError(
            f"{path} is not a dataset (its manifest says kind {manifest.get('kind')!r}); is it a raw store?"
        )
    return manifest


def is_forbidden_input(name: str, manifest: dict[str, Any]) -> bool:
    """True for any label or oracle column: names a model must never read as a feature."""
    label_columns = {n for names in manifest.get("labels", {}).values() for n in names}
    return name.startswith(FORBIDDEN_PREFIXES) or name in label_columns


def select_features(manifest: dict[str, Any], names: list[str] | None = None) -> list[str]:
    """The feature columns a model reads: ``names`` if given, else the manifest's ``model_features``.

    Raises DatasetError for a label or oracle name (they can never be features) and for an unknown name.
    """
    if names is None:
        names = list(manifest["model_features"])
    forbidden = [n for n in names if is_forbidden_input(n, manifest)]
    if forbidden:
        raise DatasetError(
            f"{', '.join(forbidden)}: labels and oracle columns can never be features "
            "(they hold the future); pick names from the manifest's feature list"
        )
    known = {n for group in manifest["features"].values() for n in group}
    for name in names:
        if name not in known:
            near = difflib.get_close_matches(name, sorted(known), n=3)
            hint = f"; did you mean {', '.join(near)}?" if near else ""
            raise DatasetError(f"unknown feature {name!r} in features.parquet{hint}")
    return list(names)
