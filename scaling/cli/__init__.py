"""The `scaling` command line: thin Typer commands over the library, one module per group."""

from . import cache, networks, reporting, searching, studies, training  # noqa: F401  (registers the commands)
from .app import app


def main() -> None:
    app()
