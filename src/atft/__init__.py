"""ATFT: learns to rank stocks at several horizons and measures the result honestly.

Data flows through one package per stage:
``atft.data`` -> ``atft.features`` -> ``atft.models`` -> ``atft.training`` -> ``atft.evaluation`` -> ``atft.reporting``,
with a thin Typer CLI (``atft.cli``) on top and a typed configuration (``atft.config``) beside it.
"""

__version__ = "0.1.0"
