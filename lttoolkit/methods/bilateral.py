"""The bilateral-branch wrapper of BBN (Zhou et al., "BBN: Bilateral-Branch Network
with Cumulative Learning for Long-Tailed Visual Recognition", CVPR 2020).

:class:`BilateralWrapper` turns any timm-style backbone into BBN's two branches:
the trunk is shared, the last block of the last stage is duplicated into a
*conventional* and a *re-balancing* copy, and one linear classifier reads the
concatenated pooled features.

How it runs, as the official code (megvii-research/BBN, ``lib/core/combiner.py``):

* training: two plain passes inside one ``forward`` call. The conventional batch
  goes through the trunk and the conventional block, then the re-balancing batch
  through the trunk and the re-balancing block, so every batch norm sees one
  branch's images at a time, exactly as the official ``model(image_a,
  feature_cb=True)`` / ``model(image_b, feature_rb=True)``. Then
  logits = W·[2α·f_c ; 2(1−α)·f_r] + b (:func:`bbn_logits`) and
  loss = α·L(z, y_c) + (1−α)·L(z, y_r) (:func:`bbn_loss`).
* inference: the trunk runs once on the images, both blocks run on its output,
  logits = W·[f_c ; f_r] + b (:func:`bbn_logits` at α = 0.5).

Each pass runs a *branch view* of the backbone: a shallow copy of the modules on
the path from the backbone's root to the duplicated block, with that block's slot
holding one branch's copy. Every other module, parameter and buffer is the
backbone's own object, so a view is a plain timm model: no flags, no class swaps,
nothing a recompute (gradient checkpointing), ``torch.compile``, channels_last or
pickling could read wrongly.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from lttoolkit.errors import BackboneSplitError, ComponentContractError
from lttoolkit.methods.protocol import EpochInfo, StepOutput

__all__ = [
    "BilateralWrapper",
    "BilateralBlock",
    "bbn_logits",
    "bbn_loss",
    "find_last_block",
    "convert_sync_batchnorm",
    "BRANCHES",
]

BRANCHES = ("conventional", "rebalancing")


# --------------------------------------------------------------------------- split point
def _is_sequence(module: nn.Module) -> bool:
    return isinstance(module, (nn.Sequential, nn.ModuleList)) and len(module) > 0


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _last_feature_module(model: nn.Module) -> str | None:
    info = getattr(model, "feature_info", None)
    if isinstance(info, (list, tuple)) and info and isinstance(info[-1], dict):
        return info[-1].get("module")
    if info is not None and hasattr(info, "module_name"):  # timm FeatureInfo object
        return info.module_name(-1)
    return None


def find_last_block(model: nn.Module) -> str:
    """Dotted path of the last block of the last stage of a timm-style backbone.

    Starts from the last entry of ``model.feature_info`` and descends through
    sequences, ``.blocks`` containers and ``*Stage`` modules to a single block.

    Raises:
        BackboneSplitError: the model has no usable ``feature_info``; pass
            ``split_at=...`` to :class:`BilateralWrapper` instead.

    >>> import timm
    >>> find_last_block(timm.create_model("resnet18"))
    'layer4.1'
    >>> find_last_block(timm.create_model("convnext_atto"))
    'stages.3.blocks.1'
    """
    path = _last_feature_module(model)
    if not path:
        raise BackboneSplitError(
            f"cannot find the last block of {type(model).__name__}: it has no timm-style feature_info. "
            f"Pass split_at='<dotted path of the block to duplicate>'; top-level children are: "
            f"{', '.join(name for name, _ in model.named_children())}."
        )
    try:
        module = model.get_submodule(path)
    except AttributeError:
        raise BackboneSplitError(
            f"{type(model).__name__}.feature_info names module {path!r}, which does not exist; pass split_at=..."
        ) from None
    while True:
        if _is_sequence(module):
            index = len(module) - 1
            path, module = f"{path}.{index}", module[index]
            continue
        blocks = getattr(module, "blocks", None)
        if isinstance(blocks, nn.Module) and _is_sequence(blocks):
            path, module = f"{path}.blocks", blocks
            continue
        if "stage" in type(module).__name__.lower():
            # e.g. RegNet's RegStage holds its blocks as direct children b1..bN.
            children = [(name, child) for name, child in module.named_children() if _has_parameters(child)]
            if children:
                name, child = children[-1]
                path, module = f"{path}.{name}", child
                continue
        return path


def _candidate_paths(model: nn.Module, limit: int = 8) -> str:
    names = [name for name, m in model.named_modules() if name and _is_sequence(m)]
    return ", ".join(names[-limit:]) or "(none found)"


# --------------------------------------------------------------------------- the equations
def bbn_logits(classifier: Callable[[Tensor], Tensor], f_c: Tensor, f_r: Tensor, alpha: float | Tensor) -> Tensor:
    """BBN's mixed logits: ``classifier([2α·f_c ; 2(1−α)·f_r])``.

    At ``alpha = 0.5`` this is the inference rule ``classifier([f_c ; f_r])``.

    Args:
        classifier: the shared linear classifier (reads ``2 * feature_dim`` features).
        f_c: pooled features of the conventional branch, ``[B, D]``.
        f_r: pooled features of the re-balancing branch, ``[B, D]``.
        alpha: the cumulative-learning weight (a float, or a 0-d tensor under ``torch.compile``).

    >>> import torch
    >>> classifier = torch.nn.Linear(4, 1, bias=False)
    >>> _ = torch.nn.init.ones_(classifier.weight)
    >>> bbn_logits(classifier, torch.ones(1, 2), 3 * torch.ones(1, 2), alpha=0.25)  # 2·(0.5 + 4.5)
    tensor([[10.]], grad_fn=<MmBackward0>)
    """
    return classifier(torch.cat([(2.0 * alpha) * f_c, (2.0 * (1.0 - alpha)) * f_r], dim=1))


def bbn_loss(
    criterion: Callable[[Tensor, Tensor], Tensor], logits: Tensor, y_c: Tensor, y_r: Tensor, alpha: float | Tensor
) -> Tensor:
    """BBN's loss: ``α·L(logits, y_c) + (1−α)·L(logits, y_r)``.

    >>> import torch, torch.nn.functional as F
    >>> logits = torch.tensor([[0.0, 0.0]])
    >>> round(float(bbn_loss(F.cross_entropy, logits, torch.tensor([0]), torch.tensor([1]), 0.3)), 4)  # log 2
    0.6931
    """
    return alpha * criterion(logits, y_c) + (1.0 - alpha) * criterion(logits, y_r)


# --------------------------------------------------------------------------- modules
class BilateralBlock(nn.Module):
    """Two copies of one block, ``conventional`` and ``rebalancing``, in the backbone's slot.

    ``forward(x)`` is the inference path: both copies run on the same input and their
    outputs are concatenated along the batch (conventional first), so the layers after
    the block and the pooling treat them as ``2B`` images. In training the wrapper
    does not call it: each branch view holds one copy in this slot.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conventional = block
        self.rebalancing = copy.deepcopy(block)

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        return torch.cat([self.conventional(x, *args, **kwargs), self.rebalancing(x, *args, **kwargs)], dim=0)


