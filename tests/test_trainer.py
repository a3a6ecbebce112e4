"""Tests of the training engine: streams, schedules, run folder, checkpoints, resume, determinism.

Every run is tiny (ResNet-20, 2-3 steps of 32 images per epoch, 1-3 epochs on the
embedded Fashion-MNIST-LT, CPU) so the whole file stays fast on 2 cores.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lttoolkit.engine.trainer as trainer_module
from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.engine.config import OptimConfig, load_config
from lttoolkit.engine.evaluate import load_model
from lttoolkit.engine.optim import build_lr_scheduler, build_optimizer, lr_factor
from lttoolkit.engine.trainer import NonFiniteLossError, Trainer, quickstart_config_path, train
from lttoolkit.errors import ConfigError, LTToolkitError
from lttoolkit.registry import LOSSES

TINY = [
    "data.dataset=embedded",
    "model.backbone=resnet20_cifar",
    "optim.lr=0.1",  # the hand-computed learning rates below assume it
    "data.batch_size=32",
    "data.test_batch_size=500",
    "data.num_workers=0",
    "train.max_steps_per_epoch=2",
    "train.epochs=3",
    "train.device=cpu",
    "optim.warmup_epochs=0",
    "train.eval_every=3",  # test metrics at the last epoch only: evaluation is most of a tiny run's time
]
# The reference BBN run: warm-up over 2 epochs, then x0.1 at epoch 2 -> lr 0.05, 0.1, 0.01.
REFERENCE = ["optim.warmup_epochs=2", "optim.milestones=[2]", "optim.gamma=0.1"]
TIMING_KEYS = {"images_per_second", "epoch_seconds"}
EMBEDDED_TRAIN_COUNTS = [600, 359, 215, 129, 77, 46, 27, 16, 10, 6]


def tiny_config(output_dir: Path, name: str, *extra: str):
    return load_config(quickstart_config_path(), [*TINY, f"output_dir={output_dir}", f"name={name}", *extra])


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def without_timing(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in record.items() if k not in TIMING_KEYS} for record in records]


def strict_json(path: Path) -> dict:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{path} holds {constant}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def assert_same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class ProbeLoss(nn.Module):
    """Cross-entropy that remembers what the engine gave it and can turn NaN from an epoch on."""

    def __init__(self, class_counts, nan_from_epoch: int | None = None) -> None:
        super().__init__()
        self.class_counts = list(class_counts)
        self.nan_from_epoch = nan_from_epoch
        self.epoch = 0
        self.calls = 0

    def set_epoch(self, epoch: int, max_epochs: int) -> None:
        self.epoch = epoch

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        loss = F.cross_entropy(logits, targets)
        if self.nan_from_epoch is not None and self.epoch >= self.nan_from_epoch:
            return loss * float("nan")
        return loss


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    # On a busy 2-core machine two intra-op threads wait on each other and a tiny run
    # takes several times longer; one thread keeps the file fast (results stay
    # deterministic: every run here uses the same thread count).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def probe_loss():
    LOSSES.register(ProbeLoss, name="test_probe")
    yield "test_probe"
    LOSSES.unregister("test_probe")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One BBN run of 3 epochs, shared by the tests that only read its results."""
    cfg = tiny_config(tmp_path_factory.mktemp("runs"), "reference", *REFERENCE)
    trainer = Trainer(cfg, progress=False)
    results = trainer.fit()
    return trainer, results


# ----------------------------------------------------------------------------- optimizer and lr schedule
def test_lr_factor_warmup_is_linear():
    cfg = OptimConfig(warmup_epochs=5, milestones=[120, 160], gamma=0.01)
    assert [lr_factor(e, cfg, 200) for e in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])


def test_lr_factor_multistep():
    cfg = OptimConfig(warmup_epochs=5, milestones=[120, 160], gamma=0.01)
    got = [lr_factor(e, cfg, 200) for e in (119, 120, 159, 160, 199)]
    assert got == pytest.approx([1.0, 0.01, 0.01, 1e-4, 1e-4], rel=1e-12)


