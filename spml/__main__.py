"""`python -m spml` = the `spml` command."""

from spml.cli import main

main()
