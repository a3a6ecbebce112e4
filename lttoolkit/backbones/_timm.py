"""Every timm model as a backbone (Wightman, "PyTorch Image Models", 2019).

:data:`lttoolkit.BACKBONES` falls back to :func:`timm_backbone_factory` for a
name it does not hold, so ``create_backbone("resnet18")`` builds timm's model.

Pretrained weights are looked up offline first (the Hugging Face cache, timm's
torch-hub cache or a local file), so a cached copy never touches the network.
When they are not cached, the weight host is probed once (DNS plus one TCP
connect) before downloading: without that, ``huggingface_hub`` retries each
file with back-off for about 45 s before giving up on a machine with no network.
Every failure becomes a :class:`~lttoolkit.errors.PretrainedWeightsError` that
names the model, the cause and the fixes.
"""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
import socket
import sys
import threading
import urllib.request
from contextlib import contextmanager
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import timm
from timm.models import resolve_pretrained_cfg, split_model_name_tag
from torch import nn

from lttoolkit._introspect import accepted_options
from lttoolkit.errors import PretrainedWeightsError, UnknownOptionError

__all__ = ["timm_backbone_factory", "create_timm_model", "unknown_option_error"]

# Long enough for a slow but working link; short enough that a dead one fails fast.
_PROBE_TIMEOUT_S = 5.0
_TRUE = {"1", "true", "yes", "on"}
_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '([^']+)'")
# Offline mode is a module global of huggingface_hub: serialise our temporary switch.
_HUB_OFFLINE_LOCK = threading.Lock()


def timm_backbone_factory(name: str) -> Callable[..., nn.Module] | None:
    """A backbone factory for timm model ``name``, or ``None`` if timm does not know it.

    Args:
        name: a timm model name, optionally with a pretrained tag (``"resnet18.a1_in1k"``).

    Returns:
        ``factory(pretrained=False, num_classes=1000, in_chans=3, **options)``
        calling :func:`timm.create_model`, or ``None`` for an unknown name.

    >>> timm_backbone_factory("no_such_model") is None
    True
    >>> timm_backbone_factory("resnet18")(num_classes=7).fc.out_features
    7
    """
    if not timm.is_model(name):
        return None

    def factory(pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3, **options: Any) -> nn.Module:
        return create_timm_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans, **options)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"timm model {name!r} as a backbone (options go to timm.create_model)."
    return factory


def create_timm_model(
    name: str, *, pretrained: bool = False, num_classes: int = 1000, in_chans: int = 3, **options: Any
) -> nn.Module:
    """:func:`timm.create_model` with lttoolkit's errors for options and pretrained weights.

    Args:
        name: timm model name (with an optional pretrained tag).
        pretrained: load pretrained weights (cache first, then the network if reachable).
        num_classes: classifier outputs (0 for none).
        in_chans: input channels.
        **options: passed to :func:`timm.create_model` (``drop_rate``,
            ``global_pool``, ``pretrained_cfg_overlay``, ...).

    Returns:
        The model.

    Raises:
        UnknownOptionError: the model does not take one of ``options``.
        PretrainedWeightsError: weights were asked for and could not be loaded.
    """
    kwargs = {"num_classes": num_classes, "in_chans": in_chans, **options}
    try:
        if pretrained:
            return _create_pretrained(name, kwargs)
        return timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        converted = unknown_option_error(exc, f"timm model {name!r}", _model_class(name, exc))
        if converted is None:
            raise
        raise converted from exc


