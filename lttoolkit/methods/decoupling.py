"""Two-stage decoupling (Kang et al., "Decoupling Representation and Classifier for
Long-Tailed Recognition", ICLR 2020).

Stage 1 is plain instance-balanced training (``ce``). Stage 2 starts from the
stage-1 checkpoint (``lttk train CONFIG --from CHECKPOINT``) and changes only the
classifier:

* ``crt``: classifier re-training — re-initialise the classifier and train it with
  class-balanced sampling, the representation frozen.
* ``lws``: learnable weight scaling — learn one scale per class, everything else frozen.
* ``tau_norm``: no training — divide each class's weight vector by its norm to
  the power tau; tau is chosen on a validation split held out from the training
  data (``data.val_fraction``), never on the test set. As in the authors'
  ``tau_norm.py`` (facebookresearch/classifier-balancing), the logits are
  ``x · w_i / ||w_i||^tau`` without the classifier's bias (the script loads the
  bias and never uses it); ``keep_bias=True`` adds the stage-1 bias back.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from lttoolkit.errors import ConfigError
from lttoolkit.methods.single_branch import SingleBranchModel, single_branch

__all__ = ["DecoupledModel", "crt", "lws", "tau_norm", "TAU_GRID"]

Spec = str | Mapping[str, Any]
TAU_GRID = tuple(round(0.1 * i, 1) for i in range(21))  # 0.0, 0.1, ..., 2.0


class DecoupledModel(SingleBranchModel):
    """A stage-2 model: a stage-1 network whose representation is frozen.

    Args:
        backbone: the timm-style network (same architecture as stage 1).
        stage: ``"crt"``, ``"lws"`` or ``"tau_norm"``.
        keep_bias: ``tau_norm`` only: add the classifier's bias to the normalised
            logits (``False``, the authors' ``tau_norm.py``, drops it).
    """

    def __init__(self, backbone: nn.Module, *, stage: str, keep_bias: bool = False, **kwargs: Any) -> None:
        super().__init__(backbone, **kwargs)
        if stage not in ("crt", "lws", "tau_norm"):
            raise ValueError(f"stage must be crt, lws or tau_norm, got {stage!r}")
        if not isinstance(keep_bias, bool):
            raise ConfigError(f"keep_bias must be true or false, got {keep_bias!r} ({type(keep_bias).__name__})")
        self.stage = stage
        self.keep_bias = keep_bias
        num_classes = self.log_prior.numel()
        self.scales = nn.Parameter(torch.ones(num_classes), requires_grad=stage == "lws")
        self.register_buffer("tau", torch.zeros(()))
        self._freeze()

    @property
    def requires_training(self) -> bool:
        """tau-normalisation has nothing to train: it only picks tau on validation data."""
        return self.stage != "tau_norm"

    def _freeze(self) -> None:
        trainable = {id(p) for p in self.classifier.parameters()} if self.stage == "crt" else set()
        for param in self.backbone.parameters():
            param.requires_grad_(id(param) in trainable)
        if self.head is not None:
            for param in self.head.parameters():
                param.requires_grad_(self.stage == "crt")

    def train(self, mode: bool = True) -> DecoupledModel:
        super().train(mode)
        # The representation is frozen, batch-norm statistics included.
        self.backbone.eval()
        return self

    def load_stage1(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load a stage-1 ``ce``-style state dict; cRT then re-initialises the classifier."""
        own = self.state_dict()
        missing = [k for k in own if k not in state_dict and k not in ("scales", "tau")]
        if missing:
            raise ConfigError(
                f"the --from checkpoint does not fit {self.stage}: it lacks {missing[:3]}...; stage 1 must be a "
                f"single-branch model (e.g. model.type=ce) with the same backbone and classes"
            )
        self.load_state_dict({k: v for k, v in state_dict.items() if k in own}, strict=False)
        if self.stage == "crt":
            for module in self.classifier.modules():
                if hasattr(module, "reset_parameters"):
                    module.reset_parameters()

    def _weight(self) -> Tensor:
        weight = getattr(self.classifier, "weight", None)
        if not isinstance(weight, Tensor):
            raise ConfigError(f"{self.stage} needs a linear classifier with a weight matrix")
        return weight

    def forward(self, x: Tensor) -> Tensor:
        if self.stage == "tau_norm":
            features = self.backbone.forward_head(self.backbone.forward_features(x), pre_logits=True)
            weight = self._weight()
            norms = weight.norm(dim=1, keepdim=True).clamp_min(1e-12) ** self.tau
            bias = getattr(self.classifier, "bias", None) if self.keep_bias else None
            return torch.nn.functional.linear(features, weight / norms, bias)
        logits = super().forward(x)
        return logits * self.scales if self.stage == "lws" else logits

    def choose_tau(self, evaluate: Callable[[], Mapping[str, Any]], grid: Sequence[float] = TAU_GRID) -> dict[str, Any]:
        """Pick tau maximising the validation split's mean per-class accuracy.

        A split held out from long-tailed training data is itself long-tailed, so its
        plain top-1 rewards the head and would pick tau = 0; the mean over classes
        weighs every class equally, like the balanced test set the method targets.
        ``evaluate()`` must score the validation split.
        """
        scores = []
        for tau in grid:
            self.tau.fill_(float(tau))
            metrics = evaluate()
            balanced = metrics.get("mean_class_accuracy")
            scores.append((float(balanced if balanced is not None else metrics["top1"]), -float(tau), float(tau),
                           float(metrics["top1"])))
        best = max(scores)
        self.tau.fill_(best[2])
        return {"tau": best[2], "val_mean_class_accuracy": best[0], "selected_on": "val mean class accuracy",
                "grid": [{"tau": s[2], "val_mean_class_accuracy": s[0], "val_top1": s[3]} for s in scores]}


def _stage2(stage: str, call: dict[str, Any], sampler: Spec = "instance", loss: Spec = "cross_entropy",
            keep_bias: bool = False) -> DecoupledModel:
    model = single_branch(stage, call["backbone"], num_classes=call["num_classes"], pretrained=call["pretrained"],
                          in_chans=call["in_chans"], sampler=sampler, loss=loss)
    decoupled = DecoupledModel(model.backbone, stage=stage, head=model.head, keep_bias=keep_bias)
    # Rebuilding calls the stage-2 method with exactly the options it was given.
    decoupled.recipe = model.recipe.model_copy(update={"options": dict(call)})
    return decoupled


# The authors' cRT and LWS configs (config/*/cls_crt.yaml, cls_lws.yaml): ClassAwareSampler, num_samples_cls: 4.
STAGE2_SAMPLER: Mapping[str, Any] = {"type": "class_balanced", "samples_per_class": 4}


def crt(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False,
        in_chans: int = 3, sampler: Spec = STAGE2_SAMPLER, loss: Spec = "cross_entropy") -> DecoupledModel:
    """Decoupling stage 2, classifier re-training (Kang et al. 2020): frozen features, class-balanced sampling.

    The default sampler is the authors' configuration: class-aware sampling taking
    4 images of a class per visit (``{"type": "class_balanced", "samples_per_class": 4}``).

    >>> from lttoolkit import build
    >>> model = build("crt", backbone="resnet20_cifar", num_classes=10)
    >>> [name for name, p in model.named_parameters() if p.requires_grad]
    ['backbone.fc.weight', 'backbone.fc.bias']
    >>> model.recipe.samplers["main"].options
    {'samples_per_class': 4}
    """
    sampler = dict(sampler) if isinstance(sampler, Mapping) else sampler  # never share the default dict
    call = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                sampler=sampler, loss=loss)
    return _stage2("crt", call, sampler, loss)


