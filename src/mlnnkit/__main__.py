"""`python -m mlnnkit` is the same as the `mlnnkit` command."""

if __name__ == "__main__":
    from mlnnkit.cli import main

    raise SystemExit(main())
