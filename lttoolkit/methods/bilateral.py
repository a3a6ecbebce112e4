"""The bilateral-branch wrapper of BBN (Zhou et al., "BBN: Bilateral-Branch Network
with Cumulative Learning for Long-Tailed Visual Recognition", CVPR 2020).

:class:`BilateralWrapper` turns any timm-style backbone into BBN's two branches:
the trunk is shared, the last block of the last stage is duplicated into a
*conventional* and a *re-balancing* block, and one linear classifier reads the
concatenated pooled features.

How it runs (one pass, no duplicated trunk work):

* training: the conventional and re-balancing batches are concatenated and go
  through the trunk together; the duplicated block sends the first half through
  the conventional copy and the second half through the re-balancing copy; the
  backbone's remaining layers and ``forward_head(pre_logits=True)`` pool both
  halves. Batch norm normalises each half with its own statistics, exactly as
  two separate passes would (the official code runs the trunk twice).
  logits = W·[2α·f_c ; 2(1−α)·f_r] + b.
* inference: the trunk runs once on the images, both blocks run on its output,
  logits = W·[f_c ; f_r] + b (α = 0.5, as in the official implementation).
"""

from __future__ import annotations

import copy
from contextvars import ContextVar
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from lttoolkit.errors import BackboneSplitError, ComponentContractError

__all__ = ["BilateralWrapper", "BilateralBlock", "find_last_block", "convert_sync_batchnorm", "BRANCHES"]

BRANCHES = ("conventional", "rebalancing")

# How many equal groups the batch currently holds, for batch norm layers outside
# the duplicated blocks (2 while the two branches' images share one tensor).
_BN_GROUPS: ContextVar[int] = ContextVar("lttoolkit_bn_groups", default=1)


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


