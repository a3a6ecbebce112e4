"""ResNets for 32x32 images (He, Zhang, Ren and Sun, "Deep Residual Learning for
Image Recognition", CVPR 2016, Sec. 4.2).

The CIFAR form differs from the ImageNet ResNets: a 3x3 stride-1 stem with 16
channels, then three stages of ``n`` basic blocks with 16, 32 and 64 channels
(strides 1, 2, 2), global average pooling and a linear classifier, so the depth
is ``6n + 2``. Shortcuts are identities; where a stage halves the resolution
and doubles the channels the identity is subsampled and zero-padded (the
paper's "option A"), which adds no parameters. ResNet-32 is the backbone BBN
(Zhou et al., CVPR 2020) and most long-tailed CIFAR work use.

The layout and initialisation are those of the official BBN code
(megvii-research/BBN, ``lib/backbone/resnet_cifar.py``, itself the widely used
CIFAR ResNet that LDAM-DRW also ships): the option-A shortcut puts half of the
new zero channels before the input's channels and half after, and convolutions
start from ``kaiming_normal_`` (fan-in). The same weights therefore give the same
outputs in both, and :func:`lttoolkit.convert_official_bbn` loads the official
checkpoints. (Padding on one side only would be the same network up to a
permutation of channels: it trains the same from scratch, but official weights
would not fit.)

Each model is in two registries: timm's (``@register_model``, run when this
module is imported, which importing :mod:`lttoolkit.backbones` does:
``import lttoolkit.backbones`` before ``timm.create_model("resnet32_cifar")``)
and :data:`lttoolkit.BACKBONES` (declared in ``lttoolkit/registry/_builtins.py``).
There are no published weights for them.

>>> import torch
>>> model = resnet32_cifar(num_classes=10)
>>> model(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
>>> model.forward_head(model.forward_features(torch.zeros(2, 3, 32, 32)), pre_logits=True).shape
torch.Size([2, 64])
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import create_classifier
from timm.models import (
    PretrainedCfg,
    checkpoint_seq,
    build_model_with_cfg,
    generate_default_cfgs,
    register_model,
    resolve_pretrained_cfg,
)
from torch import nn

from lttoolkit._constants import CIFAR_MEAN, CIFAR_STD
from lttoolkit.backbones._timm import unknown_option_error
from lttoolkit.errors import ConfigError, PretrainedWeightsError

__all__ = [
    "CifarResNet",
    "CifarBasicBlock",
    "ZeroPadShortcut",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "resnet20_cifar",
    "resnet32_cifar",
    "resnet44_cifar",
    "resnet56_cifar",
    "resnet110_cifar",
]

# The per-channel statistics most CIFAR code normalises with (lttoolkit._constants).
CIFAR10_MEAN = CIFAR_MEAN
CIFAR10_STD = CIFAR_STD


class ZeroPadShortcut(nn.Module):
    """Parameter-free shortcut: subsample by ``stride`` and pad with zero channels ("option A").

    The new channels are split evenly before and after the input's (the official
    BBN / LDAM-DRW layout: ``planes // 4`` on each side when the width doubles).

    Args:
        in_chs: channels of the input.
        out_chs: channels of the output (``>= in_chs``).
        stride: spatial subsampling factor.

    >>> import torch
    >>> out = ZeroPadShortcut(16, 32, 2)(torch.ones(1, 16, 8, 8))
    >>> out.shape
    torch.Size([1, 32, 4, 4])
    >>> out[0, :, 0, 0].tolist() == [0.0] * 8 + [1.0] * 16 + [0.0] * 8
    True
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        if out_chs < in_chs:
            raise ConfigError(f"a zero-padding shortcut cannot reduce channels ({in_chs} -> {out_chs})")
        self.in_chs = in_chs
        self.out_chs = out_chs
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.out_chs > self.in_chs:
            added = self.out_chs - self.in_chs
            # F.pad pads the last dimensions first: (W, W, H, H, C_before, C_after).
            x = F.pad(x, (0, 0, 0, 0, added // 2, added - added // 2))
        return x

    def extra_repr(self) -> str:
        return f"{self.in_chs}, {self.out_chs}, stride={self.stride}"


class CifarBasicBlock(nn.Module):
    """Two 3x3 conv-BN layers with a ReLU between them, plus the shortcut, then ReLU.

    Args:
        in_chs: input channels.
        out_chs: output channels.
        stride: stride of the first convolution (2 at the start of stages 2 and 3).
        device: device of the parameters.
        dtype: dtype of the parameters.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        dd = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride=stride, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(out_chs, **dd)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, stride=1, padding=1, bias=False, **dd)
        self.bn2 = nn.BatchNorm2d(out_chs, **dd)
        self.act2 = nn.ReLU(inplace=True)
        self.shortcut: nn.Module = (
            ZeroPadShortcut(in_chs, out_chs, stride) if stride != 1 or in_chs != out_chs else nn.Identity()
        )

    def zero_init_last(self) -> None:
        """Start the block as an identity (Goyal et al. 2017): zero the last BN's scale."""
        nn.init.zeros_(self.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """The CIFAR ResNet of He et al. (2016), depth ``6n + 2``, with timm's model interface.

    Args:
        depth: total number of weighted layers, ``6n + 2`` (20, 32, 44, 56, 110, ...).
        num_classes: classifier outputs; 0 removes the classifier, so ``forward``
            returns the pooled features.
        in_chans: input channels (1 for grayscale data such as Fashion-MNIST).
        global_pool: pooling type understood by timm (``"avg"``, ``"max"``,
            ``"avgmax"``, ``"catavgmax"``, or ``""`` for none, with ``num_classes=0``).
        drop_rate: dropout before the classifier.
        widths: channels of the stem and the three stages' outputs.
        zero_init_last: zero the last BN scale of each block at init.
        device: device of the parameters.
        dtype: dtype of the parameters.

    >>> import torch
    >>> model = CifarResNet(depth=20, num_classes=100, in_chans=1)
    >>> model(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 100])
    >>> [info["module"] for info in model.feature_info]
    ['layer1', 'layer2', 'layer3']
    """

    def __init__(
        self,
        depth: int = 32,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        widths: tuple[int, int, int] = (16, 32, 64),
        zero_init_last: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6 != 0:
            raise ConfigError(
                f"a CIFAR ResNet has depth 6n+2 with n >= 1 (20, 32, 44, 56, 110, ...), got depth={depth}"
            )
        if len(widths) != 3:
            raise ConfigError(f"widths must give the channels of the three stages, got {widths!r}")
        blocks_per_stage = (depth - 2) // 6
        dd = {"device": device, "dtype": dtype}
        self.depth = depth
        self.num_classes = num_classes
        self.in_chans = in_chans
        try:
            self.drop_rate = float(drop_rate)
        except (TypeError, ValueError):
            raise ConfigError(f"drop_rate must be a number in [0, 1), got {drop_rate!r}") from None
        if not 0.0 <= self.drop_rate < 1.0:
            raise ConfigError(f"drop_rate must be in [0, 1), got {drop_rate!r}")
        self.global_pool_type = global_pool
        self.grad_checkpointing = False

        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, stride=1, padding=1, bias=False, **dd)
        self.bn1 = nn.BatchNorm2d(widths[0], **dd)
        self.act1 = nn.ReLU(inplace=True)

        self.feature_info: list[dict[str, Any]] = []
        in_chs = widths[0]
        reduction = 1
        for index, (out_chs, stride) in enumerate(zip(widths, (1, 2, 2)), start=1):
            blocks = [CifarBasicBlock(in_chs, out_chs, stride, **dd)]
            blocks += [CifarBasicBlock(out_chs, out_chs, 1, **dd) for _ in range(blocks_per_stage - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*blocks))
            reduction *= stride
            self.feature_info.append({"num_chs": out_chs, "reduction": reduction, "module": f"layer{index}"})
            in_chs = out_chs

        self.num_features = self.head_hidden_size = widths[-1]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool, **dd)
        self._init_weights(zero_init_last)
        # The factories replace this with timm's resolved cfg; a bare instance still carries one.
        self.pretrained_cfg = self.default_cfg = PretrainedCfg(**_cfg(architecture=f"resnet{depth}_cifar")).to_dict()

    def _init_weights(self, zero_init_last: bool) -> None:
        # He et al. (ICCV 2015) init as the official BBN code: kaiming_normal_ with its
        # defaults (fan-in); BN starts as identity; the classifier keeps torch's Linear init,
        # as BBN's separately built classifier does.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_last:
            for module in self.modules():
                if isinstance(module, CifarBasicBlock):
                    module.zero_init_last()

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (timm's interface)."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        """The final linear layer (``nn.Identity`` when ``num_classes == 0``)."""
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """Replace the classifier with a fresh one of ``num_classes`` outputs (0 removes it).

        Args:
            num_classes: new number of outputs.
            global_pool: new pooling type; ``None`` keeps the current one.
        """
        if global_pool is not None:
            self.global_pool_type = global_pool
        self.num_classes = num_classes
        ref = self.conv1.weight
        self.global_pool, self.fc = create_classifier(
            self.num_features, num_classes, pool_type=self.global_pool_type, device=ref.device, dtype=ref.dtype
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Stem and the three stages: ``(B, C, H, W) -> (B, 64, H/4, W/4)``."""
        x = self.act1(self.bn1(self.conv1(x)))
        if self.grad_checkpointing and not torch.jit.is_scripting():
            return checkpoint_seq([self.layer1, self.layer2, self.layer3], x, flatten=True)
        x = self.layer1(x)
        x = self.layer2(x)
        return self.layer3(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool (and drop out) the feature map; return the features if ``pre_logits`` else the logits."""
        x = self.global_pool(x)
        if self.drop_rate:
            x = F.dropout(x, p=float(self.drop_rate), training=self.training)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**overrides: Any) -> dict[str, Any]:
    # No url / hf_hub_id: these models have no published weights.
    return {
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "pool_size": (8, 8),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": CIFAR10_MEAN,
        "std": CIFAR10_STD,
        "first_conv": "conv1",
        "classifier": "fc",
        "paper_ids": "arXiv:1512.03385",
        "paper_name": "Deep Residual Learning for Image Recognition",
        **overrides,
    }


_DEPTHS = (20, 32, 44, 56, 110)

# timm's register_model reads this module-level name to attach each model's cfg.
default_cfgs = generate_default_cfgs({f"resnet{depth}_cifar": _cfg() for depth in _DEPTHS})


def _create_cifar_resnet(variant: str, depth: int, pretrained: bool, **kwargs: Any) -> CifarResNet:
    if pretrained:
        cfg = resolve_pretrained_cfg(
            variant,
            pretrained_cfg=kwargs.get("pretrained_cfg"),
            pretrained_cfg_overlay=kwargs.get("pretrained_cfg_overlay"),
        )
        if not (cfg.file or cfg.state_dict is not None or cfg.url or cfg.hf_hub_id):
            # timm would only log a warning and keep the random init: refuse instead.
            raise PretrainedWeightsError(
                f"{variant} has no published pretrained weights. Pass pretrained=False to train it from "
                f"scratch, or load your own checkpoint: timm.create_model({variant!r}, pretrained=True, "
                f"pretrained_cfg_overlay=dict(file='/path/to/weights.pth')), or "
                f"model.load_state_dict(torch.load('/path/to/weights.pth'))."
            )
    try:
        return build_model_with_cfg(
            CifarResNet,
            variant,
            pretrained,
            depth=depth,
            feature_cfg={"out_indices": (0, 1, 2)},
            **kwargs,
        )
    except TypeError as exc:
        converted = unknown_option_error(exc, variant, CifarResNet, exclude=("depth",))
        if converted is None:
            raise
        raise converted from exc
    except PretrainedWeightsError:
        raise
    except (OSError, RuntimeError) as exc:  # missing file, or a state dict that does not fit
        if not pretrained:
            raise
        raise PretrainedWeightsError(
            f"could not load pretrained weights for {variant}: {type(exc).__name__}: {exc}. Check the file "
            f"given in pretrained_cfg_overlay (a state dict of this architecture), or pass pretrained=False."
        ) from exc


@register_model
def resnet20_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-20 for 32x32 inputs (n=3, 0.27M parameters)."""
    return _create_cifar_resnet("resnet20_cifar", 20, pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-32 for 32x32 inputs (n=5, 0.46M parameters): BBN's CIFAR backbone."""
    return _create_cifar_resnet("resnet32_cifar", 32, pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def resnet44_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-44 for 32x32 inputs (n=7, 0.66M parameters)."""
    return _create_cifar_resnet("resnet44_cifar", 44, pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-56 for 32x32 inputs (n=9, 0.85M parameters)."""
    return _create_cifar_resnet("resnet56_cifar", 56, pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)


@register_model
def resnet110_cifar(pretrained: bool = False, num_classes: int = 10, in_chans: int = 3, **kwargs: Any) -> CifarResNet:
    """ResNet-110 for 32x32 inputs (n=18, 1.7M parameters)."""
    return _create_cifar_resnet("resnet110_cifar", 110, pretrained, num_classes=num_classes, in_chans=in_chans, **kwargs)