def _branch_view(root: nn.Module, path: str, block: nn.Module) -> nn.Module:
    """``root`` with the module at ``path`` replaced by ``block``, without touching ``root``.

    Only the modules on the path are copied, shallowly: each copy shares its original's
    parameters, buffers and hooks (the same dict objects) and every child off the path,
    and gets a ``_modules`` dict of its own. Plain attributes (``training``,
    ``grad_checkpointing``) are taken as they are now.
    """
    names = path.split(".")
    originals = [root]
    for name in names[:-1]:
        originals.append(originals[-1]._modules[name])  # type: ignore[arg-type]
    child: nn.Module = block
    for module, name in zip(reversed(originals), reversed(names)):
        view = object.__new__(type(module))
        view.__dict__.update(module.__dict__)
        view.__dict__["_modules"] = {**module._modules, name: child}
        child = view
    return child


class _BranchViews:
    """The life of a wrapper's branch views (BBN's two branches, a multi-expert wrapper's K
    experts): shallow copies of the modules on the path to a duplicated module, kept out of
    the module tree (under ``_VIEWS``), rebuilt eagerly at every call and after ``train()``,
    ``__setstate__`` and ``set_grad_checkpointing``; a compiled graph uses the last ones.
    A subclass defines ``_refresh_views()`` and has a ``backbone``."""

    _VIEWS = "_branch_views"
    backbone: nn.Module

    def _refresh_views(self) -> tuple[nn.Module, ...]:
        raise NotImplementedError

    def _views(self) -> tuple[nn.Module, ...]:
        if torch.compiler.is_compiling():
            # A compiled graph uses the views as of the last eager call or train()/eval().
            return self.__dict__[self._VIEWS]
        # Eagerly, fresh views each step (a few microseconds): they follow whatever was
        # changed on the backbone since (sync batch norm, gradient checkpointing, ...).
        return self._refresh_views()

    def train(self, mode: bool = True) -> Any:
        super().train(mode)  # type: ignore[misc]
        self._refresh_views()
        return self

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()  # type: ignore[misc]
        return {key: value for key, value in state.items() if key != self._VIEWS}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        self._refresh_views()

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Gradient checkpointing of the backbone (timm's ``set_grad_checkpointing``), every branch."""
        setter = getattr(self.backbone, "set_grad_checkpointing", None)
        if not callable(setter):
            raise ComponentContractError(
                f"{type(self.backbone).__name__} has no set_grad_checkpointing(); gradient checkpointing "
                f"needs a timm model (or a backbone that implements it)."
            )
        setter(enable)
        self._refresh_views()


class BilateralWrapper(_BranchViews, nn.Module):
    """BBN's two branches around a timm-style backbone.

    Args:
        backbone: a model with timm's interface (``forward_features``,
            ``forward_head(x, pre_logits=True)``, ``num_features``,
            ``reset_classifier``, ``feature_info``). Its own classifier is removed.
        num_classes: classes of the shared classifier.
        split_at: dotted path of the block to duplicate; found with
            :func:`find_last_block` when omitted.
        schedule: the alpha schedule used in training (``schedule(epoch, max_epochs)``).

    The state dict names the two copies ``backbone.<split_at>.conventional.*`` and
    ``backbone.<split_at>.rebalancing.*``; every parameter appears once.

    Example:
        >>> import torch
        >>> from lttoolkit.backbones import create_backbone
        >>> model = BilateralWrapper(create_backbone("resnet20_cifar", num_classes=10), num_classes=10)
        >>> model.classifier.in_features  # 2 x the pooled size
        128
        >>> model.eval()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
        >>> model.train()(torch.randn(4, 3, 32, 32), torch.randn(4, 3, 32, 32), alpha=0.7).shape
        torch.Size([4, 10])
    """

    stream_names: tuple[str, ...] = BRANCHES

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        split_at: str | None = None,
        schedule: Callable[[int, int], float] | None = None,
    ) -> None:
        super().__init__()
        for attr in ("forward_features", "forward_head", "reset_classifier"):
            if not callable(getattr(backbone, attr, None)):
                raise ComponentContractError(
                    f"BilateralWrapper needs a backbone with timm's interface; {type(backbone).__name__} "
                    f"has no {attr}(). Wrap it or use a timm model."
                )
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        backbone.reset_classifier(0)
        self.split_at = split_at or find_last_block(backbone)
        try:
            block = backbone.get_submodule(self.split_at)
        except AttributeError:
            raise BackboneSplitError(
                f"{type(backbone).__name__} has no module {self.split_at!r} to duplicate; "
                f"pass split_at= one of: {_candidate_paths(backbone)}"
            ) from None
        parent_path, _, child_name = self.split_at.rpartition(".")
        parent = backbone.get_submodule(parent_path) if parent_path else backbone
        # Registered only inside the backbone (where it runs at inference); `bilateral_block`
        # looks it up, so the state dict holds each parameter once.
        setattr(parent, child_name, BilateralBlock(block))
        self.backbone = backbone
        self.feature_dim = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
        self.classifier = nn.Linear(2 * self.feature_dim, num_classes)
        self.num_classes = num_classes
        self.schedule = schedule
        self._refresh_views()

    # ------------------------------------------------------------------ branch views
    def _refresh_views(self) -> tuple[nn.Module, nn.Module]:
        # Kept out of the module tree (a plain tuple attribute): the views hold no tensor
        # of their own, so state_dict, .to(), DDP and optimizers see each parameter once.
        block = self.bilateral_block
        views = tuple(_branch_view(self.backbone, self.split_at, getattr(block, name)) for name in BRANCHES)
        self.__dict__[self._VIEWS] = views
        return views  # type: ignore[return-value]


    @property
    def bilateral_block(self) -> BilateralBlock:
        """The duplicated block (``.conventional`` and ``.rebalancing``)."""
        return self.backbone.get_submodule(self.split_at)  # type: ignore[return-value]

    # ------------------------------------------------------------------ features
    @staticmethod
    def _pooled(net: nn.Module, x: Tensor) -> Tensor:
        return net.forward_head(net.forward_features(x), pre_logits=True).flatten(1)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled features ``(f_c, f_r)`` of both branches for the same images (the trunk runs once)."""
        features = self._pooled(self.backbone, x)
        if features.shape[0] != 2 * x.shape[0]:
            raise BackboneSplitError(
                f"the duplicated block {self.split_at!r} of {type(self.backbone).__name__} did not run exactly once "
                f"on the whole batch; pass split_at= the last block of the last stage, e.g. one of: "
                f"{_candidate_paths(self.backbone)}"
            )
        # Slices, not chunk(): torch.export keeps the batch size dynamic through them.
        batch = x.shape[0]
        return features[:batch], features[batch:]

    def branch_features(self, x_c: Tensor, x_r: Tensor) -> tuple[Tensor, Tensor]:
        """Training features: ``x_c`` through the conventional branch, then ``x_r`` through the
        re-balancing branch, each a full pass of its own (per-branch batch statistics)."""
        conventional, rebalancing = self._views()
        return self._pooled(conventional, x_c), self._pooled(rebalancing, x_r)

    def forward(self, x: Tensor, x_rebalancing: Tensor | None = None, *, alpha: float | Tensor | None = None) -> Tensor:
        """Logits.

        ``model(x)``: inference, logits = W·[f_c ; f_r] + b. ``model(x_c, x_r, alpha=a)``:
        training, logits = W·[2a·f_c(x_c) ; 2(1−a)·f_r(x_r)] + b, one row per pair.
        """
        if x_rebalancing is None:
            f_c, f_r = self.forward_features(x)
            return bbn_logits(self.classifier, f_c, f_r, 0.5)
        if alpha is None:
            raise ValueError("training forward needs alpha: model(x_c, x_r, alpha=...)")
        if x.shape[0] != x_rebalancing.shape[0]:
            raise ValueError(
                f"the two branches' batches must have the same size (got {x.shape[0]} and {x_rebalancing.shape[0]}); "
                f"use the same batch size and drop_last for both loaders."
            )
        f_c, f_r = self.branch_features(x, x_rebalancing)
        return bbn_logits(self.classifier, f_c, f_r, alpha)

    # ------------------------------------------------------------------ training protocol
    def training_kwargs(self, epoch: int, max_epochs: int) -> dict[str, float]:
        """``{"alpha": ...}`` for this epoch, from the schedule (checked to lie in [0, 1])."""
        from lttoolkit.schedules import checked_alpha

        if self.schedule is None:
            raise ValueError("this BilateralWrapper has no alpha schedule; pass schedule=...")
        return {"alpha": checked_alpha(self.schedule, epoch, max_epochs,
                                        name=f"schedule {type(self.schedule).__name__}")}

    @staticmethod
    def combine_loss(
        criterion: Callable[[Tensor, Tensor], Tensor], logits: Tensor, targets: Sequence[Tensor], *, alpha: float
    ) -> Tensor:
        """BBN's loss: α·L(logits, y_c) + (1−α)·L(logits, y_r) (:func:`bbn_loss`)."""
        y_c, y_r = targets
        return bbn_loss(criterion, logits, y_c, y_r, alpha)

    # ------------------------------------------------------------------ the method protocol
    def on_train_start(self, class_counts: Sequence[int]) -> None:
        """BBN needs nothing of the class counts beyond its samplers and loss."""

    def epoch_stats(self, epoch: EpochInfo) -> dict[str, float]:
        """``{"alpha": α}`` of the epoch, from the alpha schedule (checked to lie in [0, 1])."""
        return self.training_kwargs(epoch.epoch, epoch.max_epochs)

    def training_step(
        self,
        images: Sequence[Tensor],
        targets: Sequence[Tensor],
        criterion: Callable[[Tensor, Tensor], Tensor],
        epoch: EpochInfo,
        forward: Callable[..., Tensor],
    ) -> StepOutput:
        """One forward of both streams, ``forward(x_c, x_r, alpha=α)``, then :func:`bbn_loss`.

        ``hits`` is ``α·hits(y_c) + (1−α)·hits(y_r)``, the official code's training accuracy.
        """
        alpha = self.epoch_stats(epoch)["alpha"]
        (x_c, x_r), (y_c, y_r) = images, targets
        logits = forward(x_c, x_r, alpha=alpha)
        predicted = logits.detach().argmax(1)
        hits = alpha * (predicted == y_c).sum() + (1.0 - alpha) * (predicted == y_r).sum()
        return StepOutput(loss=bbn_loss(criterion, logits, y_c, y_r, alpha), logits=logits, hits=hits,
                          batch_size=y_c.shape[0], stats={"alpha": alpha})

    # ------------------------------------------------------------------ parameter groups
    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters by role: ``trunk``, ``conventional``, ``rebalancing``, ``classifier``."""
        block = self.bilateral_block
        own = {id(p) for p in block.parameters()} | {id(p) for p in self.classifier.parameters()}
        return {
            "trunk": [p for p in self.backbone.parameters() if id(p) not in own],
            "conventional": list(block.conventional.parameters()),
            "rebalancing": list(block.rebalancing.parameters()),
            "classifier": list(self.classifier.parameters()),
        }

    def classifier_halves(self) -> tuple[Tensor, Tensor]:
        """The classifier's weight columns reading f_c and f_r (each ``[num_classes, feature_dim]``)."""
        weight = self.classifier.weight
        return weight[:, : self.feature_dim], weight[:, self.feature_dim :]

    def iter_branch_blocks(self) -> Iterator[tuple[str, nn.Module]]:
        yield "conventional", self.bilateral_block.conventional
        yield "rebalancing", self.bilateral_block.rebalancing


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Turn batch norm into synchronised batch norm for multi-GPU training (timm's converter,
    which keeps its fused BatchNormAct layers intact). Each BBN branch keeps its own statistics:
    the two passes are separate calls."""
    from timm.layers import convert_sync_batchnorm as timm_convert

    converted = timm_convert(model)
    for module in converted.modules():
        if isinstance(module, BilateralWrapper):
            module._refresh_views()
    return converted