# --------------------------------------------------------------------------- batch norm
class _BranchwiseBatchNorm:
    """Mixin: in training, normalise each branch's images with their own statistics.

    The wrapper interleaves the branches' images (c0, r0, c1, r1, ...). Viewing
    that batch as n samples of ``groups * C`` channels gives every branch its own
    channels, so a single batch-norm call (weight and bias repeated per group)
    normalises each branch separately, without copying the activations. The
    running statistics are then folded back as if the groups had been seen one
    after the other, exactly what separate passes do. Added to existing
    batch-norm modules by class swap, so parameter names, state dicts and
    pretrained weights are unchanged.
    """

    _grouped_call = False
    _torch_forward = False  # set per class: the original class uses torch's _BatchNorm.forward

    def forward(self, x: Tensor) -> Tensor:
        groups = _BN_GROUPS.get()
        if groups == 1 or not self.training or self._grouped_call:  # type: ignore[attr-defined]
            return super().forward(x)  # type: ignore[misc]
        if x.shape[0] % groups:
            raise RuntimeError(f"batch of {x.shape[0]} cannot be split into {groups} equal branch groups")
        if self.momentum is None:  # type: ignore[attr-defined]  # cumulative averaging: keep it simple
            parts = [super(_BranchwiseBatchNorm, self).forward(x[g::groups]) for g in range(groups)]  # type: ignore[misc]
            return torch.stack(parts, 1).flatten(0, 1)
        return self._grouped_forward(x, groups)

    def _grouped_forward(self, x: Tensor, groups: int) -> Tensor:
        bn: Any = self
        channels = x.shape[1]
        grouped = x.reshape(x.shape[0] // groups, groups * channels, *x.shape[2:])
        replaced: dict[str, Tensor] = {}
        if bn.affine:
            replaced["weight"] = bn.weight.repeat(groups)
            replaced["bias"] = bn.bias.repeat(groups)
        tracking = bn.track_running_stats and bn.running_mean is not None
        if tracking:
            replaced["running_mean"] = bn.running_mean.repeat(groups)
            replaced["running_var"] = bn.running_var.repeat(groups)
        if self._torch_forward:
            # torch's own BatchNorm: call the kernel directly. functional_call re-binds the
            # module's tensors on every call, which cost ~4% of a ResNet-50 step on the CPU.
            bn._check_input_dim(grouped)
            out = torch.nn.functional.batch_norm(
                grouped, replaced.get("running_mean"), replaced.get("running_var"), replaced.get("weight"),
                replaced.get("bias"), True, bn.momentum, bn.eps,
            )
            if tracking:
                bn.num_batches_tracked.add_(1)  # as _BatchNorm.forward counts the call
        else:
            # Subclasses with their own forward (timm's BatchNormAct, SyncBatchNorm) run it whole.
            from torch.func import functional_call

            bn._grouped_call = True
            try:
                out = functional_call(bn, replaced, (grouped,))
            finally:
                bn._grouped_call = False
        if tracking:
            self._fold_running_stats(replaced["running_mean"], replaced["running_var"], groups)
        return out.reshape(x.shape)

    @torch.no_grad()
    def _fold_running_stats(self, means: Tensor, variances: Tensor, groups: int) -> None:
        # Each group's slot holds (1 - m) * r + m * s_g; sequential updates give
        # r_g = (1 - m) * r_{g-1} + m * s_g = (1 - m) * r_{g-1} + slot_g - (1 - m) * r.
        bn: Any = self
        keep = 1.0 - bn.momentum
        for running, slots in ((bn.running_mean, means), (bn.running_var, variances)):
            start = running.clone()
            value = start
            for slot in slots.view(groups, -1):
                value = keep * value + slot - keep * start
            running.copy_(value)
        bn.num_batches_tracked.add_(groups - 1)  # the grouped call counted one batch


_BRANCHWISE_CLASSES: dict[type, type] = {}


def _make_branchwise(module: nn.Module) -> None:
    cls = type(module)
    if issubclass(cls, _BranchwiseBatchNorm):
        return
    if cls not in _BRANCHWISE_CLASSES:
        _BRANCHWISE_CLASSES[cls] = type(f"Branchwise{cls.__name__}", (_BranchwiseBatchNorm, cls),
                                        {"_torch_forward": cls.forward is nn.modules.batchnorm._BatchNorm.forward})
    module.__class__ = _BRANCHWISE_CLASSES[cls]


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Turn batch norm into synchronised batch norm for multi-GPU training, keeping
    the per-branch normalisation of :class:`BilateralWrapper` (timm's converter keeps
    its fused BatchNormAct layers intact)."""
    from timm.layers import convert_sync_batchnorm as timm_convert

    branchwise = any(isinstance(m, _BranchwiseBatchNorm) for m in model.modules())
    converted = timm_convert(model)
    if branchwise:
        for module in converted.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                _make_branchwise(module)
    return converted


# --------------------------------------------------------------------------- modules
class BilateralBlock(nn.Module):
    """Two copies of one block: ``conventional`` and ``rebalancing``.

    With ``interleaved`` set, the batch holds the two branches' images in turn
    (c0, r0, c1, r1, ...): even positions go through the conventional copy, odd
    ones through the re-balancing copy. Otherwise every image goes through both.
    Either way the output interleaves the copies' results (conventional first),
    so batch norm after the block can tell the branches apart without copies.
    """

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.conventional = block
        self.rebalancing = copy.deepcopy(block)
        self.interleaved = False
        self.calls = 0
        self.in_wrapper = False  # set by BilateralWrapper around its own forward

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        self.calls += 1
        token = _BN_GROUPS.set(1)  # each copy sees only its own images
        try:
            if self.interleaved:
                conv = self.conventional(x[0::2], *args, **kwargs)
                rebal = self.rebalancing(x[1::2], *args, **kwargs)
            else:
                conv, rebal = self.conventional(x, *args, **kwargs), self.rebalancing(x, *args, **kwargs)
        finally:
            _BN_GROUPS.reset(token)
        # Layers after the block see two groups (one per branch) from here on; the
        # wrapper restores the previous value when its forward ends.
        if self.in_wrapper:
            _BN_GROUPS.set(2)
        return torch.stack([conv, rebal], 1).flatten(0, 1)


class BilateralWrapper(nn.Module):
    """BBN's two branches around a timm-style backbone.

    Args:
        backbone: a model with timm's interface (``forward_features``,
            ``forward_head(x, pre_logits=True)``, ``num_features``,
            ``reset_classifier``, ``feature_info``). Its own classifier is removed.
        num_classes: classes of the shared classifier.
        split_at: dotted path of the block to duplicate; found with
            :func:`find_last_block` when omitted.
        schedule: the alpha schedule used in training (``schedule(epoch, max_epochs)``).
        branchwise_norm: normalise each branch's images with their own batch
            statistics (as separate passes would). On by default.

    Example:
        >>> import torch
        >>> from lttoolkit.backbones import create_backbone
        >>> model = BilateralWrapper(create_backbone("resnet20_cifar", num_classes=10), num_classes=10)
        >>> model.classifier.in_features  # 2 x the pooled size
        128
        >>> model.eval()(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        *,
        split_at: str | None = None,
        schedule: Callable[[int, int], float] | None = None,
        branchwise_norm: bool = True,
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
        # Registered only inside the backbone (where it runs); `bilateral_block` looks it up,
        # so the state dict holds each parameter once.
        setattr(parent, child_name, BilateralBlock(block))
        if branchwise_norm:
            for module in backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    _make_branchwise(module)
        self.backbone = backbone
        self.feature_dim = int(getattr(backbone, "head_hidden_size", None) or backbone.num_features)
        self.classifier = nn.Linear(2 * self.feature_dim, num_classes)
        self.num_classes = num_classes
        self.schedule = schedule

    @property
    def bilateral_block(self) -> BilateralBlock:
        """The duplicated block (``.conventional`` and ``.rebalancing``)."""
        return self.backbone.get_submodule(self.split_at)  # type: ignore[return-value]

    # ------------------------------------------------------------------ features
    def _pooled(self, x: Tensor, interleaved: bool) -> Tensor:
        """Pooled features, rows interleaved by branch (c0, r0, c1, r1, ...).

        ``interleaved``: ``x`` already holds both branches' images in turn (training);
        otherwise both blocks run on every image of ``x`` (inference).
        """
        block = self.bilateral_block
        block.interleaved, calls_before = interleaved, block.calls
        block.in_wrapper = True
        token = _BN_GROUPS.set(2 if interleaved else 1)
        try:
            features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
        finally:
            _BN_GROUPS.reset(token)
            block.interleaved, block.in_wrapper = False, False
        expected = x.shape[0] if interleaved else 2 * x.shape[0]
        if block.calls != calls_before + 1 or features.shape[0] != expected:
            raise BackboneSplitError(
                f"the duplicated block {self.split_at!r} of {type(self.backbone).__name__} did not run exactly once "
                f"on the whole batch; pass split_at= the last block of the last stage, e.g. one of: "
                f"{_candidate_paths(self.backbone)}"
            )
        return features.flatten(1)

    def forward_features(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Pooled features ``(f_c, f_r)`` of both branches for the same images (trunk runs once)."""
        features = self._pooled(x, interleaved=False)
        return features[0::2], features[1::2]

    def forward(self, x: Tensor, x_rebalancing: Tensor | None = None, *, alpha: float | None = None) -> Tensor:
        """Logits.

        ``model(x)``: inference, logits = W·[f_c ; f_r] + b. ``model(x_c, x_r, alpha=a)``:
        training mix, logits = W·[2a·f_c(x_c) ; 2(1−a)·f_r(x_r)] + b, one row per pair.
        """
        if x_rebalancing is None:
            f_c, f_r = self.forward_features(x)
            return self.classifier(torch.cat([f_c, f_r], dim=1))
        if alpha is None:
            raise ValueError("training forward needs alpha: model(x_c, x_r, alpha=...)")
        if x.shape[0] != x_rebalancing.shape[0]:
            raise ValueError(
                f"the two branches' batches must have the same size (got {x.shape[0]} and {x_rebalancing.shape[0]}); "
                f"use the same batch size and drop_last for both loaders."
            )
        # One pass through the trunk for both batches, images interleaved by branch.
        features = self._pooled(torch.stack([x, x_rebalancing], 1).flatten(0, 1), interleaved=True)
        mixed = torch.cat([2.0 * alpha * features[0::2], 2.0 * (1.0 - alpha) * features[1::2]], dim=1)
        return self.classifier(mixed)

    # ------------------------------------------------------------------ training protocol
    stream_names: tuple[str, ...] = BRANCHES

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
        """BBN's loss: α·L(logits, y_c) + (1−α)·L(logits, y_r)."""
        y_c, y_r = targets
        return alpha * criterion(logits, y_c) + (1.0 - alpha) * criterion(logits, y_r)

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
