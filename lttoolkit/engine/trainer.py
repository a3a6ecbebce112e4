"""The training loop: cumulative learning for bilateral methods, plain for single-branch ones.

A model built by :func:`lttoolkit.build` says what it needs through its
recipe: one sampler per input stream (BBN: conventional and re-balancing), a
loss, and, for BBN, an alpha schedule. The loop draws one batch from every
stream per step; an epoch is the first stream's length.

>>> from lttoolkit.engine import train  # doctest: +SKIP
>>> results = train(overrides=["train.epochs=2"])  # BBN on the embedded data  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import math
import os
import random
import secrets
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import nn
from rich.console import Console
from rich.markup import escape
from torch.utils.data import DataLoader

from lttoolkit._version import __version__
from lttoolkit._build import build
from lttoolkit.data.preprocessing import eval_preprocessing
from lttoolkit.engine import distributed
from lttoolkit.engine.checkpoint import (
    capture_rng_state,
    load_checkpoint,
    provenance,
    restore_rng_state,
    save_checkpoint,
)
from lttoolkit.engine.config import RunConfig, config_to_yaml, load_config
from lttoolkit.engine.datasets import DataBundle, build_datasets
from lttoolkit.engine.loggers import build_loggers
from lttoolkit.engine.metrics import MetricAccumulator
from lttoolkit.engine.numerics import CUBLAS_WORKSPACE, amp_warning, numerics, resolve_amp_dtype, use_channels_last
from lttoolkit.engine.optim import build_optimizer, build_lr_scheduler
from lttoolkit.engine.progress import TrainingProgress, format_metric, results_table
from lttoolkit.engine.weights import InitReport, load_matching_weights
from lttoolkit.errors import ConfigError, LTToolkitError, ResumeMismatchError, RunExistsError, RunWriteError
from lttoolkit.methods.protocol import EpochInfo, SecondStageMethod, missing_members
from lttoolkit.recipe import Recipe
from lttoolkit._introspect import accepted_options
from lttoolkit.registry import LOSSES, SAMPLERS, load_plugin, require_distributions

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
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s) "
                          f"(cuda:0 ... cuda:{torch.cuda.device_count() - 1}); pick one of them or auto")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) is not None
                                     and torch.backends.mps.is_available()):
        raise ConfigError(f"train.device={name!r} but Apple's MPS is not available here (it needs an Apple-silicon "
                          f"Mac and a PyTorch build with MPS); use train.device=cpu or auto")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"train.device={name!r} is not supported by lttk train; use auto, cpu, cuda, cuda:N or mps")
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
    missing = missing_members(model)
    if missing:
        raise ConfigError(
            f"method {method!r} returned a {type(model).__name__} that lacks {', '.join(missing)} of the method "
            f"protocol (lttoolkit.methods.protocol.TrainableMethod: recipe, on_train_start, epoch_stats, "
            f"training_step), so lttk train cannot train it; add them (see docs/plugins.md, method)"
        )
    _check_model_takes_the_data(model, cfg, data)
    return model


def _input_size_hint(model: nn.Module) -> str:
    """``; set data.image_size=224`` when a submodule (timm's ``pretrained_cfg``, a patch embedding)
    says which input size it was built for."""
    for module in model.modules():
        size = None
        embed_size = getattr(getattr(module, "patch_embed", None), "img_size", None)
        if isinstance(embed_size, (tuple, list)) and embed_size:
            size = embed_size[-1]
        elif isinstance(getattr(module, "pretrained_cfg", None), dict):
            size = (module.pretrained_cfg.get("input_size") or [None])[-1]
        if isinstance(size, int):
            return f"; this backbone is built for {size} px inputs: set data.image_size={size}"
    return "; check data.image_size and the backbone"


def _check_model_takes_the_data(model: nn.Module, cfg: RunConfig, data: DataBundle) -> None:
    """One forward of two blank images at the data's size before any training (a ViT built for
    224 px fails on 28 px images), and, for batches of one image, a training-mode forward (batch
    norm after global pooling cannot normalise a single value). Weights, buffers and RNG are left as they were."""
    backbone = cfg.model.get("backbone")
    size = "x".join(str(n) for n in data.input_size)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        was_training = model.training
        try:
            model.eval()
            model(torch.zeros(2, *data.input_size))
        except Exception as exc:
            raise ConfigError(
                f"model ({cfg.model['type']}, backbone {backbone}) cannot take the data's {size} images: "
                f"{type(exc).__name__}: {_first_line(exc)}{_input_size_hint(model)}"
            ) from None
        finally:
            model.train(was_training)
        batch_norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if cfg.data.batch_size != 1 or not batch_norms:
            return
        buffers = {name: tensor.clone() for name, tensor in model.named_buffers()}
        try:
            model.train()
            streams = max(1, len(getattr(model.recipe, "samplers", {}) or {}))
            model.on_train_start(list(data.class_counts))
            model.training_step([torch.zeros(1, *data.input_size)] * streams, [torch.zeros(1, dtype=torch.long)] * streams,
                                lambda logits, labels: logits.sum(), EpochInfo(0, cfg.train.epochs), model)
        except Exception as exc:
            raise ConfigError(
                f"data.batch_size=1 does not train model ({cfg.model['type']}, backbone {backbone}): "
                f"{_first_line(exc)} (batch norm cannot normalise one value per channel); use data.batch_size=2 "
                f"or more"
            ) from None
        finally:
            for name, tensor in model.named_buffers():
                tensor.copy_(buffers[name])
            model.train(was_training)


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _with_run_length(factory: Any, options: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """``options`` plus ``max_epochs=epochs`` for a sampler that takes it (``progressive``) and was not given it."""
    names, _ = accepted_options(factory)
    if "max_epochs" in names and "max_epochs" not in options:
        return {**options, "max_epochs": epochs}
    return dict(options)


class Trainer:
    """Train one run described by a :class:`RunConfig`.

    Args:
        cfg: the run's configuration.
        run_dir: where to write; default ``output_dir/name``.
        resume: continue from ``run_dir/last.pt``.
        progress: draw rich progress bars (on the main process).
    """

    def __init__(self, cfg: RunConfig, *, run_dir: str | Path | None = None, resume: bool = False,
                 progress: bool = True, overwrite: bool = False) -> None:
        self.cfg = cfg
        # Before any work: a plugin the run needs but this machine lacks is named with its pip install.
        require_distributions(cfg.plugins_required, what="this run (plugins_required)")
        self.dist = distributed.current()
        self.overwrite = overwrite
        self.resumed = resume
        self.replaced: Path | None = None  # where --overwrite moved an earlier run
        # Named first, before any slow set-up: the default name is unique (time plus a random part).
        self.default_name = cfg.name is None and run_dir is None
        name = distributed.broadcast_object(cfg.name or self._default_name())
        self.run_dir = Path(run_dir) if run_dir else Path(cfg.output_dir) / name
        if self.dist.is_main:
            _check_output_dir(self.run_dir)
            if not resume and not overwrite:
                _refuse_existing_run(self.run_dir)
        resume_state = load_checkpoint(self.run_dir / "last.pt") if resume else None
        if resume_state is not None:
            check_resume(cfg, resume_state, self.run_dir)
        load_config_plugins(cfg.plugins)
        self.device = resolve_device(cfg.train.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        if cfg.train.deterministic and self.device.type == "cuda":  # before CUDA makes its cuBLAS handles
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", CUBLAS_WORKSPACE)
        seed_everything(cfg.seed)
        self.data = build_datasets(cfg.data, seed=cfg.seed)
        self.model = _build_model(cfg, self.data).to(self.device)
        self.channels_last = use_channels_last(cfg.train.channels_last, self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        if isinstance(self.model, SecondStageMethod) and not cfg.init_from and not cfg.model.get("pretrained"):
            raise ConfigError(
                f"model.type={cfg.model['type']} is a decoupling stage 2: it trains or calibrates the classifier on "
                f"frozen features, which must come from a stage-1 run; pass --from RUN/last.pt (init_from=...), "
                f"e.g. lttk train model.type=ce name=stage1, then lttk train model.type={cfg.model['type']} "
                f"--from runs/stage1/last.pt"
            )
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
                           num_replicas=self.dist.world_size, rank=self.dist.rank,
                           **_with_run_length(SAMPLERS.get(spec.type), spec.options, cfg.train.epochs))
            for i, spec in enumerate(self.recipe.samplers.values())
        ]
        self.model.on_train_start(list(self.data.class_counts))  # methods that need the counts (e.g. Remix)
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
        self.init_report: InitReport | None = None
        if cfg.init_from:
            self._load_initial_weights(cfg.init_from)
        if cfg.train.compile:
            # The forward the method calls is compiled; the state dict stays the plain model's.
            self.forward_model = torch.compile(self.forward_model, backend=cfg.train.compile_backend)
        # tau-normalisation (and any method like it) only calibrates: no optimizer.
        self.trains = not isinstance(self.model, SecondStageMethod) or bool(self.model.requires_training)
        self.optimizer = build_optimizer(self.model, cfg.optim) if self.trains else None
        # The schedule counts optimizer steps: with accumulation, one per accumulate_steps batches.
        self.lr_scheduler = (build_lr_scheduler(self.optimizer, cfg.optim, cfg.train.epochs,
                                                self.optimizer_steps_per_epoch) if self.optimizer else None)
        self.amp_dtype = resolve_amp_dtype(cfg.train, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype == torch.float16)
        # EMA of the weights and buffers (torch's AveragedModel); evaluated and checkpointed when on.
        self.ema: torch.optim.swa_utils.AveragedModel | None = None
        if cfg.train.ema_decay is not None and self.trains:
            from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

            self.ema = AveragedModel(self.model, multi_avg_fn=get_ema_multi_avg_fn(cfg.train.ema_decay),
                                     use_buffers=True)
        self.start_epoch = 0
        self.best: dict[str, Any] = {"top1": None, "epoch": None, "selected_on": self._selection_split()}
        self.show_progress = progress and self.dist.is_main
        # A schedule (a plugin's, say) must hold for the epochs of this run, not fail at epoch 150:
        # checked at a bounded number of epochs (all of them up to that many) so set-up stays fast.
        for epoch in checked_epochs(cfg.train.epochs):
            self.model.epoch_stats(EpochInfo(epoch, cfg.train.epochs))
        if resume_state is not None:
            self._resume(resume_state)

    # ------------------------------------------------------------------ setup helpers
    @property
    def optimizer_steps_per_epoch(self) -> int:
        return math.ceil(self.steps_per_epoch / self.cfg.train.accumulate_steps)

    @property
    def eval_model(self) -> nn.Module:
        """What is evaluated, selected and exported: the EMA weights when on, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def _default_name(self) -> str:
        # The random part keeps runs started in the same second apart (the folder is also created
        # exclusively, so a clash is refused, never shared).
        return (f"{self.cfg.model['type']}-{self.cfg.data.dataset}-{time.strftime('%Y%m%d-%H%M%S')}-"
                f"{secrets.token_hex(3)}")

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
    @property
    def _provenance(self) -> dict[str, Any]:
        # Computed once (it asks git): versions, CUDA, world size and commit of this run.
        if not hasattr(self, "_provenance_cache"):
            self._provenance_cache = provenance(world_size=self.dist.world_size)
        return self._provenance_cache

    def _state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": "lttoolkit-checkpoint-1",
            "lttoolkit_version": __version__,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict() if self.optimizer else {},
            "lr_scheduler": self.lr_scheduler.state_dict() if self.lr_scheduler else {},
            "scaler": self.scaler.state_dict(),
            # With EMA, "model" stays the raw weights (what training continues from) and "ema" the
            # averaged ones, which evaluation, prediction and export use (load_model).
            **({"ema": self.ema.module.state_dict(), "ema_updates": int(self.ema.n_averaged)}
               if self.ema is not None else {}),
            "rng": capture_rng_state(),
            "recipe": self.recipe.model_dump(mode="json"),
            "config": self.cfg.model_dump(mode="json"),
            "classes": list(self.data.classes),
            "class_counts": list(self.data.class_counts),
            "input_size": list(self.data.input_size),
            "provenance": self._provenance,
            # How the test split was prepared, for inference and export (timm pretrained_cfg terms).
            "preprocessing": eval_preprocessing(self.data.family, in_chans=self.data.in_chans,
                                                image_size=self.data.input_size[1]),
            "best": dict(self.best),
        }

    def _resume(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        if self.optimizer is not None:
            self.optimizer.load_state_dict(state["optimizer"])
            self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        if self.ema is not None and "ema" in state:
            self.ema.module.load_state_dict(state["ema"])
            self.ema.n_averaged.fill_(int(state.get("ema_updates", 1)))
        restore_rng_state(state["rng"])
        self.best = dict(state.get("best") or self.best)
        self.start_epoch = int(state["epoch"]) + 1

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, split: str = "test") -> dict[str, Any]:
        """Metrics on the test (or validation) split; under torchrun each rank evaluates a shard
        and the counts are summed, so the result equals a single-process evaluation."""
        dataset = self.data.test if split == "test" else self.data.val
        model = self.eval_model
        distributed.broadcast_buffers(model)
        return evaluate_model(model, dataset, self.data.class_counts, device=self.device,
                              batch_size=self.cfg.data.test_batch_size, num_workers=self.cfg.data.num_workers,
                              distributed_info=self.dist, amp_dtype=self.amp_dtype,
                              channels_last=self.channels_last)

    # ------------------------------------------------------------------ the loop
    def _train_epoch(self, epoch: int, progress: TrainingProgress) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        epochs, accumulate = cfg.train.epochs, cfg.train.accumulate_steps
        for sampler in self.samplers:
            sampler.set_epoch(epoch)
        if hasattr(self.criterion, "set_epoch"):
            self.criterion.set_epoch(epoch, epochs)
        info = EpochInfo(epoch, epochs)
        epoch_stats = model.epoch_stats(info)
        model.train()
        progress.start_epoch(epoch, self.steps_per_epoch)
        # Sums stay on the device and are read every log_every steps: no host sync per step.
        meter = _StepMeter(self.device, cfg.train.log_every)
        pending_images = 0  # images of the steps the progress bar has not been told of
        lr = self.optimizer.param_groups[0]["lr"]
        started = time.perf_counter()
        streams = [iter(self.loaders[0]), *(_endless(loader) for loader in self.loaders[1:])]
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        self.optimizer.zero_grad(set_to_none=True)
        # islice, not a break: a batch past the last step would be loaded (and augmented) for nothing.
        for step, batches in enumerate(itertools.islice(zip(*streams), self.steps_per_epoch)):
            images = [_to_device(x, self.device, memory_format) for x, _ in batches]
            targets = [y.to(self.device, non_blocking=True) for _, y in batches]
            # Accumulation: the group's losses are averaged (a last, shorter group by its own size),
            # and DDP all-reduces only at the group's last batch.
            group_start = step - step % accumulate
            group = min(accumulate, self.steps_per_epoch - group_start)
            steps_optimizer = step == group_start + group - 1
            with _no_sync(self.forward_model, not steps_optimizer), \
                    torch.autocast(self.device.type, dtype=self.amp_dtype or torch.float32,
                                   enabled=self.amp_dtype is not None):
                # The method protocol: one call, one forward (through DDP when distributed).
                out = model.training_step(images, targets, self.criterion, info, self.forward_model)
            loss = out.loss
            self.scaler.scale(loss / group if group > 1 else loss).backward()
            if steps_optimizer:
                if cfg.optim.clip_grad_norm is not None:
                    self.scaler.unscale_(self.optimizer)
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.clip_grad_norm)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.optimizer.zero_grad(set_to_none=True)
                lr = self.optimizer.param_groups[0]["lr"]  # the rate this step used
                self.lr_scheduler.step()
                if self.ema is not None:
                    self.ema.update_parameters(model)
            meter.add(loss.detach(), out.hits, out.batch_size)
            batch_images = sum(x.shape[0] for x in images)
            if meter.due(step) or step == self.steps_per_epoch - 1:
                mean_loss = meter.read(step)
                if not math.isfinite(mean_loss):
                    raise NonFiniteLossError(
                        f"the loss became {mean_loss} at epoch {epoch}, within steps {meter.interval[0]}-{step}; the run "
                        f"stopped. {self._checkpoint_status()}. Lower optim.lr (or set optim.clip_grad_norm) or "
                        f"check the data."
                    )
                progress.step(pending_images + batch_images, {"loss": mean_loss, "lr": lr, **out.stats},
                              advance=step + 1 - meter.interval[0])
                pending_images = 0
            else:
                pending_images += batch_images
        elapsed = time.perf_counter() - started
        seen = meter.seen
        return {
            "loss": meter.total_loss() / max(seen, 1),
            "train_top1": 100.0 * meter.total_hits() / max(seen, 1),
            "lr": lr,
            "images_per_second": seen * len(self.loaders) / max(elapsed, 1e-9),
            "epoch_seconds": elapsed,
            **{k: float(v) for k, v in epoch_stats.items()},
        }

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
        """Start from another run's weights: a decoupling stage 2, or every tensor that fits
        (:func:`~lttoolkit.engine.weights.load_matching_weights`), reported."""
        state = load_checkpoint(path)
        if "model" not in state:
            raise ConfigError(f"init_from={path!r} is not an lttoolkit checkpoint (no 'model' weights)")
        stage1_method = (state.get("recipe") or {}).get("method")
        if isinstance(self.model, SecondStageMethod):
            self.model.load_stage1(state["model"])
            return
        report = load_matching_weights(self.model, state["model"], exclude=self.cfg.init_exclude)
        if report.num_loaded == 0:
            raise ConfigError(
                f"cannot start {self.recipe.method} from {path} (a {stage1_method} checkpoint): none of its "
                f"{len(state['model'])} tensors fits this model by name and shape ({report.summary()}); start from "
                f"a checkpoint of the same backbone"
            )
        self.init_report = report

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

    def _resume_hint(self) -> str:
        if (self.run_dir / "last.pt").is_file():
            return (f"{self._checkpoint_status()}; free some space, then continue with: "
                    f"lttk train --resume {self.run_dir}")
        return (f"{self._checkpoint_status()}; free some space, then start again with --overwrite (which moves "
                f"{self.run_dir} aside)")

    def _claim_run_dir(self) -> None:
        """Create the run folder of a new run exclusively: two runs never share one."""
        for attempt in range(5):
            try:
                self.replaced = claim_run_dir(self.run_dir, overwrite=self.overwrite)
                return
            except RunExistsError:
                # Only a default name may be changed behind the user's back (and never under torchrun,
                # where every rank was told the name).
                if not self.default_name or self.dist.enabled or attempt == 4:
                    raise
                self.run_dir = self.run_dir.with_name(self._default_name())

    def _interrupt_hint(self) -> str:
        return escape_markup_hint(f"interrupted: {self._checkpoint_status()}. "
                                  f"Continue with: lttk train --resume {self.run_dir}")

    def numerics_summary(self) -> str:
        """``bfloat16 autocast, channels_last, compiled`` and the like, for the log."""
        train = self.cfg.train
        parts = [f"{str(self.amp_dtype).removeprefix('torch.')} autocast" if self.amp_dtype else "float32"]
        if self.scaler.is_enabled():
            parts.append("GradScaler")
        parts.append("channels_last" if self.channels_last else "NCHW")
        if train.compile:
            parts.append(f"torch.compile ({train.compile_backend})")
        if train.accumulate_steps > 1:
            parts.append(f"{train.accumulate_steps} batches per optimizer step "
                         f"(effective batch {train.accumulate_steps * self.cfg.data.batch_size})")
        if self.ema is not None:
            parts.append(f"EMA {train.ema_decay}")
        if train.deterministic:
            parts.append("deterministic")
        return ", ".join(parts)

    def fit(self) -> dict[str, Any]:
        """Train to ``train.epochs`` and return the results (also written to ``results.json``)."""
        # Determinism flags are global in PyTorch: set for the run, put back after it.
        with numerics(self.cfg.train, self.device):
            return self._fit()

    def _fit(self) -> dict[str, Any]:
        cfg = self.cfg
        epochs = cfg.train.epochs
        main = self.dist.is_main
        if main:
            if not self.resumed:
                self._claim_run_dir()
                # The resumed run keeps the config.yaml it started with: it is what the run is.
                try:
                    write_run_file(self.run_dir / "config.yaml", config_to_yaml(cfg), what="the run's config",
                                   resume_hint="nothing was trained; free some space, then start again")
                except RunWriteError:
                    _release_run_dir(self.run_dir)  # ours and empty but for that file: the same command works again
                    raise
            self._trim_metrics_log()
        last_test: dict[str, Any] | None = None
        calibration: dict[str, Any] | None = None
        if not self.trains:
            calibration = self._calibrate()
            self.start_epoch = epochs  # nothing to train
            if main:
                save_checkpoint(self._state(epochs - 1), self.run_dir / "last.pt")
                save_checkpoint(self._state(epochs - 1), self.run_dir / "best.pt")
        loggers = build_loggers(cfg.train.loggers, self.run_dir) if main else []
        with TrainingProgress(epochs, self.start_epoch, enabled=self.show_progress) as progress:
            progress.log(
                f"[bold]lttk train[/]: {escape(self.recipe.method)} on {cfg.data.dataset} "
                f"({len(self.data.train)} train / {len(self.data.test)} test images, {self.data.num_classes} classes), "
                f"{self.steps_per_epoch} steps/epoch, device {self.device}, run dir {escape(str(self.run_dir))}"
            )
            if self.init_report is not None:
                progress.log(f"init_from {escape(str(cfg.init_from))}: {escape(self.init_report.summary())}")
            progress.log(f"precision {self.numerics_summary()}")
            warning = amp_warning(self.amp_dtype, self.device)
            if warning:
                progress.log(f"[yellow]warning[/]: {escape(warning)}")
            if self.replaced is not None:
                progress.log(f"[yellow]--overwrite[/]: the earlier run in this folder was moved to "
                             f"{escape(str(self.replaced))}")
            if self.data.skipped:
                shown = self.data.metadata.get("skipped_images", [])[:5]
                progress.log(f"[yellow]skipped {self.data.skipped} unreadable image(s)[/] (data.bad_image_policy=skip): "
                             + escape("; ".join(shown)))
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
                        write_run_file(self.run_dir / "metrics.jsonl", json.dumps(record) + "\n", append=True,
                                       what=f"the metrics of epoch {epoch}", resume_hint=self._resume_hint())
                        for logger in loggers:
                            logger.log_epoch(record)
                        if is_last or (epoch + 1) % cfg.train.checkpoint_every == 0:
                            save_checkpoint(self._state(epoch), self.run_dir / "last.pt")
                    progress.end_epoch(
                        f"loss {record['loss']:.4f} test top-1 {format_metric(record.get('test_top1'))}", record
                    )
            except KeyboardInterrupt:
                for logger in loggers:
                    logger.close()
                loggers = []
                if main:
                    hint = self._interrupt_hint()
                    if self.show_progress:
                        progress.log(hint)
                    else:
                        Console(stderr=True).print(hint, highlight=False)
                raise
        for logger in loggers:
            logger.close()
        if last_test is None:  # resumed after the last epoch: evaluate what we have
            last_test = self.evaluate("test")
        results = {
            "method": self.recipe.method,
            "dataset": cfg.data.dataset,
            "epochs": epochs,
            "seed": cfg.seed,
            "test": last_test,
            "reported": "last epoch (the model is never selected on the test set for these numbers)",
            "precision": self.numerics_summary(),
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
            if self.init_report is not None:
                results["init_report"] = self.init_report.to_dict()
        if self.ema is not None:
            results["weights"] = f"EMA of the weights (decay {cfg.train.ema_decay})"
        if main:
            write_run_file(self.run_dir / "results.json", json.dumps(results, indent=2), what="the results",
                           resume_hint=self._resume_hint())
            # Also with --quiet: the results and where they are written are what a run is for.
            console = progress.console if self.show_progress else Console()
            console.print(results_table(results, title=f"{escape(self.recipe.method)}: test metrics (last epoch)"))
            if self.replaced is not None:
                console.print(f"the earlier run of this folder was moved to {escape(str(self.replaced))}",
                              highlight=False)
            console.print(f"run folder: {escape(str(self.run_dir))} (config.yaml, metrics.jsonl, metrics.csv, "
                          f"results.json, best.pt, last.pt)", highlight=False)
            console.print(f"evaluate it with: lttk eval {escape(str(self.run_dir / 'best.pt'))}  "
                          f"(predict: lttk predict {escape(str(self.run_dir / 'best.pt'))} IMAGE...)", highlight=False)
        return results


#: Files a run writes into its folder.
RUN_FILES = ("config.yaml", "metrics.jsonl", "metrics.csv", "results.json", "best.pt", "last.pt")

#: Fields a resumed run may change: where it runs and how it reports, never what it computes.
RESUMABLE_CHANGES = ("train.device", "train.amp", "train.channels_last", "train.compile", "train.deterministic",
                     "train.log_every", "train.eval_every", "train.checkpoint_every", "train.loggers",
                     "data.num_workers", "data.test_batch_size", "data.root", "output_dir", "name", "plugins")

#: Up to this many epochs the schedule is checked at every epoch before training; beyond, at as many
#: epochs spread over the run (the first and the last included).
SCHEDULE_CHECKS = 1000


def escape_markup_hint(text: str) -> str:
    """``interrupted: ...`` with the first word in yellow and the rest (paths) escaped."""
    head, _, rest = text.partition(":")
    return f"[yellow]{head}[/]:{escape(rest)}"


def checked_epochs(epochs: int, limit: int = SCHEDULE_CHECKS) -> list[int]:
    """The epochs at which a run's schedule is checked before training: all, or ``limit`` spread evenly.

    >>> checked_epochs(4)
    [0, 1, 2, 3]
    >>> checked = checked_epochs(10**6)
    >>> len(checked), checked[0], checked[-1]
    (1000, 0, 999999)
    """
    if epochs <= limit:
        return list(range(epochs))
    return sorted({round(i * (epochs - 1) / (limit - 1)) for i in range(limit)})


def load_config_plugins(modules: Sequence[str]) -> None:
    """Import the modules a config's ``plugins:`` names, unless LTTK_DISABLE_PLUGINS is set."""
    if not modules:
        return
    from lttoolkit.registry import plugins_disabled

    if plugins_disabled():
        flags = " ".join(f"--plugin {module}" for module in modules)
        raise ConfigError(
            f"the config lists plugins {list(modules)} but LTTK_DISABLE_PLUGINS is set, so none is imported; "
            f"unset the variable, or, if you trust them, name them on the command line: lttk {flags} train ..."
        )
    for module in modules:
        load_plugin(module)


def _refuse_existing_run(run_dir: Path) -> None:
    """A new run never writes into a folder that holds files (a finished run, say)."""
    if run_dir.is_dir() and any(run_dir.iterdir()):
        raise RunExistsError(_exists_message(run_dir))


def _exists_message(run_dir: Path) -> str:
    held = sorted(p.name for p in run_dir.iterdir()) if run_dir.is_dir() else []
    what = "a run" if set(held) & set(RUN_FILES) else "files"
    shown = ", ".join(held[:6]) + (", ..." if len(held) > 6 else "")
    resume = f"continue it with: lttk train --resume {run_dir}; " if "last.pt" in held else ""
    return (f"the run folder {run_dir} already holds {what} ({shown}); nothing was changed. {resume}"
            f"choose another name (name=NEW) or output_dir, or pass --overwrite to move it aside "
            f"(to {run_dir.name}.replaced-TIME) and start a new run there")


def claim_run_dir(run_dir: Path, *, overwrite: bool = False) -> Path | None:
    """Create ``run_dir`` for a new run, atomically: ``os.mkdir``, then ``config.yaml`` with ``O_EXCL``,
    so of two runs started together exactly one gets the folder (an empty folder made beforehand
    is claimed the same way). With ``overwrite``, a folder holding files is first renamed aside,
    never deleted.

    Returns:
        Where an earlier run was moved by ``overwrite``, else None.

    Raises:
        RunExistsError: the folder exists and holds files (or another run claimed it first).
    """
    moved = None
    try:
        run_dir.parent.mkdir(parents=True, exist_ok=True)
        if overwrite and run_dir.is_dir() and any(run_dir.iterdir()):
            moved = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}-"
                                      f"{secrets.token_hex(2)}")
            os.rename(run_dir, moved)
        try:
            os.mkdir(run_dir)
        except FileExistsError:
            if not run_dir.is_dir() or any(run_dir.iterdir()):
                raise RunExistsError(_exists_message(run_dir)) from None
        # The claim itself: whoever creates config.yaml first owns the folder (also an empty one).
        os.close(os.open(run_dir / "config.yaml", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except FileExistsError:
        raise RunExistsError(_exists_message(run_dir)) from None
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder {run_dir}: {exc.strerror or exc}; "
                          f"choose another output_dir") from None
    return moved


def _release_run_dir(run_dir: Path) -> None:
    """Remove a run folder this run just claimed, if it holds nothing but its (unwritten) config.yaml."""
    try:
        (run_dir / "config.yaml").unlink(missing_ok=True)
        run_dir.rmdir()  # fails, harmlessly, if anything else is in it
    except OSError:
        pass


def write_run_file(path: Path, text: str, *, what: str, append: bool = False, resume_hint: str = "") -> None:
    """Write (or append to) a run file; a failure is a :class:`RunWriteError` saying why and what is kept."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o666)
        try:
            data = text.encode("utf-8")
            while data:
                data = data[os.write(descriptor, data):]
        finally:
            os.close(descriptor)
    except OSError as exc:
        reason = ("no space left on device" if exc.errno in (errno.ENOSPC, errno.EDQUOT)
                  else exc.strerror or str(exc))
        hint = resume_hint or "free some space or choose another output_dir, then start again"
        failure = RunWriteError(f"could not write {what} to {path}: {reason}. {hint}")
        failure.errno = exc.errno
        raise failure from exc


def check_resume(cfg: RunConfig, state: Mapping[str, Any], run_dir: Path) -> None:
    """Refuse to resume when the request differs from what ``last.pt`` was trained with.

    The stored config in ``last.pt`` is the truth (``config.yaml`` may have been edited); only
    :data:`RESUMABLE_CHANGES` may differ, since a resumed run must continue the same computation.
    """
    stored = state.get("config")
    if not isinstance(stored, Mapping):
        raise ResumeMismatchError(f"cannot resume {run_dir}: its last.pt holds no config, so it is not a run's "
                                  f"checkpoint; start a new run (--from {run_dir / 'last.pt'} to reuse its weights)")
    try:
        stored = RunConfig.model_validate(dict(stored)).model_dump(mode="json")
    except Exception:  # an older or edited checkpoint: compare what it holds
        stored = dict(stored)
    before, after = _flatten(stored), _flatten(cfg.model_dump(mode="json"))
    changed = [key for key in sorted(set(before) | set(after))
               if before.get(key) != after.get(key) and not key.startswith(RESUMABLE_CHANGES)]
    done = int(state.get("epoch", -1)) + 1
    if "train.epochs" in changed and cfg.train.epochs < done:
        raise ResumeMismatchError(
            f"cannot resume {run_dir} with train.epochs={cfg.train.epochs}: it has already trained {done} epochs "
            f"of {before.get('train.epochs')}; drop the train.epochs override to finish the run as it was started"
        )
    if "init_from" in changed:
        raise ResumeMismatchError(
            f"cannot resume {run_dir} with --from/init_from: a resumed run continues from its own last.pt; "
            f"to start from other weights, start a new run (without --resume)"
        )
    if changed:
        shown = "; ".join(f"{key}: {before.get(key, '(unset)')!r} -> {after.get(key, '(unset)')!r}"
                          for key in changed[:8])
        more = f" and {len(changed) - 8} more" if len(changed) > 8 else ""
        raise ResumeMismatchError(
            f"cannot resume {run_dir}: the request differs from the config its last.pt was trained with: "
            f"{shown}{more}. A resumed run continues the same computation, so only "
            f"{', '.join(RESUMABLE_CHANGES)} may change; drop those overrides (or undo the edit of its "
            f"config.yaml), or start a new run from its weights: lttk train ... --from {run_dir / 'last.pt'} "
            f"name=NEW"
        )


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


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


class _StepMeter:
    """Loss and hit sums of an epoch, kept on the device and read every ``every`` steps."""

    def __init__(self, device: torch.device, every: int) -> None:
        self.every = every
        # float64 sums (exact over a long epoch); MPS has no float64, float32 there.
        self.dtype = torch.float32 if device.type == "mps" else torch.float64
        self.loss = torch.zeros((), device=device, dtype=self.dtype)
        self.hits = torch.zeros((), device=device, dtype=self.dtype)
        self.seen = 0
        self.since = 0  # the first step not read yet
        self.interval = (0, 0)  # the steps of the last read
        self._read_loss = 0.0
        self._read_seen = 0

    def add(self, loss: torch.Tensor, hits: float | torch.Tensor, batch: int) -> None:
        self.loss += loss.to(self.dtype) * batch
        self.hits += hits
        self.seen += batch

    def due(self, step: int) -> bool:
        return (step + 1) % self.every == 0

    def read(self, step: int) -> float:
        """The mean loss of the steps since the last read, up to ``step`` (one host sync);
        non-finite if any of them was."""
        self.interval, self.since = (self.since, step), step + 1
        total = self.loss.item()
        interval = total - self._read_loss
        mean = interval / max(self.seen - self._read_seen, 1) if math.isfinite(total) else total
        self._read_loss, self._read_seen = total, self.seen
        return mean

    def total_loss(self) -> float:
        return self.loss.item()

    def total_hits(self) -> float:
        return self.hits.item()


def _to_device(images: torch.Tensor, device: torch.device, memory_format: torch.memory_format) -> torch.Tensor:
    if images.dim() == 4 and memory_format is torch.channels_last:
        return images.to(device, non_blocking=True, memory_format=memory_format)
    return images.to(device, non_blocking=True)


def _no_sync(module: nn.Module, skip: bool) -> Any:
    """DDP's ``no_sync`` for the batches of an accumulation group before its last one."""
    inner = getattr(module, "_orig_mod", module)  # through torch.compile's wrapper
    if skip and hasattr(inner, "no_sync"):
        return inner.no_sync()
    return contextlib.nullcontext()


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
                   distributed_info: distributed.DistributedInfo | None = None,
                   amp_dtype: torch.dtype | None = None, channels_last: bool = False,
                   confusion_matrix: bool = False) -> dict[str, Any]:
    """Top-1/5, many/medium/few-shot and per-class accuracy of ``model`` on ``dataset`` (O(C) state).

    With ``distributed_info`` of several processes, each evaluates the disjoint shard
    ``rank::world_size`` and the per-class counts are summed over processes. ``amp_dtype``
    evaluates under autocast (as the run trained); ``channels_last`` sends the images so.
    ``confusion_matrix`` also counts the C x C matrix on the CPU (``results["confusion_matrix"]``,
    a nested list: write it to a file of its own at large C, as ``lttk eval --confusion-matrix`` does).
    """
    model.eval()
    info = distributed_info or distributed.DistributedInfo()
    if info.enabled:
        dataset = torch.utils.data.Subset(dataset, distributed.shard_indices(len(dataset), info))
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    meter = MetricAccumulator(len(train_class_counts), confusion_matrix=confusion_matrix)
    device = torch.device(device)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    for images, targets in loader:
        with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            logits = model(_to_device(images, device, memory_format))
        meter.update(logits.float(), targets.to(device))
    if info.enabled:
        state = meter.state_tensors(device=device)
        meter.load_state({name: distributed.all_reduce_sum(tensor) for name, tensor in state.items()})
    return meter.compute(train_class_counts)


def train(config: str | Path | RunConfig | None = None, overrides: Sequence[str] = (), *,
          resume: str | Path | None = None, progress: bool = True, overwrite: bool = False) -> dict[str, Any]:
    """Train from a YAML file / :class:`RunConfig` / the defaults, or resume a run folder.

    Args:
        config: a YAML path, a RunConfig, or None for the quick start (BBN on the
            embedded Fashion-MNIST-LT, ``lttoolkit/configs/quickstart.yaml``).
        overrides: dotted ``key=value`` changes (``train.epochs=10``).
        resume: a run folder holding ``config.yaml`` and ``last.pt``; ``overrides`` may then only
            change where and how it runs (:data:`RESUMABLE_CHANGES`).
        overwrite: if the run folder already holds files, rename it aside
            (``NAME.replaced-TIME``) instead of refusing; nothing is deleted.

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
        return Trainer(cfg, progress=progress, overwrite=overwrite).fit()


def quickstart_config_path() -> Path:
    """The packaged config ``lttk train`` uses without a CONFIG (BBN, embedded data, < 2 min on 2 CPU cores)."""
    from importlib.resources import files

    return Path(str(files("lttoolkit") / "configs" / "quickstart.yaml"))
