"""__DIST__: an lttoolkit plugin providing __KIND_SUMMARY__, ``__COMPONENT__``.

lttoolkit finds it through the ``__GROUP__`` entry point in ``pyproject.toml``;
importing this package registers nothing by itself.
"""

from __future__ import annotations

from __PACKAGE__.__MODULE__ import __ATTR__

__all__ = ["__ATTR__"]
__version__ = "0.1.0"
