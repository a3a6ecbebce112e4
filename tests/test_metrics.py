"""Tests of lttoolkit.engine.metrics against hand-computed confusion matrices and accuracies."""

from __future__ import annotations

import json
import math

import pytest
import torch

from lttoolkit.engine.metrics import MetricAccumulator, format_accuracy, shot_groups
from lttoolkit.errors import DataError

# Five samples, three classes; class 2 never appears as a target.
#   target  logits        ranking   top-1  in top-2
#   0       [3, 2, 1]     0, 1, 2   0      yes
#   0       [1, 3, 2]     1, 2, 0   1      no
#   1       [2, 3, 1]     1, 0, 2   1      yes
#   1       [3, 1, 2]     0, 2, 1   0      no
#   1       [3, 2, 1]     0, 1, 2   0      yes
LOGITS = torch.tensor(
    [[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [2.0, 3.0, 1.0], [3.0, 1.0, 2.0], [3.0, 2.0, 1.0]]
)
TARGETS = torch.tensor([0, 0, 1, 1, 1])


def hand_example(topk=(1, 2, 5), confusion_matrix=True) -> MetricAccumulator:
    accumulator = MetricAccumulator(num_classes=3, topk=topk, confusion_matrix=confusion_matrix)
    accumulator.update(LOGITS, TARGETS)
    return accumulator


def test_hand_computed_confusion_and_accuracies():
    result = hand_example().compute(train_class_counts=[150, 50, 5])
    assert result["confusion_matrix"] == [[1, 1, 0], [2, 1, 0], [0, 0, 0]]
    assert result["per_class_correct"] == [1, 1, 0] and result["per_class_total"] == [2, 3, 0]
    assert result["num_samples"] == 5
    assert result["top1"] == pytest.approx(40.0)
    assert result["top2"] == pytest.approx(60.0)
    assert result["top5"] == pytest.approx(100.0)  # k clipped to C = 3
    assert result["per_class_accuracy"][:2] == pytest.approx([50.0, 100.0 / 3])
    assert result["per_class_accuracy"][2] is None  # class 2 has no test sample
    assert result["mean_class_accuracy"] == pytest.approx((50.0 + 100.0 / 3) / 2)
    assert result["many_shot"] == pytest.approx(50.0)
    assert result["medium_shot"] == pytest.approx(100.0 / 3)
    assert result["few_shot"] is None  # its only class is absent from the test set


def test_empty_shot_group_is_none_and_others_average_classes():
    result = hand_example().compute(train_class_counts=[150, 101, 1000])
    assert result["medium_shot"] is None and result["few_shot"] is None
    # mean of per-class accuracies (50, 33.3), not the pooled accuracy 2/5 = 40
    assert result["many_shot"] == pytest.approx((50.0 + 100.0 / 3) / 2)


def test_without_train_counts_groups_are_none():
    result = hand_example().compute()
    assert result["many_shot"] is None
    assert result["medium_shot"] is None
    assert result["few_shot"] is None


def test_result_is_plain_json_without_nan():
    result = hand_example().compute(train_class_counts=[150, 50, 5])
    text = json.dumps(result, allow_nan=False)
    assert json.loads(text) == result
    for value in result.values():
        assert not isinstance(value, torch.Tensor)
        assert not (isinstance(value, float) and math.isnan(value))


def test_top5_with_fewer_than_five_classes_is_full():
    accumulator = MetricAccumulator(num_classes=2)  # topk=(1, 5)
    accumulator.update(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0, 1]))
    result = accumulator.compute()
    assert result["top1"] == pytest.approx(200.0 / 3)
    assert result["top5"] == pytest.approx(100.0)


def test_top1_agrees_with_confusion_when_logits_tie():
    torch.manual_seed(0)
    logits = torch.randint(0, 2, (64, 6)).float()  # many ties
    targets = torch.randint(0, 6, (64,))
    accumulator = MetricAccumulator(num_classes=6, topk=(1, 3), confusion_matrix=True)
    accumulator.update(logits, targets)
    result = accumulator.compute()
    assert result["per_class_correct"] == [result["confusion_matrix"][c][c] for c in range(6)]
    trace = sum(result["confusion_matrix"][c][c] for c in range(6))
    assert result["top1"] == pytest.approx(100.0 * trace / 64)


def test_matches_reference_loop_on_random_batches():
    torch.manual_seed(1)
    num_classes, batches = 7, [torch.randn(n, 7) for n in (5, 11, 1)]
    target_batches = [torch.randint(0, num_classes, (len(b),)) for b in batches]
    accumulator = MetricAccumulator(num_classes, topk=(1, 3), confusion_matrix=True)
    for logits, targets in zip(batches, target_batches):
        accumulator.update(logits, targets)
    result = accumulator.compute()

    expected = [[0] * num_classes for _ in range(num_classes)]
    top3 = 0
    for logits, targets in zip(batches, target_batches):
        for row, target in zip(logits.tolist(), targets.tolist()):
            order = sorted(range(num_classes), key=lambda c: -row[c])
            expected[target][order[0]] += 1
            top3 += target in order[:3]
    assert result["confusion_matrix"] == expected
    assert result["per_class_correct"] == [expected[c][c] for c in range(num_classes)]
    assert result["per_class_total"] == [sum(row) for row in expected]
    assert result["top3"] == pytest.approx(100.0 * top3 / 17)


def test_merge_equals_single_accumulator_on_concatenated_data():
    torch.manual_seed(2)
    logits, targets = torch.randn(40, 5), torch.randint(0, 5, (40,))
    counts = [300, 60, 20, 19, 2]
    whole = MetricAccumulator(5, topk=(1, 2))
    whole.update(logits, targets)
    first, second = MetricAccumulator(5, topk=(1, 2)), MetricAccumulator(5, topk=(1, 2))
    first.update(logits[:13], targets[:13])
    second.update(logits[13:], targets[13:])
    assert first.merge_(second).compute(counts) == whole.compute(counts)


