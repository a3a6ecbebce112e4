"""Registries: one :class:`Registry` per kind of component, plus plugin loading.

The registry is the ground floor: it imports no component family. What is
specific to a family (its builtins, the timm fallback of the backbones, the
check a plugin's component must pass) is given to that family's registry here,
as ``"module:attr"`` strings imported on first use.

>>> from lttoolkit.registry import SCHEDULES
>>> SCHEDULES.list("parabolic*")
['parabolic', 'parabolic_increment']
"""

from __future__ import annotations

from lttoolkit._introspect import accepted_options, check_options
from lttoolkit.registry._builtins import BUILTINS
from lttoolkit.registry._entry import BUILTIN, Entry, registration_source
from lttoolkit.registry._plugins import (
    DISABLE_ENV,
    import_plugin_module,
    iter_entry_points,
    plugins_disabled,
    require_distributions,
)
from lttoolkit.registry._registry import Registry, resolve_target
from lttoolkit.registry._spec import parse_spec

__all__ = [
    "Registry",
    "Entry",
    "BUILTIN",
    "SAMPLERS",
    "LOSSES",
    "SCHEDULES",
    "BACKBONES",
    "METHODS",
    "DATASETS",
    "ALL_REGISTRIES",
    "load_plugin",
    "plugins_disabled",
    "iter_entry_points",
    "require_distributions",
    "registration_source",
    "parse_spec",
    "resolve_target",
    "check_options",
    "accepted_options",
    "DISABLE_ENV",
]

SAMPLERS = Registry(
    "samplers",
    validate="lttoolkit.samplers.base:check_built_sampler",
    call_signature=("labels", ("seed", "num_replicas", "rank")),
)
LOSSES = Registry(
    "losses",
    validate="lttoolkit.losses._base:check_built_loss",
    call_signature=("class_counts", ()),
)
SCHEDULES = Registry("schedules", validate="lttoolkit.schedules.alpha:check_built_schedule")
BACKBONES = Registry(
    "backbones",
    # Imported only when a name is not one of ours: keeps timm out of listing.
    fallback="lttoolkit.backbones._timm:timm_backbone_factory",
    fallback_names="timm:list_models",
    fallback_label="every timm model name is accepted too",
    validate="lttoolkit.backbones:check_built_backbone",
    call_signature=(None, ("pretrained", "num_classes", "in_chans")),
)
METHODS = Registry("methods")
DATASETS = Registry(
    "datasets",
    validate="lttoolkit.data.base:check_built_dataset",
    call_signature=(None, ("root", "split", "transform")),
)

ALL_REGISTRIES: dict[str, Registry] = {
    "samplers": SAMPLERS,
    "losses": LOSSES,
    "schedules": SCHEDULES,
    "backbones": BACKBONES,
    "methods": METHODS,
    "datasets": DATASETS,
}

# The one declaration of every builtin: the table, read lazily (nothing is imported here).
for _kind, _items in BUILTINS.items():
    for _name, _target, _summary in _items:
        ALL_REGISTRIES[_kind].register_lazy(_name, _target, _summary)


def load_plugin(module: str) -> list[str]:
    """Import ``module`` so that its decorator registrations take effect.

    This is how components in a module that is not an installed distribution
    (a file next to your training script, a package under development) join the
    registries. Registrations made while importing are attributed to
    ``"module <name>"``.

    Args:
        module: a dotted module name importable from ``sys.path``.

    Returns:
        The ``kind:name`` of every component the module registered.

    Raises:
        PluginLoadError: the module could not be imported; the original error is chained.

    Example:
        >>> import lttoolkit
        >>> lttoolkit.load_plugin("lttoolkit.schedules")  # already builtin: registers nothing new
        []
    """
    return import_plugin_module(module, ALL_REGISTRIES.values())