def test_lr_factor_cosine_after_warmup():
    cfg = OptimConfig(warmup_epochs=5, schedule="cosine")
    # 100 epochs of cosine after 5 of warm-up: 1 at its start, 1/2 half way.
    got = [lr_factor(e, cfg, 105) for e in (4, 5, 55, 104)]
    assert got == pytest.approx([1.0, 1.0, 0.5, 0.5 * (1 + math.cos(math.pi * 99 / 100))], abs=1e-12)
    plain = OptimConfig(warmup_epochs=0, schedule="cosine")
    got = [lr_factor(e, plain, 4) for e in range(4)]
    assert got == pytest.approx([1.0, 0.8535533905932737, 0.5, 0.14644660940672627], abs=1e-12)


def test_lr_factor_constant():
    cfg = OptimConfig(warmup_epochs=2, schedule="constant")
    assert [lr_factor(e, cfg, 10) for e in (0, 1, 2, 9)] == [0.5, 1.0, 1.0, 1.0]


def test_scheduler_follows_lr_factor_epoch_by_epoch():
    cfg = OptimConfig(lr=0.2, warmup_epochs=3, milestones=[5, 7], gamma=0.1)
    optimizer = build_optimizer(nn.Linear(2, 2), cfg)
    scheduler = build_lr_scheduler(optimizer, cfg, epochs=9)
    seen = []
    for _ in range(9):
        seen.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([0.2 * lr_factor(e, cfg, 9) for e in range(9)], rel=1e-12)
    assert seen == pytest.approx([0.2 / 3, 0.4 / 3, 0.2, 0.2, 0.2, 0.02, 0.02, 0.002, 0.002], rel=1e-12)


def test_build_optimizer_is_sgd_with_momentum_over_trainable_parameters():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].weight.requires_grad_(False)
    optimizer = build_optimizer(model, OptimConfig(lr=0.3, momentum=0.9, weight_decay=1e-4, nesterov=True))
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"], group["nesterov"]) == (0.3, 0.9, 1e-4, True)
    assert {id(p) for p in group["params"]} == {id(p) for p in model.parameters() if p.requires_grad}
    # Nesterov needs momentum: asked for without it, it is dropped instead of failing in torch.
    assert build_optimizer(model, OptimConfig(momentum=0.0, nesterov=True)).param_groups[0]["nesterov"] is False


# ----------------------------------------------------------------------------- a BBN run
def test_bbn_trains_on_two_streams(reference):
    trainer, _ = reference
    assert len(trainer.loaders) == 2
    assert [type(s).__name__ for s in trainer.samplers] == ["InstanceSampler", "ReversedSampler"]
    assert trainer.steps_per_epoch == 2


def test_run_folder_holds_every_file(reference):
    trainer, results = reference
    run_dir = trainer.run_dir
    assert run_dir == Path(trainer.cfg.output_dir) / "reference"
    assert {p.name for p in run_dir.iterdir()} >= {"config.yaml", "metrics.jsonl", "results.json", "best.pt", "last.pt"}
    assert load_config(run_dir / "config.yaml") == trainer.cfg
    assert strict_json(run_dir / "results.json") == json.loads(json.dumps(results))
    assert results["method"] == "bbn" and results["epochs"] == 3 and results["seed"] == 0
    assert results["train_class_counts"] == EMBEDDED_TRAIN_COUNTS


def test_metrics_log_has_one_line_per_epoch_with_parabolic_alpha(reference):
    trainer, _ = reference
    records = read_metrics(trainer.run_dir)
    epochs = 3
    assert [r["epoch"] for r in records] == list(range(epochs))
    assert [r["alpha"] for r in records] == [1 - (t / epochs) ** 2 for t in range(epochs)]
    assert [r["alpha"] for r in records] == [1.0, 1 - 1 / 9, 1 - 4 / 9]
    for record in records:
        assert math.isfinite(record["loss"]) and 0 <= record["train_top1"] <= 100
    assert [("test_top1" in record) for record in records] == [False, False, True]  # train.eval_every=3
    assert {"test_top1", "test_top5", "test_many_shot", "test_medium_shot", "test_few_shot"} <= records[-1].keys()


