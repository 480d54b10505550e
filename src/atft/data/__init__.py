"""Market data: the canonical raw store, the synthetic market, and the importer for real daily panels."""
