"""The training loop: cumulative learning for bilateral methods, plain for single-branch ones.

A model built by :func:`lttoolkit.build` says what it needs through its
recipe: one sampler per input stream (BBN: conventional and re-balancing), a
loss, and, for BBN, an alpha schedule. The loop draws one batch from every
stream per step; an epoch is the first stream's length.

>>> from lttoolkit.engine import train  # doctest: +SKIP
>>> results = train(overrides=["train.epochs=2"])  # BBN on the embedded data  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from lttoolkit._version import __version__
from lttoolkit._build import build
from lttoolkit.engine import distributed
from lttoolkit.engine.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state, save_checkpoint
from lttoolkit.engine.config import RunConfig, config_to_yaml, load_config
from lttoolkit.engine.datasets import DataBundle, build_datasets
from lttoolkit.engine.metrics import MetricAccumulator
from lttoolkit.engine.optim import build_optimizer, build_lr_scheduler
from lttoolkit.engine.progress import TrainingProgress, format_metric, results_table
from lttoolkit.errors import ConfigError, LTToolkitError
from lttoolkit.recipe import Recipe
from lttoolkit.registry import LOSSES, SAMPLERS, load_plugin

__all__ = ["Trainer", "train", "evaluate_model", "NonFiniteLossError", "seed_everything", "resolve_device",
           "quickstart_config_path"]


class NonFiniteLossError(LTToolkitError, FloatingPointError):
    """The loss became NaN or inf; the run stopped and the last good checkpoint was kept."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"train.device: {name!r} is not a device ({exc}); use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={name!r} but CUDA is not available here; use train.device=cpu or auto")
    return device


def _build_model(cfg: RunConfig, data: DataBundle) -> nn.Module:
    options = dict(cfg.model)
    method = options.pop("type")
    given = options.get("num_classes")
    if given is not None and int(given) != data.num_classes:
        raise ConfigError(
            f"model.num_classes={given} but the training data has {data.num_classes} classes; "
            f"remove model.num_classes (it is taken from the data) or fix the data"
        )
    given_chans = options.get("in_chans")
    if given_chans is not None and int(given_chans) != data.in_chans:
        raise ConfigError(
            f"model.in_chans={given_chans} but the data gives {data.in_chans}-channel images; "
            f"set data.in_chans={given_chans} instead (grey images are repeated to 3 channels)"
        )
    options["num_classes"] = data.num_classes
    options["in_chans"] = data.in_chans
    try:
        model = build(method, **options)
    except LTToolkitError:
        raise
    except (TypeError, ValueError) as exc:  # a component's own argument check
        raise ConfigError(f"model ({method}): {exc}; check the model.* options of the config") from exc
    if not hasattr(model, "recipe") or not hasattr(model, "combine_loss"):
        raise ConfigError(
            f"method {method!r} returned a {type(model).__name__} without a recipe/combine_loss; "
            f"it cannot be trained by lttk train (see docs/plugins.md, methods)"
        )
    return model


