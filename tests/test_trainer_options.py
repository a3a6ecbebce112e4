"""The trainer's options for real runs: precision, memory format, compile, accumulation,
clipping, EMA, determinism, host syncs and starting from other weights.

Each option is checked on the CPU against what it must do (hand-computed updates,
invariants, side-by-side runs); CUDA-only paths skip and are run by
``benchmarks/gpu_check.py``.
"""

from __future__ import annotations

import json

import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lttoolkit import build
from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.engine.config import TrainConfig, load_config
from lttoolkit.engine.evaluate import evaluate_checkpoint, load_model
from lttoolkit.engine.numerics import resolve_amp_dtype, use_channels_last
from lttoolkit.engine.trainer import NonFiniteLossError, Trainer, quickstart_config_path, train
from lttoolkit.engine.weights import load_matching_weights
from lttoolkit.errors import ConfigError
from lttoolkit.registry import BACKBONES, LOSSES

BASE = [
    "data.dataset=embedded",
    "model.backbone=resnet20_cifar",
    "optim.lr=0.1",
    "optim.warmup_epochs=0",
    "data.batch_size=32",
    "data.test_batch_size=500",
    "train.max_steps_per_epoch=2",
    "train.epochs=1",
    "train.device=cpu",
    "train.amp=false",  # the quick start's bfloat16 off: the comparisons below are of float32 runs
]


def config(tmp_path: Path, name: str, *extra: str):
    return load_config(quickstart_config_path(), [*BASE, f"output_dir={tmp_path}", f"name={name}", *extra])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RecordingLoss(nn.Module):
    """Cross-entropy that notes, at every call, the dtype of the logits and the global flags."""

    seen: list[dict[str, Any]] = []

    def __init__(self, class_counts) -> None:
        super().__init__()

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        RecordingLoss.seen.append({
            "dtype": logits.dtype,
            "autocast": torch.is_autocast_enabled("cpu"),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
        })
        return F.cross_entropy(logits.float(), targets)


@pytest.fixture
def recording_loss():
    RecordingLoss.seen = []
    LOSSES.register(RecordingLoss, name="test_recording")
    yield "test_recording"
    LOSSES.unregister("test_recording")


# ----------------------------------------------------------------------------- mixed precision
def test_amp_dtype_resolution():
    cpu = torch.device("cpu")
    assert resolve_amp_dtype(TrainConfig(), cpu) is None  # auto: CUDA only
    assert resolve_amp_dtype(TrainConfig(amp=True), cpu) is torch.bfloat16
    assert resolve_amp_dtype(TrainConfig(amp=True, amp_dtype="float16"), cpu) is torch.float16
    assert resolve_amp_dtype(TrainConfig(amp=False, amp_dtype="float16"), cpu) is None


def test_cpu_bfloat16_autocast_trains_and_evaluates_in_bfloat16(tmp_path, recording_loss):
    cfg = config(tmp_path, "bf16", "model.type=ce", f"model.loss={recording_loss}", "train.amp=true")
    trainer = Trainer(cfg, progress=False)
    assert trainer.amp_dtype is torch.bfloat16 and not trainer.scaler.is_enabled()  # bf16 needs no scaler
    evaluated: list[torch.dtype] = []
    head = trainer.model.backbone.get_classifier()
    head.register_forward_hook(lambda module, args, out: evaluated.append(out.dtype) if not module.training else None)
    results = trainer.fit()
    assert RecordingLoss.seen and all(s["autocast"] and s["dtype"] is torch.bfloat16 for s in RecordingLoss.seen)
    assert evaluated and set(evaluated) == {torch.bfloat16}  # evaluation under autocast too
    assert 0.0 <= results["test"]["top1"] <= 100.0
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert all(p.dtype is torch.float32 for p in trainer.model.parameters())  # the weights stay float32
    # results.json says what the run trained in (benchmarks/reproduce.py keeps grids of one precision).
    written = json.loads((tmp_path / "bf16" / "results.json").read_text(encoding="utf-8"))
    assert written["precision"] == "bfloat16 autocast, channels_last"


@pytest.mark.slow  # float16 convolutions are slow on a CPU (30 s here); GPUs run it in benchmarks/gpu_check.py
def test_float16_trains_with_a_grad_scaler_whose_state_is_checkpointed(tmp_path, recording_loss):
    cfg = config(tmp_path, "fp16", "model.type=ce", f"model.loss={recording_loss}", "train.amp=true",
                 "train.amp_dtype=float16")
    trainer = Trainer(cfg, progress=False)
    assert trainer.scaler.is_enabled()
    trainer.fit()
    assert {s["dtype"] for s in RecordingLoss.seen} == {torch.float16}
    scaler = load_checkpoint(tmp_path / "fp16" / "last.pt")["scaler"]
    assert scaler["scale"] > 0 and "_growth_tracker" in scaler


