"""A Griffe extension for the API reference: doctests in docstrings become code blocks.

lttoolkit's docstrings carry short ``>>>`` examples (run by ``pytest --doctest-modules``)
outside of an ``Examples:`` section (in the text, or under ``Example:``, which Griffe
shows as an admonition). Markdown would read ``>>>`` as nested block quotes and
``[1.0, 0.75]`` as link references, so each run of doctest lines at the left margin is
wrapped in a fenced ``pycon`` block before mkdocstrings renders it. Doctests in an
``Examples:`` section are left to Griffe, which already renders them as code.
"""

from __future__ import annotations

from typing import Any

try:
    from griffe import Extension
except ImportError:  # without the docs tools fence_doctests still imports (tests/test_docs.py uses it)
    Extension = object  # type: ignore[assignment,misc]


def fence_doctests(text: str) -> str:
    """Wrap every doctest block of ``text`` in a fenced ``pycon`` code block.

    A block starts at a line beginning with ``>>>`` (after its indentation) and runs to the
    next blank line; the fence gets the block's indentation, so doctests under an
    ``Example:`` admonition stay inside it. Blocks in an ``Examples:`` section are left as
    they are: Griffe parses that section itself.

    >>> fence_doctests("Sum.\\n>>> 1 + 1\\n2\\n\\nDone.").splitlines()
    ['Sum.', '```pycon', '>>> 1 + 1', '2', '```', '', 'Done.']
    """
    out: list[str] = []
    indent: str | None = None  # the open block's indentation
    in_fence = in_examples = False
    for line in text.splitlines():
        stripped = line.lstrip()
        if line and not line[0].isspace():
            in_examples = stripped.rstrip() == "Examples:"
        if stripped.startswith("```"):
            in_fence = not in_fence
        if indent is None and not in_fence and not in_examples and stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
        elif indent is not None and not stripped:
            out.append(f"{indent}```")
            indent = None
        out.append(line)
    if indent is not None:
        out.append(f"{indent}```")
    return "\n".join(out)


class FenceDoctests(Extension):
    """Fence the doctests of every docstring Griffe loads."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None and ">>>" in docstring.value:
            docstring.value = fence_doctests(docstring.value)