def unknown_option_error(
    exc: TypeError, what: str, target: Any = None, exclude: tuple[str, ...] = ()
) -> UnknownOptionError | None:
    """Turn Python's ``unexpected keyword argument 'x'`` TypeError into an :class:`UnknownOptionError`.

    Args:
        exc: the TypeError raised while building.
        what: the component, as the message should name it.
        target: the callable whose parameters are the valid options, if known.
        exclude: parameters of ``target`` that are not options (set by the factory).

    Returns:
        The error to raise (chain it to ``exc``), or ``None`` if ``exc`` is another TypeError.

    >>> err = unknown_option_error(TypeError("f() got an unexpected keyword argument 'dropout'"), "model 'm'")
    >>> str(err).startswith("model 'm' got an unknown option 'dropout'")
    True
    """
    match = _UNEXPECTED_KWARG.search(str(exc))
    if match is None:
        return None
    bad = match.group(1)
    valid = accepted_options(target)[0] if target is not None else []
    valid = [v for v in valid if v not in exclude]
    close = difflib.get_close_matches(bad, valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listing = f"valid options are: {', '.join(valid)}." if valid else "see the model class's constructor for its options."
    return UnknownOptionError(f"{what} got an unknown option {bad!r}{hint}; {listing}")


def _model_class(name: str, exc: TypeError) -> Any:
    """The class named in ``"ResNet.__init__() got an unexpected ..."``, looked up in the model's module."""
    match = re.search(r"(\w+)\.__init__\(\)", str(exc))
    if match is None:
        return None
    module = sys.modules.get(timm.models.model_entrypoint(name).__module__)
    return getattr(module, match.group(1), None)


# ---------------------------------------------------------------------- pretrained weights
def _weight_source(cfg: Any) -> tuple[str, str]:
    """``(kind, location)`` the way timm picks it: state dict, file, hub, url, or none."""
    if cfg.state_dict is not None:
        return "state_dict", "a state dict"
    if cfg.file:
        return "file", str(cfg.file)
    if cfg.hf_hub_id and importlib.util.find_spec("huggingface_hub") is not None:
        return "hub", str(cfg.hf_hub_id)
    if cfg.url:
        return "url", str(cfg.url)
    return "none", ""


def _user_offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    try:
        from huggingface_hub import constants
    except ImportError:
        return False
    return bool(constants.HF_HUB_OFFLINE)


@contextmanager
def _hub_offline() -> Iterator[None]:
    """Hub lookups read the local cache only, inside the block (restored after)."""
    try:
        from huggingface_hub import constants
    except ImportError:
        yield
        return
    with _HUB_OFFLINE_LOCK:
        previous = constants.HF_HUB_OFFLINE
        constants.HF_HUB_OFFLINE = True
        try:
            yield
        finally:
            constants.HF_HUB_OFFLINE = previous


def _unreachable_reason(url: str) -> str | None:
    """Why ``url``'s host cannot be reached, or ``None`` if it can (or a proxy decides)."""
    parsed = urlparse(url)
    host = parsed.hostname
    if not host:
        return None
    if urllib.request.getproxies() and not urllib.request.proxy_bypass(host):
        return None  # the proxy may reach it even if we cannot: let the download try
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host} ({exc})"
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        return f"cannot connect to {host}:{port} ({exc})"
    return None


def _torch_hub_cached(url: str, cache_dir: Any) -> bool:
    import torch.hub

    folder = str(cache_dir) if cache_dir else os.path.join(torch.hub.get_dir(), "checkpoints")
    return os.path.isfile(os.path.join(folder, os.path.basename(urlparse(url).path)))


def _weights_error(name: str, where: str, cause: str) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"could not load pretrained weights for timm model {name!r} ({where}): {cause}. "
        f"Fixes: pass pretrained=False to start from random weights; or fetch the weights on a machine "
        f"with network access and pass pretrained_cfg_overlay=dict(file='/path/to/weights') "
        f"(a .safetensors, .pth or .bin state dict); or copy that machine's Hugging Face cache "
        f"(HF_HOME) or torch hub cache (TORCH_HOME) here."
    )


def _create_pretrained(name: str, kwargs: dict[str, Any]) -> nn.Module:
    arch, tag = split_model_name_tag(name)
    cfg = resolve_pretrained_cfg(
        arch,
        pretrained_cfg=kwargs.get("pretrained_cfg") or tag or None,
        pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
    )
    kind, location = _weight_source(cfg)
    if kind == "none":
        # timm would log a warning and keep the random init: refuse instead.
        raise _weights_error(name, "no weight source", "timm lists no published weights for it")

    if kind in ("state_dict", "file"):
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except (OSError, RuntimeError) as exc:  # missing file, or a state dict that does not fit
            raise _weights_error(name, f"from {location}", f"{type(exc).__name__}: {exc}") from exc

    cache_miss: OSError | None = None
    if kind == "hub":
        from huggingface_hub import constants

        url = constants.ENDPOINT
        where = f"from the Hugging Face Hub, {location}"
        try:
            with _hub_offline():
                return timm.create_model(name, pretrained=True, **kwargs)
        except OSError as exc:  # not in the cache (LocalEntryNotFoundError, OfflineModeIsEnabled)
            cache_miss = exc
    else:
        url = location
        where = f"from {location}"
        if _torch_hub_cached(location, kwargs.get("cache_dir")):
            return _download(name, where, kwargs)  # torch.hub reads its cache without network

    if _user_offline():
        reason = "they are not in the local cache and offline mode is on (HF_HUB_OFFLINE)"
    else:
        unreachable = _unreachable_reason(url)
        reason = f"they are not in the local cache and {unreachable}" if unreachable else None
    if reason is not None:
        raise _weights_error(name, where, reason) from cache_miss
    return _download(name, where, kwargs)


def _download(name: str, where: str, kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except (OSError, RuntimeError) as exc:  # network/HTTP/cache errors are OSErrors; a bad file a RuntimeError
        raise _weights_error(name, where, f"{type(exc).__name__}: {exc}") from exc
