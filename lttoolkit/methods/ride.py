"""RIDE: Wang, Lian, Miao, Liu and Yu, "Long-tailed Recognition by Routing Diverse
Distribution-Aware Experts", ICLR 2021 (frank-xwang/RIDE-LongTailRecognition), from registered pieces.

* ``ride``: a :class:`~lttoolkit.methods.multi_expert.MultiExpertWrapper` with 3 experts owning
  the second half of the backbone's stages (CIFAR ResNet-32: ``layer2``-``layer3``, after the
  first stage, as the authors' ``ride_resnet_cifar.py``), each with a cosine classifier scaled by
  ``s = 30``, at 3/4 of the width (``reduce_dimension``: 24 and 48 channels instead of 32 and
  64), all fed one shared instance-sampled batch, trained with the ``ride`` loss
  (:class:`~lttoolkit.losses.RIDELoss`: per-expert LDAM with deferred re-weighting from 80% of
  training, plus the diversity term, factor −0.2); the prediction is the mean of the experts'
  logits. The defaults are those of the authors' ``configs/config_imbalance_cifar100_ride.json``.
* ``ride_ea``: the optional second stage, the *expert assignment* router (the authors'
  ``ea_resnet_cifar.py``, ``configs/config_imbalance_cifar100_ride_ea.json``): started from a
  ``ride`` run (``--from``), everything frozen but :class:`ExpertRouter`, which learns for each
  image whether the next expert would help; at inference an image stops at the first expert the
  router does not pass it on from. RIDE's results without it are the ``ride`` row.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lttoolkit.errors import ConfigError
from lttoolkit.methods._common import plain_options, resolve
from lttoolkit.methods.multi_expert import MultiExpertWrapper, _stages, stage_split
from lttoolkit.methods.protocol import EpochInfo, StepOutput
from lttoolkit.recipe import ComponentSpec, Recipe

__all__ = ["ride", "ride_ea", "reduced_width_options", "ExpertRouter", "RoutedExperts", "RoutedOutput",
           "EXPERT_WIDTH"]

Spec = str | Mapping[str, Any]

# reduce_dimension: the authors' experts are 3/4 as wide (CIFAR: 24/48 of 32/64; ImageNet: 192/384 of 256/512).
EXPERT_WIDTH = 0.75


def reduced_width_options(backbone: nn.Module, split_at: str, factor: float = EXPERT_WIDTH) -> dict[str, Any]:
    """Backbone options that make every stage from ``split_at`` on ``factor`` times as wide.

    Known for lttoolkit's CIFAR ResNets (``widths``) and timm's ResNets (``channels``).

    >>> from lttoolkit.backbones import create_backbone
    >>> reduced_width_options(create_backbone("resnet32_cifar"), "layer2")
    {'widths': (16, 24, 48)}
    >>> import timm
    >>> reduced_width_options(timm.create_model("resnet50"), "layer3")
    {'channels': (64, 128, 192, 384)}
    """
    from timm.models.resnet import ResNet

    from lttoolkit.backbones import CifarResNet

    stages = _stages(backbone)
    if split_at not in stages:
        raise ConfigError(f"reduce_dimension narrows whole stages: split_at={split_at!r} is not one of the stages "
                          f"{stages}; split at a stage or set reduce_dimension=false")
    first = stages.index(split_at)
    info = {entry["module"]: entry["num_chs"] for entry in backbone.feature_info}  # type: ignore[union-attr]
    if isinstance(backbone, CifarResNet):
        option, widths = "widths", [info[s] for s in stages]
    elif isinstance(backbone, ResNet):
        expansion = getattr(type(backbone.layer1[0]), "expansion", 1)
        option, widths = "channels", [info[s] // expansion for s in stages]
    else:
        raise ConfigError(
            f"reduce_dimension (experts at {factor:g} of the width) is known for the CIFAR ResNets and timm's ResNets, "
            f"not for {type(backbone).__name__}; set reduce_dimension=false"
        )
    return {option: tuple(w if i < first else int(round(w * factor)) for i, w in enumerate(widths))}


def _backbone_maker(spec: ComponentSpec, pretrained: bool, num_classes: int, in_chans: int) -> Callable[..., nn.Module]:
    from lttoolkit.backbones import create_backbone

    def make(**extra: Any) -> nn.Module:
        return create_backbone({**spec.as_dict(), **extra}, pretrained=pretrained, num_classes=num_classes,
                               in_chans=in_chans)

    return make


def _ride_network(cls: type[MultiExpertWrapper], backbone_spec: ComponentSpec, *, num_classes: int, pretrained: bool,
                  in_chans: int, num_experts: int, reduce_dimension: bool, split_at: str | None, classifier: str,
                  s: float, **kwargs: Any) -> MultiExpertWrapper:
    if classifier not in ("cosine", "linear"):
        raise ConfigError(f"ride: classifier must be 'cosine' (the authors' use_norm) or 'linear', got {classifier!r}")
    make = _backbone_maker(backbone_spec, pretrained, num_classes, in_chans)
    net = make()
    split = split_at or stage_split(net)
    extra = reduced_width_options(net, split) if reduce_dimension else {}
    if extra and pretrained:
        raise ConfigError("ride: reduce_dimension makes the experts narrower than the pretrained weights; set "
                          "reduce_dimension=false to start the experts from them")
    # Every expert from a freshly built backbone: independent initialisation, as the authors' experts.
    return cls(net, num_classes, num_experts=num_experts, split_at=split, experts_from=lambda: make(**extra),
               head=classifier, scale=s if classifier == "cosine" else 1.0, **kwargs)


def _check_experts(num_experts: int, least: int = 1) -> None:
    if isinstance(num_experts, bool) or not isinstance(num_experts, int) or num_experts < least:
        raise ConfigError(f"num_experts must be a whole number >= {least}, got {num_experts!r}")


def ride(
    backbone: Spec = "resnet32_cifar",
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    in_chans: int = 3,
    num_experts: int = 3,
    reduce_dimension: bool = True,
    split_at: str | None = None,
    classifier: str = "cosine",
    s: float = 30.0,
    sampler: Spec = "instance",
    max_m: float = 0.5,
    drw_fraction: float | None = 0.8,
    base_loss_factor: float = 1.0,
    diversity_factor: float = -0.2,
    diversity_temperature: float = 1.0,
    reweight_factor: float = 0.05,
    loss: Spec | None = None,
) -> MultiExpertWrapper:
    """RIDE (Wang et al. 2021): distribution-aware diverse experts on a shared trunk, without the router.

    Args:
        backbone: any backbone name or ``{"type": name, **options}``.
        num_classes, pretrained, in_chans: as every method.
        num_experts: K (3).
        reduce_dimension: experts at 3/4 of the width (the authors' default; CIFAR and timm ResNets).
        split_at: the first module the experts own (default: the first stage of the second half,
            :func:`~lttoolkit.methods.multi_expert.stage_split`).
        classifier: ``"cosine"`` (the authors' ``use_norm``, logits ``s·cos``) or ``"linear"``.
        s: the cosine classifiers' scale, and the loss's margin scale (30).
        sampler: the one shared stream's sampler (``"instance"``).
        max_m, drw_fraction, base_loss_factor, diversity_factor, diversity_temperature, reweight_factor:
            the ``ride`` loss's options (:class:`~lttoolkit.losses.RIDELoss`); ``drw_fraction=0.8`` is the
            authors' ``reweight_epoch`` 160 of 200, ``None`` turns re-weighting off.
        loss: another loss instead (each expert is then scored by it and the scores summed).

    >>> from lttoolkit import build
    >>> model = build("ride", backbone="resnet32_cifar", num_classes=10)
    >>> model.num_experts, model.expert_modules, model.feature_dim
    (3, ('layer2', 'layer3'), 48)
    >>> model.recipe.loss.type, model.recipe.loss.options["diversity_factor"], list(model.recipe.samplers)
    ('ride', -0.2, ['main'])
    """
    _check_experts(num_experts)
    options = dict(
        backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans, num_experts=num_experts,
        reduce_dimension=reduce_dimension, split_at=split_at, classifier=classifier, s=s, sampler=sampler,
        max_m=max_m, drw_fraction=drw_fraction, base_loss_factor=base_loss_factor, diversity_factor=diversity_factor,
        diversity_temperature=diversity_temperature, reweight_factor=reweight_factor, loss=loss,
    )
    if loss is None:
        loss = {"type": "ride", "max_m": max_m, "s": s, "base_loss_factor": base_loss_factor,
                "diversity_factor": diversity_factor, "diversity_temperature": diversity_temperature,
                "reweight_factor": reweight_factor}
        if drw_fraction is not None:
            loss["drw_fraction"] = drw_fraction
    sampler_spec, loss_spec = resolve("samplers", sampler), resolve("losses", loss)
    backbone_spec = ComponentSpec.parse(backbone, kind="backbone")
    model = _ride_network(MultiExpertWrapper, backbone_spec, num_classes=num_classes, pretrained=pretrained,
                          in_chans=in_chans, num_experts=num_experts, reduce_dimension=reduce_dimension,
                          split_at=split_at, classifier=classifier, s=s)
    model.recipe = Recipe(
        method="ride", options=plain_options(options), backbone=backbone_spec, num_classes=num_classes,
        in_chans=in_chans, pretrained=pretrained, samplers={"main": sampler_spec}, loss=loss_spec,
    )
    return model


# --------------------------------------------------------------------------- stage 2: expert assignment
class ExpertRouter(nn.Module):
    """RIDE's expert-assignment module: router ``i`` (``i = 0..K−2``) predicts from expert i's
    pooled features and the top logits of the mean of experts ``0..i`` whether expert ``i+1``
    (or a later one) would help.

    ``help_logit(i, features, logits) = fc([topk(logits) ; relu(hidden_i(features / ‖features‖))])``,
    with one ``hidden_i`` (16 units) per router and one shared ``fc`` (the authors'
    ``share_expert_help_pred_fc=True``).

    >>> router = ExpertRouter(3, feature_dim=8, top_k=4)
    >>> router.help_logit(0, torch.randn(5, 8), torch.randn(5, 10)).shape
    torch.Size([5])
    """

    def __init__(self, num_experts: int, feature_dim: int, *, top_k: int = 30, hidden: int = 16) -> None:
        super().__init__()
        self.top_k = int(top_k)
        self.hidden = nn.ModuleList(nn.Linear(feature_dim, hidden) for _ in range(num_experts - 1))
        self.fc = nn.Linear(hidden + self.top_k, 1)
        for module in self.modules():  # the authors' _weights_init: kaiming_normal_ on every Linear
            if isinstance(module, nn.Linear):
                nn.init.kaiming_normal_(module.weight)

    def help_logit(self, i: int, features: Tensor, logits: Tensor) -> Tensor:
        hidden = F.relu(self.hidden[i](features / features.norm(dim=1, keepdim=True)))
        top = torch.topk(logits, k=self.top_k, dim=1).values
        return self.fc(torch.cat([top, hidden], dim=1)).squeeze(1)


class RoutedOutput(NamedTuple):
    """What :class:`RoutedExperts` returns with ``return_experts=True``.

    Attributes:
        logits: inference: the mean of the experts each image was routed to; training: of all experts.
        experts: each expert's logits ``[B, K, C]``.
        help_logits: the routers' logits ``[B, K−1]`` (router i: would expert i+1 help?).
        experts_used: experts each image uses at inference ``[B]`` (1..K).
    """

    logits: Tensor
    experts: Tensor
    help_logits: Tensor
    experts_used: Tensor


class RoutedExperts(MultiExpertWrapper):
    """A RIDE network with the expert-assignment router (stage 2, ``ride_ea``).

    Everything but the router is frozen (batch-norm statistics included). In training every
    expert runs and router i is taught, by binary cross-entropy with ``pos_weight``, that expert
    i+1 helps an image exactly when the mean of experts ``0..i`` misclassifies it and adding
    some later expert classifies it right (the authors' ``expert_help_target``). At inference
    image by image, expert i+1 is added while router i says so (``sigmoid > 0.5``), and the
    logits are the mean of the experts used: the authors' predictions. (The authors run the
    later experts only on the routed images, to save computation; here all experts run in one
    batched pass and the routing is a mask, so shapes stay static for ``torch.compile`` and
    export, and the saving is not realised.)
    """

    def __init__(self, *args: Any, top_k: int = 30, pos_weight: float = 100.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.num_experts < 2:
            raise ConfigError("ride_ea routes between experts: num_experts must be at least 2")
        if not 1 <= int(top_k) <= self.num_classes:
            raise ConfigError(f"ride_ea: top_k must be between 1 and num_classes={self.num_classes}, got {top_k!r}")
        self.router = ExpertRouter(self.num_experts, self.feature_dim, top_k=top_k)
        self.pos_weight = float(pos_weight)
        self.requires_training = True
        for name, param in self.named_parameters():
            param.requires_grad_(name.startswith("router."))

    def train(self, mode: bool = True) -> RoutedExperts:
        super().train(mode)
        # The RIDE network is frozen, its batch-norm statistics too (the authors' _hook_before_iter).
        self.backbone.eval()
        self.head.eval()
        return self

    def forward(self, x: Tensor, *more: Tensor, weights: Sequence[float | Tensor] | None = None,
                return_experts: bool = False) -> Tensor | RoutedOutput:  # type: ignore[override]
        if more or weights is not None:
            raise ValueError("ride_ea takes one batch for all experts, without weights")
        features = self.forward_features(x)
        experts = self.head(features).experts
        count = torch.arange(1, self.num_experts + 1, device=experts.device, dtype=experts.dtype)
        cumulative = experts.cumsum(dim=1) / count.view(1, -1, 1)  # mean of experts 0..i, [B, K, C]
        help_logits = torch.stack([self.router.help_logit(i, features[i], cumulative[:, i])
                                   for i in range(self.num_experts - 1)], dim=1)
        # Expert i+1 runs while every router before it passed the image on.
        passed = torch.cumprod((help_logits > 0).to(torch.long), dim=1)
        used = 1 + passed.sum(dim=1)
        routed = cumulative.gather(1, (used - 1).view(-1, 1, 1).expand(-1, 1, experts.shape[2])).squeeze(1)
        logits = cumulative[:, -1] if self.training else routed
        out = RoutedOutput(logits, experts, help_logits, used)
        return out if return_experts else out.logits

    def router_targets(self, experts: Tensor, targets: Tensor) -> Tensor:
        """``[B, K−1]``: router i's target, the mean of experts ``0..i`` wrong and that of ``0..j`` right for some ``j > i``."""
        correct = experts.cumsum(dim=1).argmax(dim=2) == targets.view(-1, 1)  # [B, K]
        later = torch.flip(torch.cummax(torch.flip(correct.to(torch.long), [1]), dim=1).values, [1]).bool()
        return (~correct[:, :-1]) & later[:, 1:]

    def router_loss(self, help_logits: Tensor, experts: Tensor, targets: Tensor) -> Tensor:
        """Mean over the routers of ``BCE(help_i, target_i)`` with ``pos_weight``."""
        target = self.router_targets(experts.detach(), targets).to(help_logits.dtype)
        weight = help_logits.new_tensor([self.pos_weight])
        losses = [F.binary_cross_entropy_with_logits(help_logits[:, i], target[:, i], pos_weight=weight)
                  for i in range(help_logits.shape[1])]
        return torch.stack(losses).mean()

    def training_step(self, images: Sequence[Tensor], targets: Sequence[Tensor], criterion: Callable[..., Tensor],
                      epoch: EpochInfo, forward: Callable[..., Any]) -> StepOutput:
        """The router's loss on one shared batch; ``criterion`` is not used (the authors' EA model
        returns its own loss). ``stats`` logs the mean number of experts an image would use."""
        x, y = images[0], targets[0]
        out = forward(x, return_experts=True)
        loss = self.router_loss(out.help_logits, out.experts, y)
        hits = (out.logits.detach().argmax(1) == y).sum()
        return StepOutput(loss=loss, logits=out.logits, hits=hits, batch_size=y.shape[0],
                          stats={"experts_used": float(out.experts_used.float().mean())})

    # ------------------------------------------------------------------ stage 2 (SecondStageMethod)
    def load_stage1(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a ``ride`` run's weights (everything but the router, which starts fresh)."""
        own = {k for k in self.state_dict() if not k.startswith("router.")}
        missing = sorted(own - set(state_dict))
        unexpected = sorted(set(state_dict) - own)
        if missing or unexpected:
            raise ConfigError(
                f"the --from checkpoint does not fit ride_ea: {len(missing)} missing ({missing[:3]}), {len(unexpected)} "
                f"unexpected ({unexpected[:3]}) tensors; stage 1 must be a ride run with the same backbone, experts "
                f"and options"
            )
        self.load_state_dict(dict(state_dict), strict=False)

    def choose_tau(self, evaluate: Callable[[], Any]) -> dict[str, Any]:
        """Nothing to calibrate (the router is trained)."""
        return {}


RIDE_EA_SAMPLER: Mapping[str, Any] = {"type": "class_balanced"}


def ride_ea(
    backbone: Spec = "resnet32_cifar",
    *,
    num_classes: int = 1000,
    pretrained: bool = False,
    in_chans: int = 3,
    num_experts: int = 3,
    reduce_dimension: bool = True,
    split_at: str | None = None,
    classifier: str = "cosine",
    s: float = 30.0,
    top_k: int | None = None,
    pos_weight: float = 100.0,
    sampler: Spec = RIDE_EA_SAMPLER,
) -> RoutedExperts:
    """RIDE's expert-assignment router (stage 2): train it from a ``ride`` run, ``--from RUN/last.pt``.

    The network options must be those of the stage-1 ``ride`` run. ``top_k`` (the router reads
    the top ``top_k`` logits; default ``min(30, num_classes)``) and ``pos_weight = 100`` are the
    authors' CIFAR-100 values (``config_imbalance_cifar100_ride_ea.json``); the stream is
    class-balanced (their ``"balanced": true``). Their schedule: 5 epochs, lr 0.01, cosine, batch 512.

    >>> from lttoolkit import build
    >>> model = build("ride_ea", backbone="resnet20_cifar", num_classes=10)
    >>> [name for name, p in model.named_parameters() if p.requires_grad][:2]
    ['router.hidden.0.weight', 'router.hidden.0.bias']
    """
    _check_experts(num_experts, least=2)
    chosen_top_k = min(30, num_classes) if top_k is None else top_k
    sampler = dict(sampler) if isinstance(sampler, Mapping) else sampler
    options = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                   num_experts=num_experts, reduce_dimension=reduce_dimension, split_at=split_at,
                   classifier=classifier, s=s, top_k=top_k, pos_weight=pos_weight, sampler=sampler)
    sampler_spec, loss_spec = resolve("samplers", sampler), resolve("losses", "cross_entropy")
    backbone_spec = ComponentSpec.parse(backbone, kind="backbone")
    model = _ride_network(RoutedExperts, backbone_spec, num_classes=num_classes, pretrained=pretrained,
                          in_chans=in_chans, num_experts=num_experts, reduce_dimension=reduce_dimension,
                          split_at=split_at, classifier=classifier, s=s, top_k=chosen_top_k, pos_weight=pos_weight)
    model.recipe = Recipe(
        method="ride_ea", options=plain_options(options), backbone=backbone_spec, num_classes=num_classes,
        in_chans=in_chans, pretrained=pretrained, samplers={"main": sampler_spec}, loss=loss_spec,
    )
    return model  # type: ignore[return-value]
