"""Long-tail evaluation metrics: top-k, per-class and many/medium/few-shot accuracy.

Long-tailed benchmarks report, besides overall top-1, the accuracy on three
groups of classes split by how many *training* images they have. The split
follows Liu et al., "Large-Scale Long-Tailed Recognition in an Open World"
(OLTR, CVPR 2019), and Kang et al., "Decoupling Representation and Classifier
for Long-Tailed Recognition" (ICLR 2020):

* many-shot: more than 100 training images,
* medium-shot: 20 to 100 training images (both ends included),
* few-shot: fewer than 20 training images.

A group's accuracy is the mean of the per-class accuracies of its classes (the
classes of a group that have no test sample are left out). All accuracies are in
percent (0-100). A quantity that cannot be computed (an empty group, a class
with no test sample, an empty accumulator) is ``None``, never NaN, so results
stay JSON-serialisable; :func:`format_accuracy` prints it as ``"n/a"``.

:class:`MetricAccumulator` keeps O(C) state: per-class hits and totals and the
top-k hit counts (three small integer tensors on the device of the logits; about
200 KB at iNaturalist's 8,142 classes), so batches are added on the fly without a
host synchronisation and the states of several processes are merged by summing
them (see :meth:`MetricAccumulator.state_tensors`). The C x C confusion matrix is
opt-in (``confusion_matrix=True``), kept on the CPU.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lttoolkit.errors import DataError

__all__ = ["MetricAccumulator", "shot_groups", "format_accuracy", "MANY_SHOT_MIN", "FEW_SHOT_MAX"]

#: A class with more than this many training images is many-shot (Liu et al. 2019).
MANY_SHOT_MIN = 100
#: A class with fewer than this many training images is few-shot (Liu et al. 2019).
FEW_SHOT_MAX = 20


def shot_groups(
    train_class_counts: Sequence[int] | torch.Tensor,
    many: int = MANY_SHOT_MIN,
    few: int = FEW_SHOT_MAX,
) -> dict[str, list[int]]:
    """Split class indices into many-, medium- and few-shot groups by training count.

    Thresholds follow Liu et al. (CVPR 2019) and Kang et al. (ICLR 2020):
    many-shot ``count > many``, medium-shot ``few <= count <= many``, few-shot
    ``count < few``, with ``many=100`` and ``few=20`` by default.

    Args:
        train_class_counts: number of training images of each class, indexed by class.
        many: a class with more than ``many`` training images is many-shot.
        few: a class with fewer than ``few`` training images is few-shot.

    Returns:
        ``{"many": [...], "medium": [...], "few": [...]}``, class indices in increasing order.

    Raises:
        DataError: a count is negative.
        ValueError: ``few > many``.

    >>> shot_groups([500, 100, 20, 19, 3])
    {'many': [0], 'medium': [1, 2], 'few': [3, 4]}
    """
    if few > many:
        raise ValueError(
            f"shot_groups: few={few} is larger than many={many}; the few-shot threshold "
            f"must not exceed the many-shot one (defaults: many=100, few=20)."
        )
    counts = [int(count) for count in train_class_counts]
    negative = [index for index, count in enumerate(counts) if count < 0]
    if negative:
        raise DataError(
            f"shot_groups: training counts must be >= 0, but class {negative[0]} has "
            f"{counts[negative[0]]}; pass the number of training images of each class."
        )
    return {
        "many": [index for index, count in enumerate(counts) if count > many],
        "medium": [index for index, count in enumerate(counts) if few <= count <= many],
        "few": [index for index, count in enumerate(counts) if count < few],
    }


def format_accuracy(value: float | None, digits: int = 2) -> str:
    """Format an accuracy in percent for printing; ``None`` (not computable) becomes ``"n/a"``.

    Args:
        value: an accuracy from :meth:`MetricAccumulator.compute`, or ``None``.
        digits: digits after the decimal point.

    Returns:
        The formatted number, or ``"n/a"``.

    >>> format_accuracy(81.234), format_accuracy(None)
    ('81.23', 'n/a')
    """
    return "n/a" if value is None else f"{value:.{digits}f}"


class MetricAccumulator:
    """Accumulates per-class hits, top-k hits and (optionally) a confusion matrix over batches.

    The state is a few integer tensors of size ``C`` (see :meth:`state_tensors`); it lives
    on the device of the first batch given to :meth:`update`, so evaluation on a GPU
    neither copies predictions to the host nor waits for it, batch after batch.

    Args:
        num_classes: number of classes ``C``; logits have shape ``[B, C]``.
        topk: the ``k`` of the top-k accuracies to report; a ``k`` larger than
            ``C`` is clipped to ``C`` (so ``top5`` is 100 when ``C < 5``).
        confusion_matrix: also count the ``C x C`` confusion matrix (rows: true
            class, columns: predicted), on the CPU. Off by default: at 8,142 classes
            it is 506 MiB of int64.

    >>> import torch
    >>> acc = MetricAccumulator(num_classes=3, confusion_matrix=True)
    >>> acc.update(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]), torch.tensor([0, 1]))
    >>> result = acc.compute(train_class_counts=[200, 50, 5])
    >>> result["top1"], result["per_class_accuracy"], result["few_shot"]
    (50.0, [100.0, 0.0, None], None)
    >>> result["confusion_matrix"]
    [[1, 0, 0], [0, 0, 1], [0, 0, 0]]
    """

    def __init__(self, num_classes: int, topk: Sequence[int] = (1, 5), *, confusion_matrix: bool = False) -> None:
        if int(num_classes) < 1:
            raise ValueError(
                f"MetricAccumulator: num_classes must be >= 1, got {num_classes}; "
                f"pass the number of classes of the dataset."
            )
        topk = tuple(int(k) for k in topk)
        if not topk or min(topk) < 1:
            raise ValueError(
                f"MetricAccumulator: topk must be a non-empty sequence of integers >= 1, "
                f"got {topk}; for example topk=(1, 5)."
            )
        self.num_classes = int(num_classes)
        self.topk = topk
        self.keeps_confusion = bool(confusion_matrix)
        self.reset()

    def _keys(self) -> dict[str, tuple[int, ...]]:
        shapes = {"per_class_correct": (self.num_classes,), "per_class_total": (self.num_classes,),
                  "topk_correct": (len(self.topk),)}
        if self.keeps_confusion:
            shapes["confusion"] = (self.num_classes, self.num_classes)
        return shapes

    def reset(self) -> None:
        """Forget every batch seen so far."""
        device = getattr(self, "_per_class_total", torch.empty(0)).device
        self._per_class_correct = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        self._per_class_total = torch.zeros(self.num_classes, dtype=torch.int64, device=device)
        self._topk_correct = torch.zeros(len(self.topk), dtype=torch.int64, device=device)
        self._confusion = (torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64)
                           if self.keeps_confusion else None)

    @property
    def num_samples(self) -> int:
        """Number of samples accumulated so far (reads the device: not for every batch)."""
        return int(self._per_class_total.sum())

    def _to(self, device: torch.device) -> None:
        if self._per_class_total.device != device:
            self._per_class_correct = self._per_class_correct.to(device)
            self._per_class_total = self._per_class_total.to(device)
            self._topk_correct = self._topk_correct.to(device)

    @torch.no_grad()
    def update(self, logits: torch.Tensor, targets: torch.Tensor, *, check_targets: bool = True) -> None:
        """Add a batch.

        Args:
            logits: scores of shape ``[B, C]`` (any monotone transform, e.g.
                probabilities, gives the same result).
            targets: true class indices of shape ``[B]``, in ``[0, C)``.
            check_targets: check that every target lies in ``[0, C)``; this reads two
                numbers from the device, so a loop that knows its labels are valid (the
                engine checks them when it builds the dataset) can skip it.

        Raises:
            ValueError: the shapes do not match ``[B, C]`` / ``[B]``.
            DataError: a target lies outside ``[0, C)``.
        """
        num_classes = self.num_classes
        if logits.dim() != 2 or logits.shape[1] != num_classes:
            raise ValueError(
                f"MetricAccumulator.update: logits must have shape [batch, {num_classes}], "
                f"got {list(logits.shape)}; check that num_classes matches the model's head."
            )
        if targets.dim() != 1 or targets.shape[0] != logits.shape[0]:
            raise ValueError(
                f"MetricAccumulator.update: targets must have shape [{logits.shape[0]}] "
                f"(one class index per row of logits), got {list(targets.shape)}."
            )
        dtype = targets.dtype
        if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
            raise ValueError(
                f"MetricAccumulator.update: targets must be integer class indices, got dtype "
                f"{targets.dtype}; pass hard labels (e.g. targets.argmax(1) for one-hot targets)."
            )
        if targets.numel() == 0:
            return
        logits = logits.detach()
        targets = targets.detach().to(device=logits.device, dtype=torch.int64)
        if check_targets:
            lowest, highest = (int(value) for value in torch.aminmax(targets))
            if lowest < 0 or highest >= num_classes:
                raise DataError(
                    f"MetricAccumulator.update: targets must lie in [0, {num_classes}), got values "
                    f"from {lowest} to {highest}; check that num_classes matches the dataset's labels."
                )
        self._to(logits.device)

        max_k = min(max(self.topk), num_classes)
        ranked = logits.topk(max_k, dim=1).indices
        # The top-1 prediction is taken from the same ranking so that top1 and the
        # per-class hits agree even when scores tie.
        predictions = ranked[:, 0]
        hits = predictions.eq(targets)
        self._per_class_total += torch.bincount(targets, minlength=num_classes)
        # Weighted counts, not targets[hits]: boolean indexing has a data-dependent size, which
        # would make the host wait for the device at every batch.
        self._per_class_correct += torch.bincount(targets, weights=hits.double(), minlength=num_classes).long()
        # A row has at most one hit, so the cumulative hits up to rank k are the top-k hits.
        hits_up_to_rank = ranked.eq(targets[:, None]).sum(dim=0).cumsum(dim=0)
        ranks = torch.tensor([min(k, num_classes) - 1 for k in self.topk], device=logits.device)
        self._topk_correct += hits_up_to_rank[ranks]
        if self._confusion is not None:
            flat = (targets * num_classes + predictions).cpu()
            self._confusion += torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)

    def state_tensors(self, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Copies of the state, ready to be summed across processes.

        Summing the states of accumulators that saw disjoint parts of the data gives
        the state of one accumulator that saw all of it. For distributed evaluation::

            state = accumulator.state_tensors(device="cuda")
            for tensor in state.values():
                torch.distributed.all_reduce(tensor)  # sum
            accumulator.load_state(state)

        Args:
            device: where to put the copies (e.g. the GPU for NCCL); by default the
                device the state lives on.

        Returns:
            ``{"per_class_correct": int64 [C], "per_class_total": int64 [C],
            "topk_correct": int64 [len(topk)]}``, plus ``"confusion"`` (``[C, C]``) when kept.
        """
        device = self._per_class_total.device if device is None else torch.device(device)
        state = {
            "per_class_correct": self._per_class_correct.to(device, copy=True),
            "per_class_total": self._per_class_total.to(device, copy=True),
            "topk_correct": self._topk_correct.to(device, copy=True),
        }
        if self._confusion is not None:
            state["confusion"] = self._confusion.to(device, copy=True)
        return state

    def load_state(self, state: Mapping[str, torch.Tensor]) -> None:
        """Replace the state with ``state`` (e.g. the all-reduced :meth:`state_tensors`).

        Args:
            state: a mapping shaped like :meth:`state_tensors`'s result.

        Raises:
            ValueError: a tensor is missing or has the wrong shape.
        """
        for key, shape in self._keys().items():
            if key not in state or tuple(state[key].shape) != shape:
                found = tuple(state[key].shape) if key in state else "missing"
                raise ValueError(
                    f"MetricAccumulator.load_state: {key!r} must be a tensor of shape {shape}, "
                    f"got {found}; pass the result of state_tensors() of an accumulator with "
                    f"num_classes={self.num_classes}, topk={self.topk} and "
                    f"confusion_matrix={self.keeps_confusion}."
                )
        device = self._per_class_total.device
        self._per_class_correct = state["per_class_correct"].to(device=device, dtype=torch.int64, copy=True)
        self._per_class_total = state["per_class_total"].to(device=device, dtype=torch.int64, copy=True)
        self._topk_correct = state["topk_correct"].to(device=device, dtype=torch.int64, copy=True)
        if self.keeps_confusion:
            self._confusion = state["confusion"].to(device="cpu", dtype=torch.int64, copy=True)

    def merge_(self, other: MetricAccumulator) -> MetricAccumulator:
        """Add the counts of ``other`` (which saw other data) to this accumulator, in place.

        Args:
            other: an accumulator with the same ``num_classes``, ``topk`` and ``confusion_matrix``.

        Returns:
            ``self``.

        Raises:
            ValueError: the two accumulators count different things.
        """
        if (other.num_classes, other.topk, other.keeps_confusion) != (
                self.num_classes, self.topk, self.keeps_confusion):
            raise ValueError(
                f"MetricAccumulator.merge_: cannot merge an accumulator with num_classes="
                f"{other.num_classes}, topk={other.topk}, confusion_matrix={other.keeps_confusion} into one "
                f"with num_classes={self.num_classes}, topk={self.topk}, "
                f"confusion_matrix={self.keeps_confusion}; build both with the same arguments."
            )
        device = self._per_class_total.device
        self._per_class_correct += other._per_class_correct.to(device)
        self._per_class_total += other._per_class_total.to(device)
        self._topk_correct += other._topk_correct.to(device)
        if self._confusion is not None and other._confusion is not None:
            self._confusion += other._confusion
        return self

    def confusion_matrix(self) -> torch.Tensor:
        """The ``C x C`` confusion matrix (CPU int64; rows: true class, columns: predicted).

        Raises:
            ValueError: the accumulator was built without ``confusion_matrix=True``.
        """
        if self._confusion is None:
            raise ValueError("MetricAccumulator: no confusion matrix is kept; build it with confusion_matrix=True "
                             "(it is C x C: 506 MiB at 8,142 classes)")
        return self._confusion.clone()

    def compute(
        self, train_class_counts: Sequence[int] | torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Summarise the batches seen so far.

        Args:
            train_class_counts: training images per class; needed for the
                many/medium/few-shot accuracies (``None`` leaves them ``None``).

        Returns:
            A JSON-serialisable dict (plain floats, ints, lists, ``None``):
            ``top1`` and ``top{k}`` for each ``k`` of ``topk`` (percent),
            ``many_shot``, ``medium_shot``, ``few_shot`` (mean per-class accuracy of
            the group, percent; ``None`` for a group without a class that has test
            samples), ``mean_class_accuracy``, ``per_class_accuracy`` (``None`` for a
            class with no test sample), ``per_class_correct`` and ``per_class_total``
            (counts), ``num_samples``, and ``confusion_matrix`` (rows: true class,
            columns: predicted class) only when the accumulator keeps one.

        Raises:
            DataError: ``train_class_counts`` does not have one entry per class.
        """
        per_class_total = self._per_class_total.cpu()
        per_class_correct = self._per_class_correct.cpu()
        topk_correct = self._topk_correct.cpu().tolist()
        num_samples = int(per_class_total.sum())
        present = per_class_total > 0
        per_class = torch.where(
            present,
            100.0 * per_class_correct.double() / per_class_total.clamp(min=1).double(),
            torch.zeros((), dtype=torch.float64),
        )

        def group_mean(indices: torch.Tensor) -> float | None:
            selected = indices[present[indices]]
            return float(per_class[selected].mean()) if selected.numel() else None

        def percent(correct: int) -> float | None:
            return 100.0 * correct / num_samples if num_samples else None

        result: dict[str, Any] = {"top1": percent(int(per_class_correct.sum()))}
        for k, correct in zip(self.topk, topk_correct):
            result[f"top{k}"] = percent(int(correct))

        groups: dict[str, float | None] = {"many_shot": None, "medium_shot": None, "few_shot": None}
        if train_class_counts is not None:
            counts = list(train_class_counts)
            if len(counts) != self.num_classes:
                raise DataError(
                    f"MetricAccumulator.compute: train_class_counts has {len(counts)} entries "
                    f"but there are {self.num_classes} classes; pass one training count per class."
                )
            for name, indices in shot_groups(counts).items():
                groups[f"{name}_shot"] = group_mean(torch.tensor(indices, dtype=torch.int64))
        result.update(groups)

        result["mean_class_accuracy"] = group_mean(torch.arange(self.num_classes))
        result["per_class_accuracy"] = [
            float(accuracy) if is_present else None
            for accuracy, is_present in zip(per_class.tolist(), present.tolist())
        ]
        result["per_class_correct"] = per_class_correct.tolist()
        result["per_class_total"] = per_class_total.tolist()
        if self._confusion is not None:
            result["confusion_matrix"] = self._confusion.tolist()
        result["num_samples"] = num_samples
        return result

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(num_classes={self.num_classes}, topk={self.topk}, "
            f"num_samples={self.num_samples})"
        )