def test_summed_state_tensors_equal_single_process_counts():
    torch.manual_seed(3)
    logits, targets = torch.randn(30, 4), torch.randint(0, 4, (30,))
    shards = [MetricAccumulator(4, confusion_matrix=True) for _ in range(3)]
    for rank, shard in enumerate(shards):
        shard.update(logits[rank::3], targets[rank::3])
    # What an all_reduce(SUM) over three processes computes.
    states = [shard.state_tensors() for shard in shards]
    summed = {key: sum(state[key] for state in states) for key in states[0]}
    shards[0].load_state(summed)
    whole = MetricAccumulator(4, confusion_matrix=True)
    whole.update(logits, targets)
    assert torch.equal(shards[0].state_tensors()["per_class_total"], whole.state_tensors()["per_class_total"])
    assert torch.equal(shards[0].state_tensors()["confusion"], whole.state_tensors()["confusion"])
    assert shards[0].compute() == whole.compute()


def test_state_tensors_are_copies():
    accumulator = hand_example()
    state = accumulator.state_tensors()
    state["confusion"].zero_()
    state["per_class_total"].zero_()
    assert accumulator.num_samples == 5
    assert accumulator.confusion_matrix().sum() == 5


def test_merge_and_load_state_reject_mismatches():
    with pytest.raises(ValueError, match="num_classes"):
        MetricAccumulator(3).merge_(MetricAccumulator(4))
    with pytest.raises(ValueError, match="per_class_correct"):
        MetricAccumulator(3).load_state(
            {"confusion": torch.zeros(2, 2), "topk_correct": torch.zeros(2)}
        )
    with pytest.raises(ValueError, match="confusion"):
        MetricAccumulator(3, confusion_matrix=True).load_state(MetricAccumulator(3).state_tensors())
    with pytest.raises(ValueError, match="confusion_matrix=True"):
        MetricAccumulator(3).confusion_matrix()


def test_empty_accumulator_reports_none_not_nan():
    result = MetricAccumulator(3).compute(train_class_counts=[200, 50, 5])
    assert result["num_samples"] == 0
    assert result["top1"] is None and result["top5"] is None
    assert result["per_class_accuracy"] == [None, None, None]
    assert result["mean_class_accuracy"] is None and result["many_shot"] is None


def test_reset_forgets_samples():
    accumulator = hand_example()
    accumulator.reset()
    assert accumulator.num_samples == 0


def test_bad_inputs_raise_clear_errors():
    accumulator = MetricAccumulator(3)
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        accumulator.update(torch.zeros(2, 3), torch.tensor([0, 3]))
    with pytest.raises(DataError, match=r"\[0, 3\)"):
        accumulator.update(torch.zeros(2, 3), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="logits must have shape"):
        accumulator.update(torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="targets must have shape"):
        accumulator.update(torch.zeros(2, 3), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="integer class indices"):
        accumulator.update(torch.zeros(2, 3), torch.tensor([0.0, 1.0]))
    assert accumulator.num_samples == 0  # nothing half-added
    with pytest.raises(DataError, match="one training count per class"):
        hand_example().compute(train_class_counts=[1, 2])
    with pytest.raises(ValueError, match="num_classes"):
        MetricAccumulator(0)
    with pytest.raises(ValueError, match="topk"):
        MetricAccumulator(3, topk=(0,))


def test_shot_group_boundaries():
    # > 100 many; 20..100 (inclusive) medium; < 20 few -- Liu et al. 2019.
    groups = shot_groups([101, 100, 20, 19, 0, 5000])
    assert groups == {"many": [0, 5], "medium": [1, 2], "few": [3, 4]}
    assert shot_groups(torch.tensor([11, 10, 4]), many=10, few=5) == {
        "many": [0],
        "medium": [1],
        "few": [2],
    }
    assert shot_groups([]) == {"many": [], "medium": [], "few": []}


def test_shot_groups_reject_bad_arguments():
    with pytest.raises(DataError, match="class 1"):
        shot_groups([5, -1])
    with pytest.raises(ValueError, match="few"):
        shot_groups([5], many=10, few=20)


def test_format_accuracy():
    assert format_accuracy(None) == "n/a"
    assert format_accuracy(12.3456, digits=1) == "12.3"


def test_without_a_confusion_matrix_the_state_is_O_of_C():
    # iNaturalist 2018: 8,142 classes. The default state is three small vectors; the
    # confusion matrix (8,142^2 int64 = 506 MiB) is neither kept nor reported.
    num_classes = 8142
    accumulator = MetricAccumulator(num_classes)
    generator = torch.Generator().manual_seed(4)
    for _ in range(3):
        logits = torch.randn(64, num_classes, generator=generator)
        targets = torch.randint(0, num_classes, (64,), generator=generator)
        logits[:16, :] = -1.0
        logits[torch.arange(16), targets[:16]] = 1.0  # 16 sure hits per batch
        accumulator.update(logits, targets)
    state = accumulator.state_tensors()
    assert "confusion" not in state
    assert sum(t.numel() * t.element_size() for t in state.values()) == (2 * num_classes + 2) * 8  # ~130 KB
    result = accumulator.compute()
    assert "confusion_matrix" not in result
    assert result["num_samples"] == 192 and sum(result["per_class_total"]) == 192
    assert sum(result["per_class_correct"]) >= 48
    assert result["top1"] == pytest.approx(100.0 * sum(result["per_class_correct"]) / 192)
    assert len(json.dumps(result)) < 400_000  # O(C) JSON, not a million-line matrix