# ----------------------------------------------------------------------------- memory format
@pytest.mark.parametrize("option", [True, False])
def test_channels_last_reaches_every_convolution(tmp_path, option):
    cfg = config(tmp_path, f"cl-{option}", "model.type=bbn", f"train.channels_last={str(option).lower()}")
    trainer = Trainer(cfg, progress=False)
    formats: list[bool] = []
    for module in trainer.model.modules():
        if isinstance(module, nn.Conv2d):
            # (a one-channel input, the grey images' first conv, is both formats at once)
            module.register_forward_hook(lambda m, args, out: formats.append(
                args[0].is_contiguous(memory_format=torch.channels_last)
                and m.weight.is_contiguous(memory_format=torch.channels_last)) if m.in_channels > 1 else None)
    trainer.fit()
    assert formats and all(formats) == option and (any(formats) == option)


def test_channels_last_default_is_on_for_cpu_and_cuda_only():
    assert use_channels_last("auto", torch.device("cpu")) and use_channels_last("auto", torch.device("cuda"))
    assert not use_channels_last("auto", torch.device("mps"))
    assert not use_channels_last(False, torch.device("cpu"))


# ----------------------------------------------------------------------------- compile
def test_compiled_forward_trains_like_the_eager_one(tmp_path):
    # aot_eager: dynamo's graph capture and AOT autograd without inductor's C++ build.
    common = ["model.type=ce", "train.max_steps_per_epoch=2", "train.channels_last=false"]
    eager = Trainer(config(tmp_path, "eager", *common), progress=False)
    eager.fit()
    compiled = Trainer(config(tmp_path, "compiled", *common, "train.compile=true",
                              "train.compile_backend=aot_eager"), progress=False)
    assert compiled.forward_model is not compiled.model
    compiled.fit()
    for (name, a), b in zip(eager.model.state_dict().items(), compiled.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    # The checkpoint is the plain model's state dict (no _orig_mod. prefix), loadable as ever.
    model, _ = load_model(tmp_path / "compiled" / "last.pt")
    assert set(model.state_dict()) == set(eager.model.state_dict())


# ----------------------------------------------------------------------------- accumulation
class NoNormNet(nn.Module):
    """A CNN without batch norm, so a batch split in two gives the same gradient."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, **_: Any) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 8, 3, stride=2, padding=1)
        self.num_features = 8
        self.reset_classifier(num_classes)

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(8, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return torch.relu(self.conv(x))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@pytest.fixture
def no_norm_backbone():
    def no_norm_net(pretrained: bool = False, **options: Any) -> NoNormNet:
        return NoNormNet(**options)

    BACKBONES.register(no_norm_net, name="test_no_norm_net")
    yield "test_no_norm_net"
    BACKBONES.unregister("test_no_norm_net")


def test_accumulating_two_half_batches_equals_one_full_batch(tmp_path, no_norm_backbone):
    common = ["model.type=ce", f"model.backbone={no_norm_backbone}", "train.channels_last=false",
              "optim.weight_decay=2e-4", "train.epochs=2", "optim.milestones=[1]", "optim.gamma=0.1"]
    # Each run right after its set-up: augmentation draws from the global RNG the set-up seeds.
    full = Trainer(config(tmp_path, "full", *common, "data.batch_size=32", "train.max_steps_per_epoch=3"),
                   progress=False)
    initial = [value.clone() for value in full.model.state_dict().values()]
    full.fit()
    half = Trainer(config(tmp_path, "half", *common, "data.batch_size=16", "train.max_steps_per_epoch=6",
                          "train.accumulate_steps=2"), progress=False)
    half.fit()
    assert half.optimizer_steps_per_epoch == full.steps_per_epoch == 3
    # The same images per optimizer step, the same lr schedule (it counts optimizer steps).
    assert half.lr_scheduler.last_epoch == full.lr_scheduler.last_epoch == 6
    for (name, a), b in zip(full.model.state_dict().items(), half.model.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    moved = sum((a - b).abs().sum() for a, b in zip(full.model.state_dict().values(), initial))
    assert moved > 0  # the runs trained (a test that compares two unchanged models proves nothing)


def test_a_last_short_accumulation_group_is_averaged_over_its_own_batches(tmp_path, no_norm_backbone):
    # 3 batches with accumulate_steps=2: steps (0, 1) then (2) alone, at full weight.
    common = ["model.type=ce", f"model.backbone={no_norm_backbone}", "train.channels_last=false",
              "optim.momentum=0", "optim.weight_decay=0"]
    grouped = Trainer(config(tmp_path, "grouped", *common, "data.batch_size=16", "train.max_steps_per_epoch=3",
                             "train.accumulate_steps=2"), progress=False)
    assert grouped.optimizer_steps_per_epoch == 2
    grouped.fit()
    assert grouped.lr_scheduler.last_epoch == 2


# ----------------------------------------------------------------------------- clipping
def test_clip_grad_norm_bounds_the_first_sgd_step(tmp_path):
    # First SGD step with momentum and no weight decay: the update is lr x the clipped gradient.
    clip, lr = 1e-3, 0.1
    cfg = config(tmp_path, "clip", "model.type=ce", "train.max_steps_per_epoch=1", f"optim.clip_grad_norm={clip}",
                 "optim.weight_decay=0")
    trainer = Trainer(cfg, progress=False)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(trainer.model.parameters(), before)))
    assert step.item() == pytest.approx(lr * clip, rel=1e-4)


# ----------------------------------------------------------------------------- EMA
def test_ema_follows_averaged_model_and_is_what_the_run_evaluates(tmp_path):
    decay = 0.5
    cfg = config(tmp_path, "ema", "model.type=ce", f"train.ema_decay={decay}")
    trainer = Trainer(cfg, progress=False)
    snapshots: list[list[Tensor]] = []
    trainer.optimizer.register_step_post_hook(
        lambda *_: snapshots.append([p.detach().clone() for p in trainer.model.parameters()]))
    results = trainer.fit()
    assert len(snapshots) == 2
    # AveragedModel copies at its first update, then ema <- decay * ema + (1 - decay) * weights.
    for ema, first, second in zip(trainer.ema.module.parameters(), *snapshots):
        torch.testing.assert_close(ema, decay * first + (1 - decay) * second)
    assert any(not torch.equal(a, b) for a, b in zip(trainer.ema.module.parameters(), trainer.model.parameters()))
    last = load_checkpoint(tmp_path / "ema" / "last.pt")
    assert last["ema_updates"] == 2
    for key, value in trainer.ema.module.state_dict().items():
        assert torch.equal(last["ema"][key], value), key
    # The run's test numbers are the EMA's, and evaluating the checkpoint gives them again.
    assert evaluate_checkpoint(tmp_path / "ema" / "last.pt", device="cpu")["top1"] == results["test"]["top1"]
    raw, _ = load_model(tmp_path / "ema" / "last.pt", ema=False)
    assert all(torch.equal(a, b) for a, b in zip(raw.parameters(), trainer.model.parameters()))


# ----------------------------------------------------------------------------- determinism
def test_deterministic_is_on_during_the_run_and_put_back_after(tmp_path, recording_loss):
    before = torch.are_deterministic_algorithms_enabled()
    train(config(tmp_path, "det", "model.type=ce", f"model.loss={recording_loss}", "train.deterministic=true"),
          progress=False)
    assert RecordingLoss.seen and all(s["deterministic"] for s in RecordingLoss.seen)
    assert torch.are_deterministic_algorithms_enabled() == before


# ----------------------------------------------------------------------------- host syncs
def _host_reads_during(run) -> int:
    """Tensor -> Python reads made by lttoolkit's own code (not torchvision's transforms)."""
    counted = {"n": 0}
    package = str(Path(__file__).resolve().parents[1] / "lttoolkit")
    originals = {name: getattr(torch.Tensor, name) for name in ("item", "__float__", "__bool__", "tolist")}

    def wrap(name):
        original = originals[name]

        def counting(self, *args, **kwargs):
            if sys._getframe(1).f_code.co_filename.startswith(package):
                counted["n"] += 1
            return original(self, *args, **kwargs)
        return counting

    try:
        for name in originals:
            setattr(torch.Tensor, name, wrap(name))
        run()
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
    return counted["n"]


@pytest.mark.parametrize("method", ["ce", "bbn"])
def test_no_host_read_per_training_step(tmp_path, method):
    def run(steps: int):
        return lambda: train(config(tmp_path, f"{method}-{steps}", f"model.type={method}",
                                    "data.batch_size=8", f"train.max_steps_per_epoch={steps}",
                                    "train.log_every=100"), progress=False)

    few, many = _host_reads_during(run(2)), _host_reads_during(run(8))
    assert many == few  # six more steps, not one more read


def test_non_finite_loss_is_caught_within_the_log_interval(tmp_path):
    cfg = config(tmp_path, "nan", "model.type=ce", "optim.lr=1e30", "train.max_steps_per_epoch=6",
                 "train.log_every=3", "train.epochs=2", "data.batch_size=8")
    with pytest.raises(NonFiniteLossError, match=r"epoch 0, within steps (0-2|3-5);.*no epoch finished"):
        train(cfg, progress=False)


# ----------------------------------------------------------------------------- weights in
@pytest.fixture(scope="module")
def ce_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ce")
    cfg = load_config(quickstart_config_path(), [*BASE, f"output_dir={out}", "name=ce", "model.type=ce"])
    train(cfg, progress=False)
    return out / "ce" / "last.pt"


def test_results_record_a_float32_run_as_float32(ce_run):
    written = json.loads((ce_run.parent / "results.json").read_text(encoding="utf-8"))
    assert written["precision"] == "float32, channels_last"  # train.amp=false; channels_last auto is on for CPUs


def test_bbn_starts_from_a_ce_run_with_its_last_block_in_both_copies(tmp_path, ce_run):
    trainer = Trainer(config(tmp_path, "bbn-from-ce", "model.type=bbn", f"init_from={ce_run}"), progress=False)
    ce = load_checkpoint(ce_run)["model"]
    block = trainer.model.backbone.layer3[2]
    for name, value in block.conventional.state_dict().items():
        assert torch.equal(value, ce[f"backbone.layer3.2.{name}"]), name
        assert torch.equal(block.rebalancing.state_dict()[name], ce[f"backbone.layer3.2.{name}"]), name
    assert torch.equal(trainer.model.backbone.conv1.weight, ce["backbone.conv1.weight"])
    report = trainer.init_report
    assert report.initialised == ["classifier.weight", "classifier.bias"]  # [f_c ; f_r] is twice as wide
    assert {"backbone.fc.weight", "backbone.fc.bias"} <= set(report.unused)
    results = trainer.fit()
    assert results["init_report"]["aliased"]["backbone.layer3.2.rebalancing.conv1.weight"] == \
        "backbone.layer3.2.conv1.weight"


def test_fine_tuning_to_another_number_of_classes_re_makes_the_classifier():
    source = build("ce", backbone="resnet20_cifar", num_classes=10)
    target = build("ce", backbone="resnet20_cifar", num_classes=4)
    head = target.backbone.fc.weight.detach().clone()
    report = load_matching_weights(target, source.state_dict())
    assert report.shape_mismatch == {"backbone.fc.weight": "[10, 64] -> [4, 64]", "backbone.fc.bias": "[10] -> [4]",
                                     "log_prior": "[10] -> [4]"}
    assert torch.equal(target.backbone.fc.weight, head)  # left as initialised
    assert torch.equal(target.backbone.conv1.weight, source.backbone.conv1.weight)
    assert report.num_loaded == len(target.state_dict()) - 3


def test_init_exclude_keeps_the_initialisation_of_what_it_names(tmp_path, ce_run):
    trainer = Trainer(config(tmp_path, "excl", "model.type=ce", f"init_from={ce_run}",
                             "init_exclude=['backbone.layer3.*']"), progress=False)
    ce = load_checkpoint(ce_run)["model"]
    assert not torch.equal(trainer.model.backbone.layer3[0].conv1.weight, ce["backbone.layer3.0.conv1.weight"])
    assert torch.equal(trainer.model.backbone.layer2[0].conv1.weight, ce["backbone.layer2.0.conv1.weight"])
    assert all(key.startswith("backbone.layer3.") for key in trainer.init_report.excluded)


def test_a_checkpoint_with_nothing_that_fits_is_refused(tmp_path, ce_run):
    state = load_checkpoint(ce_run)
    state["model"] = {f"other.{k}": v for k, v in state["model"].items()}
    torch.save(state, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match=r"none of its \d+ tensors fits this model"):
        Trainer(config(tmp_path, "nothing", "model.type=ce", f"init_from={tmp_path / 'other.pt'}"), progress=False)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (benchmarks/gpu_check.py runs it)")
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_cuda_autocast_scaler_and_determinism(tmp_path, dtype):
    import os

    cfg = config(tmp_path, f"cuda-{dtype}", "model.type=bbn", "train.device=cuda", "train.amp=true",
                 f"train.amp_dtype={dtype}", "train.deterministic=true")
    trainer = Trainer(cfg, progress=False)
    assert trainer.scaler.is_enabled() == (dtype == "float16")
    assert os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    results = trainer.fit()
    assert 0.0 <= results["test"]["top1"] <= 100.0
    assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic  # put back
