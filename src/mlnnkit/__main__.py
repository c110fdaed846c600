"""`python -m mlnnkit` is the same as the `mlnnkit` command."""

from mlnnkit.cli import main

raise SystemExit(main())
