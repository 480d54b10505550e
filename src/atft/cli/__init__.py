"""The ``atft`` command line: a thin Typer layer over the library; the root app is in ``atft.cli.app``."""
