"""``python -m lttoolkit``: the same as the ``lttk`` command (torchrun uses this form)."""

from lttoolkit.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