def test_lr_used_in_each_epoch_follows_the_schedule(reference):
    trainer, _ = reference
    lrs = [r["lr"] for r in read_metrics(trainer.run_dir)]
    assert lrs == pytest.approx([trainer.cfg.optim.lr * lr_factor(e, trainer.cfg.optim, 3) for e in range(3)], rel=1e-12)
    assert lrs == pytest.approx([0.05, 0.1, 0.01], rel=1e-12)


def test_results_hold_consistent_metrics(reference):
    _, results = reference
    test = results["test"]
    correct, total = np.array(test["per_class_correct"]), np.array(test["per_class_total"])
    assert "confusion_matrix" not in test  # O(C) results: the C x C matrix only when asked for
    assert total.sum() == test["num_samples"] == 1000
    assert total.tolist() == [100] * 10  # the embedded test split is balanced
    assert test["top1"] == pytest.approx(100 * correct.sum() / 1000)
    assert test["per_class_accuracy"] == pytest.approx((100 * correct / 100).tolist())
    assert test["top1"] <= test["top5"] <= 100
    many, medium, few = ([0, 1, 2, 3], [4, 5, 6], [7, 8, 9])  # > 100, 20..100, < 20 training images
    for key, group in (("many_shot", many), ("medium_shot", medium), ("few_shot", few)):
        assert test[key] == pytest.approx(np.mean([test["per_class_accuracy"][c] for c in group]))
    assert results["best_checkpoint"]["selected_on"] == "test"


def test_checkpoints_hold_the_whole_training_state(reference):
    trainer, _ = reference
    last = load_checkpoint(trainer.run_dir / "last.pt")
    assert {"model", "optimizer", "lr_scheduler", "epoch", "rng", "recipe", "config"} <= last.keys()
    assert last["epoch"] == 2
    assert last["config"] == trainer.cfg.model_dump(mode="json")
    assert last["recipe"]["method"] == "bbn" and last["recipe"]["num_classes"] == 10
    assert last["recipe"]["samplers"]["rebalancing"]["type"] == "reversed"
    assert {"python", "numpy", "torch"} <= last["rng"].keys()
    assert last["lr_scheduler"]["last_epoch"] == 3 * trainer.steps_per_epoch  # stepped every step
    assert_same_state(last["model"], trainer.model.state_dict())
    # Plain data only: the safe loader of torch itself accepts it.
    raw = torch.load(trainer.run_dir / "last.pt", weights_only=True)
    assert raw["epoch"] == 2
    best = load_checkpoint(trainer.run_dir / "best.pt")
    assert best["best"]["epoch"] == best["epoch"] == trainer.best["epoch"]


def test_checkpoint_rebuilds_the_trained_model(reference):
    trainer, _ = reference
    model, state = load_model(trainer.run_dir / "last.pt")
    if trainer.channels_last:  # the same memory format, so the same kernels: equal to the bit
        model = model.to(memory_format=torch.channels_last)
    images = torch.stack([trainer.data.test[i][0] for i in range(8)])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(model(images), trainer.model(images))
    assert state["classes"] == trainer.data.classes


# ----------------------------------------------------------------------------- determinism and resume
def test_same_seed_same_results_other_seed_differs(reference, tmp_path):
    trainer, results = reference
    again = train(tiny_config(tmp_path, "again", *REFERENCE), progress=False)
    assert again["test"] == results["test"]
    assert without_timing(read_metrics(tmp_path / "again")) == without_timing(read_metrics(trainer.run_dir))
    assert_same_state(load_checkpoint(tmp_path / "again" / "last.pt")["model"], trainer.model.state_dict())

    train(tiny_config(tmp_path, "other", *REFERENCE, "seed=1"), progress=False)
    other = load_checkpoint(tmp_path / "other" / "last.pt")["model"]
    assert not all(torch.equal(other[k], v) for k, v in trainer.model.state_dict().items())
    assert [r["loss"] for r in read_metrics(tmp_path / "other")] != [r["loss"] for r in read_metrics(trainer.run_dir)]


