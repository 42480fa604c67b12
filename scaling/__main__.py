"""`python -m scaling`: the command line, as `scaling`."""

from .cli import main

main()