class Trainer:
    """Train one run described by a :class:`RunConfig`.

    Args:
        cfg: the run's configuration.
        run_dir: where to write; default ``output_dir/name``.
        resume: continue from ``run_dir/last.pt``.
        progress: draw rich progress bars (on the main process).
    """

    def __init__(self, cfg: RunConfig, *, run_dir: str | Path | None = None, resume: bool = False,
                 progress: bool = True) -> None:
        self.cfg = cfg
        self.dist = distributed.current()
        for module in cfg.plugins:
            load_plugin(module)
        self.device = resolve_device(cfg.train.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        seed_everything(cfg.seed)
        self.data = build_datasets(cfg.data, seed=cfg.seed)
        self.model = _build_model(cfg, self.data).to(self.device)
        if self.dist.enabled and cfg.train.sync_batchnorm:
            if self.device.type != "cuda":
                raise ConfigError("train.sync_batchnorm needs CUDA devices (PyTorch's SyncBatchNorm does not run on "
                                  "the CPU); set train.sync_batchnorm=false for gloo/CPU runs")
            from lttoolkit.methods.bilateral import convert_sync_batchnorm

            self.model = convert_sync_batchnorm(self.model)
        # Every rank builds the same initial model (same seed; DDP also broadcasts rank 0's
        # weights); augmentation then draws different numbers on each rank.
        if self.dist.enabled:
            seed_everything(cfg.seed + 7919 * self.dist.rank)
        self.recipe: Recipe = self.model.recipe
        self.criterion = LOSSES.build(self.recipe.loss.type, class_counts=self.data.class_counts,
                                      **self.recipe.loss.options).to(self.device)
        self.samplers = [
            SAMPLERS.build(spec.type, labels=self.data.train.labels, seed=cfg.seed + 1000 * i,
                           num_replicas=self.dist.world_size, rank=self.dist.rank, **spec.options)
            for i, spec in enumerate(self.recipe.samplers.values())
        ]
        if hasattr(self.model, "on_train_start"):  # methods that need the class counts (e.g. Remix)
            self.model.on_train_start(class_counts=list(self.data.class_counts))
        self.loaders = [self._loader(sampler) for sampler in self.samplers]
        # An epoch is the conventional (first) stream's length; shorter streams start over.
        self.steps_per_epoch = len(self.loaders[0])
        if cfg.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, cfg.train.max_steps_per_epoch)
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"an epoch has no step: {len(self.data.train)} training images per process with "
                f"data.batch_size={cfg.data.batch_size}; lower the batch size"
            )
        self.forward_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.forward_model = DistributedDataParallel(self.model, device_ids=ids)
        if cfg.init_from:
            self._load_initial_weights(cfg.init_from)
        # tau-normalisation (and any method like it) only calibrates: no optimizer.
        self.trains = bool(getattr(self.model, "requires_training", True))
        self.optimizer = build_optimizer(self.model, cfg.optim) if self.trains else None
        self.lr_scheduler = (build_lr_scheduler(self.optimizer, cfg.optim, cfg.train.epochs, self.steps_per_epoch)
                             if self.optimizer else None)
        use_amp = cfg.train.amp if isinstance(cfg.train.amp, bool) else self.device.type == "cuda"
        self.amp = bool(use_amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        # Rank 0 names the run (the default name holds a timestamp) and every rank uses it.
        name = distributed.broadcast_object(cfg.name or self._default_name())
        self.run_dir = Path(run_dir) if run_dir else Path(cfg.output_dir) / name
        self.start_epoch = 0
        self.best: dict[str, Any] = {"top1": None, "epoch": None, "selected_on": self._selection_split()}
        self.show_progress = progress and self.dist.is_main
        if self.dist.is_main:
            _check_output_dir(self.run_dir)
        # A schedule (a plugin's, say) must hold for every epoch of this run, not fail at epoch 150.
        for epoch in range(cfg.train.epochs):
            self.model.training_kwargs(epoch, cfg.train.epochs)
        if resume:
            self._resume()

    # ------------------------------------------------------------------ setup helpers
    def _default_name(self) -> str:
        return f"{self.cfg.model['type']}-{self.cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"

    def _selection_split(self) -> str:
        return "val" if self.data.val is not None else "test"

    def _loader(self, sampler: Any, dataset: Any = None, *, train: bool = True) -> DataLoader:
        workers = self.cfg.data.num_workers
        return DataLoader(
            dataset if dataset is not None else self.data.train,
            batch_size=self.cfg.data.batch_size if train else self.cfg.data.test_batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.device.type == "cuda",
            drop_last=train and len(sampler) >= self.cfg.data.batch_size,
            # Workers restart each epoch and take their seeds from the global RNG, which
            # checkpoints save: a resumed run augments exactly as the uninterrupted one.
            persistent_workers=False,
        )

    # ------------------------------------------------------------------ checkpoints
    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": "lttoolkit-checkpoint-1",
            "lttoolkit_version": __version__,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler else {},
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "recipe": self.recipe.model_dump(mode="json"),
            "config": self.cfg.model_dump(mode="json"),
            "classes": list(self.data.classes),
            "class_counts": list(self.data.class_counts),
            "input_size": list(self.data.input_size),
            "best": dict(self.best),
        }

    def _resume(self) -> None:
        path = self.run_dir / "last.pt"
        state = load_checkpoint(path)
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        restore_rng_state(state["rng"])
        self.best = dict(state.get("best") or self.best)
        self.start_epoch = int(state["epoch"]) + 1

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Metrics on the test (or validation) split; under torchrun each rank evaluates a shard
        and the counts are summed, so the result equals a single-process evaluation."""
        dataset = self.data.test if split == "test" else self.data.val
        distributed.broadcast_buffers(self.model)
        return evaluate_model(self.model, dataset, self.data.class_counts, device=self.device,
                              batch_size=self.cfg.data.test_batch_size, num_workers=self.cfg.data.num_workers,
                              distributed_info=self.dist)

    # ------------------------------------------------------------------ the loop
    def _train_epoch(self, epoch: int, progress: TrainingProgress) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        epochs = cfg.train.epochs
        for sampler in self.samplers:
            sampler.set_epoch(epoch)
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(epoch, epochs)
        kwargs = model.training_kwargs(epoch, epochs)
        model.train()
        progress.start_epoch(epoch, self.steps_per_epoch)
        total_loss, seen, correct, lr = 0.0, 0, 0, self.optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        streams = [iter(self.loaders[0]), *(_endless(loader) for loader in self.loaders[1:])]
        # islice, not a break: a batch past the last step would be loaded (and augmented) for nothing.
        for step, batches in enumerate(itertools.islice(zip(*streams), self.steps_per_epoch)):
            images = [x.to(self.device, non_blocking=True) for x, _ in batches]
            targets = [y.to(self.device, non_blocking=True) for _, y in batches]
            with torch.autocast(self.device.type, enabled=self.amp):
                logits = self.forward_model(*images, **kwargs)
                loss = model.combine_loss(self.criterion, logits, targets, **kwargs)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(
                    f"the loss became {loss.item()} at epoch {epoch}, step {step}; the run stopped. "
                    f"{self._checkpoint_status()}. Lower optim.lr or check the data."
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
            self.lr_scheduler.step()
            batch = targets[0].shape[0]
            total_loss += loss.item() * batch
            seen += batch
            correct += self._correct(logits, targets, kwargs)
            stats = {"loss": loss.item(), "lr": lr, **kwargs}
            progress.step(sum(x.shape[0] for x in images), stats)
        elapsed = time.perf_counter() - started
        return {
            "loss": total_loss / max(seen, 1),
            "train_top1": 100.0 * correct / max(seen, 1),
            "lr": lr,
            "images_per_second": seen * len(self.loaders) / max(elapsed, 1e-9),
            "epoch_seconds": elapsed,
            **{k: float(v) for k, v in kwargs.items()},
        }

    @staticmethod
    def _correct(logits: torch.Tensor, targets: Sequence[torch.Tensor], kwargs: Mapping[str, Any]) -> float:
        """Training hits; for BBN's mixed logits alpha·hits(y_c) + (1 - alpha)·hits(y_r), as the official code."""
        predicted = logits.argmax(1)
        if "alpha" in kwargs and len(targets) == 2:
            alpha = float(kwargs["alpha"])
            return alpha * float((predicted == targets[0]).sum()) + (1 - alpha) * float((predicted == targets[1]).sum())
        return float((predicted == targets[0]).sum())

    def _trim_metrics_log(self) -> None:
        # Keep one line per epoch: drop the lines of epochs that will run again (a resume from
        # a checkpoint older than the log, or a new run in an old folder).
        path = self.run_dir / "metrics.jsonl"
        if not path.is_file():
            return
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
            except ValueError:  # a line cut short by a crash
                continue
            if isinstance(record, dict) and isinstance(record.get("epoch"), int) and record["epoch"] < self.start_epoch:
                kept.append(line + "\n")
        path.write_text("".join(kept), encoding="utf-8")

    def _load_initial_weights(self, path: str) -> None:
        """Start from another run's weights: a decoupling stage 2 or plain fine-tuning."""
        state = load_checkpoint(path)
        if "model" not in state:
            raise ConfigError(f"init_from={path!r} is not an lttoolkit checkpoint (no 'model' weights)")
        stage1_method = (state.get("recipe") or {}).get("method")
        if hasattr(self.model, "load_stage1"):
            self.model.load_stage1(state["model"])
        else:
            try:
                self.model.load_state_dict(state["model"])
            except RuntimeError as exc:
                raise ConfigError(
                    f"cannot start {self.recipe.method} from {path} (a {stage1_method} checkpoint): the weights do "
                    f"not fit: {str(exc).splitlines()[0]}"
                ) from None

    def _calibrate(self) -> dict[str, Any]:
        """For methods without training (tau-normalisation): choose tau on the validation split."""
        if self.data.val is None:
            raise ConfigError(
                f"{self.recipe.method} chooses its parameter on a validation split held out from the training "
                f"data, never on the test set: set data.val_fraction (e.g. 0.1), the same as in stage 1"
            )
        return self.model.choose_tau(lambda: self.evaluate("val"))

    def _checkpoint_status(self) -> str:
        last = self.run_dir / "last.pt"
        if last.is_file():
            return f"{last} holds epoch {load_checkpoint(last).get('epoch')} (0-based), the last good one"
        return "no epoch finished yet, so there is no checkpoint"

    def _interrupt_hint(self) -> str:
        return (f"[yellow]interrupted[/]: {self._checkpoint_status()}. "
                f"Continue with: lttk train --resume {self.run_dir}")

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs`` and return the results (also written to ``results.json``)."""
        cfg = self.cfg
        epochs = cfg.train.epochs
        main = self.dist.is_main
        if main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(f"cannot create the run folder {self.run_dir}: {exc}; choose another output_dir") from None
            (self.run_dir / "config.yaml").write_text(config_to_yaml(cfg), encoding="utf-8")
            self._trim_metrics_log()
        last_test: dict[str, Any] | None = None
        calibration: dict[str, Any] | None = None
        if not self.trains:
            calibration = self._calibrate()
            self.start_epoch = epochs  # nothing to train
            if main:
                save_checkpoint(self._state(epochs - 1), self.run_dir / "last.pt")
                save_checkpoint(self._state(epochs - 1), self.run_dir / "best.pt")
        with TrainingProgress(epochs, self.start_epoch, enabled=self.show_progress) as progress:
            progress.log(
                f"[bold]lttk train[/]: {self.recipe.method} on {cfg.data.dataset} "
                f"({len(self.data.train)} train / {len(self.data.test)} test images, {self.data.num_classes} classes), "
                f"{self.steps_per_epoch} steps/epoch, device {self.device}, run dir {self.run_dir}"
            )
            if self.data.skipped:
                shown = self.data.metadata.get("skipped_images", [])[:5]
                progress.log(f"[yellow]skipped {self.data.skipped} unreadable image(s)[/] (data.bad_image_policy=skip): "
                             + "; ".join(shown))
            try:
                for epoch in range(self.start_epoch, epochs):
                    record: dict[str, Any] = {"epoch": epoch, **self._train_epoch(epoch, progress)}
                    is_last = epoch == epochs - 1
                    if is_last or (epoch + 1) % cfg.train.eval_every == 0:
                        last_test = self.evaluate("test")
                        record.update({f"test_{k}": last_test[k] for k in
                                       ("top1", "top5", "many_shot", "medium_shot", "few_shot") if k in last_test})
                        selected = self.evaluate("val") if self.data.val is not None else last_test
                        if self.data.val is not None:
                            record["val_top1"] = selected["top1"]
                        if self.best["top1"] is None or selected["top1"] > self.best["top1"]:
                            self.best.update(top1=selected["top1"], epoch=epoch)
                            if main:
                                save_checkpoint(self._state(epoch), self.run_dir / "best.pt")
                    if main:
                        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
                            fh.write(json.dumps(record) + "\n")
                        if is_last or (epoch + 1) % cfg.train.checkpoint_every == 0:
                            save_checkpoint(self._state(epoch), self.run_dir / "last.pt")
                    progress.end_epoch(
                        f"loss {record['loss']:.4f} test top-1 {format_metric(record.get('test_top1'))}"
                    )
            except KeyboardInterrupt:
                if main:
                    hint = self._interrupt_hint()
                    if self.show_progress:
                        progress.log(hint)
                    else:
                        print(hint.replace("[yellow]", "").replace("[/]", ""), file=sys.stderr)
                raise
        if last_test is None:  # resumed after the last epoch: evaluate what we have
            last_test = self.evaluate("test")
        results = {
            "method": self.recipe.method,
            "dataset": cfg.data.dataset,
            "epochs": epochs,
            "seed": cfg.seed,
            "test": last_test,
            "reported": "last epoch (the model is never selected on the test set for these numbers)",
            "best_checkpoint": self.best,
            "train_class_counts": list(self.data.class_counts),
            "skipped_images": self.data.skipped,
            "skipped_files": self.data.metadata.get("skipped_images", []),
            "run_dir": str(self.run_dir),
        }
        if calibration is not None:
            results["calibration"] = calibration
        if cfg.init_from:
            results["init_from"] = cfg.init_from
        if main:
            (self.run_dir / "results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
            if self.show_progress:
                progress.console.print(results_table(results, title=f"{self.recipe.method}: test metrics (last epoch)"))
        return results


def _check_output_dir(run_dir: Path) -> None:
    """Fail before any work if the run folder cannot be created (nothing is created here)."""
    probe = run_dir
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(
            f"cannot create the run folder {run_dir}: {probe} is a file, not a folder; choose another output_dir/name"
        )
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot create the run folder {run_dir}: {probe} is not writable; choose another output_dir")


def _endless(loader: DataLoader) -> Iterator[Any]:
    """Batches of ``loader``, starting over when it runs out (a re-balancing stream
    may be shorter than the conventional one that sets the epoch's length)."""
    iterator = iter(loader)  # now, so streams draw their loader seeds in stream order

    def batches() -> Iterator[Any]:
        current = iterator
        while True:
            empty = True
            for batch in current:
                empty = False
                yield batch
            if empty:
                return
            current = iter(loader)

    return batches()


@torch.no_grad()
def evaluate_model(model: nn.Module, dataset: Any, train_class_counts: Sequence[int], *,
                   device: torch.device | str = "cpu", batch_size: int = 256, num_workers: int = 0,
                   distributed_info: distributed.DistributedInfo | None = None) -> dict[str, Any]:
    """Top-1/5, many/medium/few-shot, per-class accuracy and confusion matrix of ``model`` on ``dataset``.

    With ``distributed_info`` of several processes, each evaluates the disjoint shard
    ``rank::world_size`` and the confusion counts are summed over processes.
    """
    model.eval()
    info = distributed_info or distributed.DistributedInfo()
    if info.enabled:
        dataset = torch.utils.data.Subset(dataset, distributed.shard_indices(len(dataset), info))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    meter = MetricAccumulator(len(train_class_counts))
    for images, targets in loader:
        meter.update(model(images.to(device)), targets.to(device))
    if info.enabled:
        state = meter.state_tensors(device=device)
        meter.load_state({name: distributed.all_reduce_sum(tensor) for name, tensor in state.items()})
    return meter.compute(train_class_counts)


def train(config: str | Path | RunConfig | None = None, overrides: Sequence[str] = (), *,
          resume: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Train from a YAML file / :class:`RunConfig` / the defaults, or resume a run folder.

    Args:
        config: a YAML path, a RunConfig, or None for the quick start (BBN on the
            embedded Fashion-MNIST-LT, ``lttoolkit/configs/quickstart.yaml``).
        overrides: dotted ``key=value`` changes (``train.epochs=10``).
        resume: a run folder holding ``config.yaml`` and ``last.pt``.

    Returns:
        The results dict written to ``results.json``.
    """
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "last.pt").is_file():
            raise ConfigError(f"cannot resume {str(run_dir)!r}: it holds no last.pt (pass the run folder of an earlier run)")
        cfg = load_config(run_dir / "config.yaml", overrides)
        with distributed.distributed_session(resolve_device(cfg.train.device).type):
            return Trainer(cfg, run_dir=run_dir, resume=True, progress=progress).fit()
    if config is None:
        config = quickstart_config_path()
    cfg = config if isinstance(config, RunConfig) else load_config(config, overrides)
    with distributed.distributed_session(resolve_device(cfg.train.device).type):
        return Trainer(cfg, progress=progress).fit()


def quickstart_config_path() -> Path:
    """The packaged config ``lttk train`` uses without a CONFIG (BBN, embedded data, ~3 CPU minutes)."""
    from importlib.resources import files

    return Path(str(files("lttoolkit") / "configs" / "quickstart.yaml"))