def lws(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False,
        in_chans: int = 3, sampler: Spec = STAGE2_SAMPLER, loss: Spec = "cross_entropy") -> DecoupledModel:
    """Decoupling stage 2, learnable weight scaling (Kang et al. 2020): one scale per class is trained.

    Same default sampler as :func:`crt` (the authors' ``cls_lws.yaml``).
    """
    sampler = dict(sampler) if isinstance(sampler, Mapping) else sampler
    call = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                sampler=sampler, loss=loss)
    return _stage2("lws", call, sampler, loss)


def tau_norm(backbone: Spec = "resnet32_cifar", *, num_classes: int = 1000, pretrained: bool = False,
             in_chans: int = 3, keep_bias: bool = False) -> DecoupledModel:
    """Decoupling stage 2, tau-normalisation (Kang et al. 2020): w_i / ||w_i||^tau, tau chosen on validation data.

    Args:
        keep_bias: add the stage-1 classifier bias to the normalised logits. ``False``
            (the default) is the authors' ``tau_norm.py``, whose logits are
            ``x · w_i / ||w_i||^tau`` with no bias.

    >>> from lttoolkit import build
    >>> build("tau_norm", backbone="resnet20_cifar", num_classes=10).keep_bias
    False
    """
    call = dict(backbone=backbone, num_classes=num_classes, pretrained=pretrained, in_chans=in_chans,
                keep_bias=keep_bias)
    return _stage2("tau_norm", call, keep_bias=keep_bias)