class SimulatedKill(Exception):
    """Stands for the process dying between writing the epoch's log line and its checkpoint."""


def test_resume_continues_exactly_where_the_run_stopped(reference, tmp_path, monkeypatch):
    trainer, results = reference
    cfg = tiny_config(tmp_path, "resumed", *REFERENCE)
    run_dir = tmp_path / "resumed"
    save = trainer_module.save_checkpoint

    def dies_before_second_checkpoint(state, path):
        if Path(path).name == "last.pt" and state["epoch"] == 1:
            raise SimulatedKill
        return save(state, path)

    monkeypatch.setattr(trainer_module, "save_checkpoint", dies_before_second_checkpoint)
    with pytest.raises(SimulatedKill):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(run_dir / "last.pt")["epoch"] == 0
    assert [r["epoch"] for r in read_metrics(run_dir)] == [0, 1]  # epoch 1 logged, not checkpointed
    assert not (run_dir / "results.json").exists()

    resumed = train(resume=run_dir, progress=False)

    # One line per epoch (epoch 1 ran again and replaced its line), equal to the uninterrupted run.
    assert without_timing(read_metrics(run_dir)) == without_timing(read_metrics(trainer.run_dir))
    assert resumed["test"] == results["test"]
    assert resumed["best_checkpoint"] == results["best_checkpoint"]
    last = load_checkpoint(run_dir / "last.pt")
    assert last["epoch"] == 2
    assert_same_state(last["model"], trainer.model.state_dict())
    reference_last = load_checkpoint(trainer.run_dir / "last.pt")
    assert last["lr_scheduler"] == reference_last["lr_scheduler"]
    momentum = [s["momentum_buffer"] for s in last["optimizer"]["state"].values()]
    expected = [s["momentum_buffer"] for s in reference_last["optimizer"]["state"].values()]
    assert all(torch.equal(a, b) for a, b in zip(momentum, expected, strict=True))


def test_resume_needs_a_checkpoint(tmp_path):
    with pytest.raises(ConfigError, match="no last.pt"):
        train(resume=tmp_path, progress=False)


# ----------------------------------------------------------------------------- single stream, validation
def test_single_branch_run_uses_one_stream_and_selects_on_val(tmp_path):
    cfg = tiny_config(tmp_path, "ce", "model={type: ce, backbone: resnet20_cifar}", "train.epochs=2",
                      "data.val_fraction=0.2", "optim.schedule=cosine", "train.eval_every=1")
    trainer = Trainer(cfg, progress=False)
    assert len(trainer.loaders) == 1 and type(trainer.samplers[0]).__name__ == "InstanceSampler"
    # class counts come from the training part only, after the validation split
    labels = np.asarray(trainer.data.train.labels)
    assert trainer.data.class_counts == np.bincount(labels, minlength=10).tolist()
    assert len(trainer.data.train) + len(trainer.data.val) == sum(EMBEDDED_TRAIN_COUNTS)
    assert np.bincount(np.asarray(trainer.data.val.labels), minlength=10).tolist() == [
        round(0.2 * n) for n in EMBEDDED_TRAIN_COUNTS
    ]
    results = trainer.fit()
    records = read_metrics(tmp_path / "ce")
    assert [r["epoch"] for r in records] == [0, 1]
    assert all("alpha" not in r for r in records)
    lr = trainer.cfg.optim.lr
    assert [r["lr"] for r in records] == pytest.approx([lr, lr / 2], rel=1e-12)  # cosine over 2 epochs
    assert all("val_top1" in r for r in records)
    best = results["best_checkpoint"]
    assert best["selected_on"] == "val"
    val = [r["val_top1"] for r in records]
    assert best["epoch"] == val.index(max(val)) and best["top1"] == max(val)
    assert load_checkpoint(tmp_path / "ce" / "best.pt")["best"]["selected_on"] == "val"
    assert results["method"] == "ce"


