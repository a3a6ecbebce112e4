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

__all__ = ["TrainingProgress", "results_table", "format_metric"]


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

    def step(self, images: int, stats: Mapping[str, float]) -> None:
        self._images += images
        elapsed = max(time.perf_counter() - self._started, 1e-9)
        text = " ".join(f"{k} {v:.4g}" for k, v in stats.items()) + f" img/s {self._images / elapsed:.0f}"
        self._progress.update(self._batch_task, advance=1, stats=text)

    def images_per_second(self) -> float:
        return self._images / max(time.perf_counter() - self._started, 1e-9)

    def end_epoch(self, summary: str) -> None:
        self._progress.update(self._epoch_task, advance=1, stats=summary)

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message, highlight=False)


def results_table(results: Mapping[str, Any], title: str = "results") -> Table:
    """A table of the headline metrics of ``results.json``."""
    table = Table(title=title, title_justify="left")
    for column in ("top-1", "top-5", "many", "medium", "few", "mean class acc"):
        table.add_column(column, justify="right")
    test = results.get("test", results)
    table.add_row(*(format_metric(test.get(key)) for key in
                    ("top1", "top5", "many_shot", "medium_shot", "few_shot", "mean_class_accuracy")))
    return table
