"""Rich progress display for training: epoch and batch bars, a results table.

Kept apart from the loop so the loop stays readable and non-interactive runs
(CI logs, ``--quiet``) can swap in the silent version.
"""

from __future__ import annotations

import time
from typing import Any, Mapping

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

__all__ = ["TrainingProgress", "results_table", "format_metric", "epoch_line"]


def format_metric(value: Any) -> str:
    """Percentages with two decimals; a missing value (empty shot group) as ``n/a``."""
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


class TrainingProgress:
    """Epoch and batch bars with loss, alpha, lr, images/s and ETA.

    Args:
        epochs: total epochs of the run.
        start_epoch: first epoch to run (after a resume).
        console: where to draw; ``enabled=False`` draws nothing (non-main ranks).
    """

    def __init__(self, epochs: int, start_epoch: int = 0, *, console: Console | None = None, enabled: bool = True) -> None:
        self.console = console or Console()
        self.enabled = enabled
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=self.console,
            disable=not enabled,
            transient=False,
        )
        self._epoch_task = self._progress.add_task("epochs", total=epochs, completed=start_epoch, stats="")
        self._epochs = epochs
        self._batch_task: Any = None
        self._images = 0
        self._started = 0.0

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._progress.stop()

    def start_epoch(self, epoch: int, steps: int) -> None:
        if self._batch_task is not None:
            self._progress.remove_task(self._batch_task)
        self._batch_task = self._progress.add_task(f"epoch {epoch}", total=steps, stats="")
        self._images = 0
        self._started = time.perf_counter()

    def step(self, images: int, stats: Mapping[str, float], advance: int = 1) -> None:
        """``advance`` steps done, with ``images`` images in all; ``stats`` as of the last of them."""
        self._images += images
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        text = " ".join(f"{k} {v:.4g}" for k, v in stats.items()) + f" img/s {self._images / elapsed:.0f}"
        self._progress.update(self._batch_task, advance=advance, stats=text)

    def images_per_second(self) -> float:
        return self._images / max(time.perf_counter() - self._started, 1e-9)

    def end_epoch(self, summary: str, record: Mapping[str, Any] | None = None) -> None:
        """Close an epoch: the bar's summary on a terminal; one plain line when the console is
        not a terminal (SLURM, nohup, CI logs), where the bars are not drawn."""
        self._progress.update(self._epoch_task, advance=1, stats=summary)
        if self.enabled and record is not None and not self.console.is_terminal:
            self.console.print(epoch_line(record, self._epochs), highlight=False, markup=False, soft_wrap=True)

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message, highlight=False)


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    """One plain line per epoch, for logs that are files.

    >>> epoch_line({"epoch": 2, "loss": 1.23456, "lr": 0.05, "alpha": 0.75, "images_per_second": 210.4,
    ...             "epoch_seconds": 7.5, "train_top1": 51.0, "test_top1": 48.2, "test_few_shot": None}, 16)
    'epoch 3/16 loss 1.2346 lr 0.05 alpha 0.75 img/s 210 train top-1 51.00 test top-1 48.20 few n/a (7.5 s)'
    """
    parts = [f"epoch {int(record['epoch']) + 1}/{epochs}", f"loss {record['loss']:.4f}", f"lr {record['lr']:.4g}"]
    if "alpha" in record:
        parts.append(f"alpha {record['alpha']:.4g}")
    if "images_per_second" in record:
        parts.append(f"img/s {record['images_per_second']:.0f}")
    labels = {"train_top1": "train top-1", "test_top1": "test top-1", "test_many_shot": "many",
              "test_medium_shot": "medium", "test_few_shot": "few", "val_top1": "val top-1"}
    parts += [f"{label} {format_metric(record[key])}" for key, label in labels.items() if key in record]
    text = " ".join(parts)
    return text + (f" ({record['epoch_seconds']:.1f} s)" if "epoch_seconds" in record else "")


def results_table(results: Mapping[str, Any], title: str = "results") -> Table:
    """A table of the headline metrics of ``results.json``."""
    table = Table(title=title, title_justify="left")
    for column in ("top-1", "top-5", "many", "medium", "few", "mean class acc"):
        table.add_column(column, justify="right")
    test = results.get("test", results)
    table.add_row(*(format_metric(test.get(key)) for key in
                    ("top1", "top5", "many_shot", "medium_shot", "few_shot", "mean_class_accuracy")))
    return table