# ----------------------------------------------------------------------------- data pipeline and streams
def test_loss_and_samplers_get_the_training_class_counts(tmp_path, probe_loss):
    cfg = tiny_config(tmp_path, "counts", f"model.loss={probe_loss}", "train.max_steps_per_epoch=null")
    trainer = Trainer(cfg, progress=False)
    counts = np.bincount(np.asarray(trainer.data.train.labels), minlength=10).tolist()
    assert counts == EMBEDDED_TRAIN_COUNTS
    assert trainer.criterion.class_counts == counts
    assert all(sampler.class_counts.tolist() == counts for sampler in trainer.samplers)
    # An epoch is the conventional stream's length (drop_last: whole batches only).
    assert trainer.steps_per_epoch == len(trainer.loaders[0]) == sum(counts) // 32


def test_progressive_sampler_spans_the_runs_epochs_unless_told_otherwise(tmp_path, probe_loss):
    # Without it the progressive sampler would reach class balance at its default 90 epochs.
    cfg = tiny_config(tmp_path, "prog", f"model.loss={probe_loss}", "model.sampler=progressive", "train.epochs=7")
    trainer = Trainer(cfg, progress=False)
    assert [type(s).__name__ for s in trainer.samplers] == ["InstanceSampler", "ProgressiveSampler"]
    assert trainer.samplers[1].max_epochs == 7
    cfg = tiny_config(tmp_path, "prog_own", f"model.loss={probe_loss}",
                      "model.sampler={type: progressive, max_epochs: 12}", "train.epochs=7")
    assert Trainer(cfg, progress=False).samplers[1].max_epochs == 12


def test_epoch_length_is_the_conventional_stream_even_if_another_is_shorter(tmp_path, probe_loss):
    cfg = tiny_config(tmp_path, "short", f"model.loss={probe_loss}", "model.sampler={type: reversed, num_samples: 32}",
                      "train.max_steps_per_epoch=3", "train.epochs=1")
    trainer = Trainer(cfg, progress=False)
    assert len(trainer.loaders[1]) == 1
    assert trainer.steps_per_epoch == 3
    trainer.fit()
    assert trainer.criterion.calls == 2 * 3  # BBN: one loss per branch per step


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, probe_loss):
    cfg = tiny_config(tmp_path, "nan", f"model.loss={{type: {probe_loss}, nan_from_epoch: 1}}")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, within steps 0-[0-9]+;.*last\.pt") as info:
        train(cfg, progress=False)
    assert isinstance(info.value, LTToolkitError)  # the CLI reports it and exits 2
    last = load_checkpoint(tmp_path / "nan" / "last.pt")
    assert last["epoch"] == 0
    assert all(torch.isfinite(t).all() for t in last["model"].values() if t.is_floating_point())
    assert [r["epoch"] for r in read_metrics(tmp_path / "nan")] == [0]
    assert not (tmp_path / "nan" / "results.json").exists()


def test_num_classes_mismatch_fails_before_training(tmp_path):
    cfg = tiny_config(tmp_path, "mismatch", "model.num_classes=7")
    with pytest.raises(ConfigError, match=r"model\.num_classes=7.*10 classes"):
        train(cfg, progress=False)
    assert not (tmp_path / "mismatch").exists()


def test_unknown_component_fails_before_training(tmp_path):
    cfg = tiny_config(tmp_path, "typo", "model.loss=focall")
    with pytest.raises(LTToolkitError, match="focall"):
        train(cfg, progress=False)
    assert not (tmp_path / "typo").exists()
