"""`python -m tlzoo`: the CLI (what torchrun launches with `-m tlzoo`)."""

from tlzoo.cli.main import main

main()
