"""Repository-level pytest settings (the suite's own fixtures are in tests/conftest.py)."""

# The plugin templates are modules with placeholder names (``from __PACKAGE__ import __ATTR__``):
# they are tested through the packages `lttk plugin new` makes from them (tests/test_scaffold.py).
collect_ignore_glob = ["lttoolkit/cli/templates/*"]
