"""Whole jobs over the library's stages: train a run, evaluate and backtest it, the demo. Only the CLI
imports this package; nothing below it does."""
