"""`python -m pipeline` is the same as the `newsbeam` command."""

from pipeline.cli import entry_point

entry_point()
