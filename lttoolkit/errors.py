"""Exceptions raised by lttoolkit.

Every error says what was wrong and how to fix it. They all derive from
:class:`LTToolkitError`, and each also derives from the built-in exception a
caller would naturally catch (``KeyError`` for unknown names, ``TypeError`` for
bad options, ``ImportError`` for broken plugins).
"""

from __future__ import annotations

__all__ = [
    "LTToolkitError",
    "UnknownComponentError",
    "UnknownOptionError",
    "DuplicateComponentError",
    "PluginLoadError",
    "ComponentContractError",
    "BackboneSplitError",
    "PretrainedWeightsError",
    "ConfigError",
    "ComponentSpecError",
    "DataError",
    "RunExistsError",
    "RunWriteError",
    "ResumeMismatchError",
]


class LTToolkitError(Exception):
    """Base class of every error lttoolkit raises on purpose."""


class UnknownComponentError(LTToolkitError, KeyError):
    """A name is not in a registry; the message names the registry and the closest names."""

    def __str__(self) -> str:  # KeyError would repr() the message, quoting it
        return str(self.args[0]) if self.args else ""


class UnknownOptionError(LTToolkitError, TypeError):
    """A component was given an option it does not take; the message lists the valid ones."""


class DuplicateComponentError(LTToolkitError, ValueError):
    """A name is registered twice without ``force=True``."""


class PluginLoadError(LTToolkitError, ImportError):
    """A plugin failed to load; the message names its distribution and the original error."""


class ComponentContractError(LTToolkitError, TypeError):
    """A component (often a plugin's) broke its protocol, e.g. a schedule returned alpha > 1."""


class BackboneSplitError(LTToolkitError, ValueError):
    """The bilateral wrapper could not find the block to duplicate; the message says which path to pass."""


class PretrainedWeightsError(LTToolkitError, RuntimeError):
    """Pretrained weights were asked for but could not be loaded."""


class ConfigError(LTToolkitError, ValueError):
    """A configuration is invalid; the message names the field and the reason."""


class ComponentSpecError(ConfigError, TypeError):
    """A component spec is neither a name nor a ``{"type": name, ...}`` dict; the message shows the form."""


class DataError(LTToolkitError, ValueError):
    """A dataset is missing, empty or malformed; the message names the file or class."""


class RunExistsError(LTToolkitError, FileExistsError):
    """A new run was pointed at a folder that already holds a run (or other files); nothing was written."""


class RunWriteError(LTToolkitError, OSError):
    """A run file (config.yaml, metrics.jsonl, results.json) could not be written; the message says why
    (a full disk is named as such) and what of the run is kept."""


class ResumeMismatchError(ConfigError):
    """``--resume`` was asked to continue a run with settings that differ from the ones it was trained with."""
