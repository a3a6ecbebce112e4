"""Where a run's per-epoch records go, besides ``metrics.jsonl``: a small logger interface.

The trainer hands every epoch's record (the line it appends to ``metrics.jsonl``: epoch,
loss, train_top1, lr, alpha, images_per_second, epoch_seconds and, on evaluated epochs,
test_top1 / test_many_shot / ... / val_top1) to each logger of ``train.loggers``:

* ``csv`` (always on): ``metrics.csv`` in the run folder, one row per epoch, rewritten from
  ``metrics.jsonl`` after each epoch, so it is what the JSON log holds, also after a resume;
* ``tensorboard``: scalars under ``run_dir/tensorboard`` (``pip install "lttoolkit[tensorboard]"``,
  then ``tensorboard --logdir runs``).

A logger is any object with ``log_epoch(record)`` and ``close()`` (:class:`RunLogger`); a
plugin adds one (W&B, MLflow) with :func:`register_logger`.

>>> import json, tempfile
>>> from pathlib import Path
>>> run = Path(tempfile.mkdtemp())
>>> lines = [{"epoch": 0, "loss": 2.0, "lr": 0.1}, {"epoch": 1, "loss": 1.5, "lr": 0.1, "test_top1": 40.0}]
>>> _ = (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\\n" for r in lines))
>>> CSVLogger(run).log_epoch(lines[-1])
>>> print((run / "metrics.csv").read_text().strip())
epoch,loss,lr,test_top1
0,2.0,0.1,
1,1.5,0.1,40.0
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence, runtime_checkable

from lttoolkit.errors import ConfigError, LTToolkitError

__all__ = ["RunLogger", "CSVLogger", "TensorBoardLogger", "register_logger", "build_loggers", "LOGGER_FACTORIES"]


@runtime_checkable
class RunLogger(Protocol):
    """What a logger is: it receives each epoch's record, then is closed once."""

    def log_epoch(self, record: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


class CSVLogger:
    """``metrics.csv`` beside ``metrics.jsonl``: the same records as a table (columns in first-seen order)."""

    def __init__(self, run_dir: str | Path) -> None:
        self.run_dir = Path(run_dir)

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        source = self.run_dir / "metrics.jsonl"
        rows = []
        if source.is_file():
            for line in source.read_text(encoding="utf-8").splitlines():
                try:
                    value = json.loads(line)
                except ValueError:  # a line cut short by a crash
                    continue
                if isinstance(value, dict):
                    rows.append(value)
        columns: list[str] = []
        for row in rows:
            columns += [key for key in row if key not in columns and not isinstance(row[key], (dict, list))]
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        target = self.run_dir / "metrics.csv"
        temporary = target.with_name(".metrics.csv.tmp")
        try:
            temporary.write_text(buffer.getvalue(), encoding="utf-8")
            os.replace(temporary, target)  # never a half-written table
        except OSError as error:
            temporary.unlink(missing_ok=True)
            raise LTToolkitError(f"could not write {target}: {error}; metrics.jsonl holds the same records. "
                                 f"Free some space, then continue with lttk train --resume {self.run_dir}") from error

    def close(self) -> None:
        pass


class TensorBoardLogger:
    """Each numeric field of the records as a TensorBoard scalar (``run_dir/tensorboard``)."""

    def __init__(self, run_dir: str | Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError(
                "train.loggers includes tensorboard, which is not installed: pip install \"lttoolkit[tensorboard]\" "
                "(or remove tensorboard from train.loggers)"
            ) from None
        self.writer = SummaryWriter(log_dir=str(Path(run_dir) / "tensorboard"))

    def log_epoch(self, record: Mapping[str, Any]) -> None:
        step = int(record.get("epoch", 0))
        for key, value in record.items():
            if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


#: name -> factory(run_dir) of the loggers ``train.loggers`` can name.
LOGGER_FACTORIES: dict[str, Callable[[Path], RunLogger]] = {"csv": CSVLogger, "tensorboard": TensorBoardLogger}


def register_logger(name: str, factory: Callable[[Path], RunLogger]) -> None:
    """Add a logger ``train.loggers`` can name (a plugin's W&B or MLflow logger)."""
    if name in LOGGER_FACTORIES:
        raise ConfigError(f"a logger named {name!r} exists already; choose another name")
    LOGGER_FACTORIES[name] = factory


def build_loggers(names: Sequence[str], run_dir: str | Path) -> list[RunLogger]:
    """The loggers of ``train.loggers`` (``csv`` is always among them)."""
    unknown = [name for name in names if name not in LOGGER_FACTORIES]
    if unknown:
        raise ConfigError(f"train.loggers: unknown logger {', '.join(map(repr, unknown))}; "
                          f"choose from {', '.join(sorted(LOGGER_FACTORIES))}")
    wanted = ["csv", *[name for name in names if name != "csv"]]
    return [LOGGER_FACTORIES[name](Path(run_dir)) for name in dict.fromkeys(wanted)]
