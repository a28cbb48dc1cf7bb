"""`python -m pipeline` is the same as the `newsbeam` command."""

from pipeline.cli import main

raise SystemExit(main())
