"""Protocol checks for plugin components (docs/plugins.md), run when one is first used.

Builtins are covered by the test suite; a plugin's component is checked when its
factory is loaded (call signature) and when it is built (what it returns), so a
broken plugin fails with a message naming its distribution instead of deep inside
a training run.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Mapping

from lttoolkit.errors import ComponentContractError
from lttoolkit.registry._registry import singular

__all__ = ["check_factory", "check_built"]

# kind -> keyword arguments lttoolkit always passes to the factory
_REQUIRED_KEYWORDS: dict[str, tuple[str, ...]] = {
    "samplers": ("seed", "num_replicas", "rank"),
    "backbones": ("pretrained", "num_classes", "in_chans"),
}
# kind -> the first positional argument lttoolkit passes
_FIRST_POSITIONAL: dict[str, str] = {"samplers": "labels", "losses": "class_counts"}


def _who(kind: str, name: str, source: str) -> str:
    return f"{singular(kind)} {name!r} from {source}"


def check_factory(kind: str, name: str, source: str, factory: Any) -> None:
    """Check that a plugin factory can be called the way lttoolkit calls it."""
    who = _who(kind, name, source)
    if not callable(factory):
        raise ComponentContractError(f"{who} is {type(factory).__name__}, not a callable factory; "
                                     f"the entry point must name a class or function (see docs/plugins.md)")
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return  # C callables: nothing to inspect
    params = list(sig.parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    var_pos = any(p.kind is p.VAR_POSITIONAL for p in params)
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    missing = [kw for kw in _REQUIRED_KEYWORDS.get(kind, ()) if kw not in named and not var_kw]
    first = _FIRST_POSITIONAL.get(kind)
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    if first and not positional and not var_pos:
        missing.insert(0, f"{first} (positional)")
    required_extra = [
        p.name for p in params
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and p.name not in {first, *_REQUIRED_KEYWORDS.get(kind, ())}
        and not (first and positional and p is positional[0])
    ]
    if missing or required_extra:
        parts = []
        if missing:
            parts.append(f"does not accept {', '.join(missing)}")
        if required_extra:
            parts.append(f"requires {', '.join(required_extra)} without a default")
        raise ComponentContractError(
            f"{who} has the wrong call signature {name}{sig}: it {' and '.join(parts)}. "
            f"See the {singular(kind)} protocol in docs/plugins.md."
        )


def _check_sampler(who: str, sampler: Any, options: Mapping[str, Any]) -> None:
    if not callable(getattr(sampler, "set_epoch", None)):
        raise ComponentContractError(f"{who} returned a sampler without set_epoch(epoch)")
    labels = options.get("labels")
    n = len(labels) if labels is not None else None
    indices = list(iter(sampler))
    if len(indices) != len(sampler):
        raise ComponentContractError(f"{who}: len(sampler) is {len(sampler)} but it yielded {len(indices)} indices")
    if n is not None:
        bad = [i for i in indices if not isinstance(i, int) or not 0 <= i < n]
        if bad:
            raise ComponentContractError(
                f"{who} yielded index {bad[0]!r}, outside [0, {n}) for a dataset of {n} images"
            )


def _check_loss(who: str, loss: Any, options: Mapping[str, Any]) -> None:
    import copy

    import torch

    counts = options.get("class_counts")
    num_classes = len(counts) if counts is not None else 2
    logits = torch.zeros(2, num_classes, requires_grad=True)
    targets = torch.zeros(2, dtype=torch.long)
    try:
        # Probe a copy with the RNG state restored afterwards: a loss that counts
        # what it sees or draws random numbers must not be changed by the check.
        with torch.random.fork_rng(devices=[]):
            value = copy.deepcopy(loss)(logits, targets)
    except Exception as exc:
        raise ComponentContractError(f"{who} failed on a (2, {num_classes}) batch of logits: "
                                     f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(value, torch.Tensor) or value.dim() != 0:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ComponentContractError(f"{who} returned {shape} from forward(logits, targets); it must return a "
                                     f"scalar tensor (reduce over the batch, e.g. .mean())")


def _check_schedule(who: str, schedule: Any, options: Mapping[str, Any]) -> None:
    from lttoolkit.schedules import checked_alpha

    for epoch, epochs in ((0, 10), (5, 10), (9, 10), (0, 1)):
        checked_alpha(schedule, epoch, epochs, name=who)


_BUILT_CHECKS: dict[str, Callable[[str, Any, Mapping[str, Any]], None]] = {
    "samplers": _check_sampler,
    "losses": _check_loss,
    "schedules": _check_schedule,
}


def check_built(kind: str, name: str, source: str, component: Any, options: Mapping[str, Any]) -> None:
    """Check what a plugin factory returned against its protocol."""
    check = _BUILT_CHECKS.get(kind)
    if check is not None:
        check(_who(kind, name, source), component, options)
