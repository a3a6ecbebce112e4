"""Distributed training on the CPU: two gloo processes launched by torchrun.

Checks the three promises of the distributed engine: every rank ends with the same
parameters, the ranks' sampler shards together are the single-process index stream,
and the distributed evaluation equals a single-process evaluation of the same model.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lttoolkit.engine.checkpoint import load_checkpoint
from lttoolkit.engine.config import load_config
from lttoolkit.engine.datasets import build_datasets
from lttoolkit.engine.evaluate import load_model
from lttoolkit.engine.trainer import evaluate_model
from lttoolkit.registry import SAMPLERS

WORKER = Path(__file__).parent / "helpers" / "dist_worker.py"


@pytest.fixture(scope="module")
def two_rank_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], list[dict]]:
    tmp = tmp_path_factory.mktemp("ddp")
    overrides = [
        "model.backbone=resnet20_cifar",
        "data.batch_size=16",
        "data.test_batch_size=64",
        "train.epochs=2",
        "train.max_steps_per_epoch=3",
        "optim.warmup_epochs=0",
        f"output_dir={tmp / 'runs'}",
        "name=ddp",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LTTK_DISABLE_PLUGINS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           str(WORKER), str(tmp), *overrides]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    return tmp, overrides, ranks


def test_ranks_end_with_identical_parameters(two_rank_run) -> None:
    _, _, (rank0, rank1) = two_rank_run
    assert rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["state"].keys() == rank1["state"].keys()
    # Parameters through DDP's gradient averaging; buffers (BN running statistics)
    # because evaluation broadcasts rank 0's before it runs.
    for key in rank0["state"]:
        torch.testing.assert_close(rank0["state"][key], rank1["state"][key], rtol=0, atol=0, msg=key)
    assert rank0["run_dir"] == rank1["run_dir"]


def test_rank_shards_together_are_the_single_process_stream(two_rank_run) -> None:
    _, overrides, (rank0, rank1) = two_rank_run
    cfg = load_config(None, overrides)
    data = build_datasets(cfg.data, seed=cfg.seed)
    for stream, (name, seed_offset) in enumerate((("instance", 0), ("reversed", 1000))):
        single = SAMPLERS.build(name, labels=data.train.labels, seed=cfg.seed + seed_offset)
        single.set_epoch(0)
        full = [int(i) for i in single]
        shard0, shard1 = rank0["streams"][stream], rank1["streams"][stream]
        assert len(shard0) == len(shard1)
        interleaved = [i for pair in zip(shard0, shard1) for i in pair]
        # the padded tail (if any) wraps around to the start of the stream
        assert interleaved[: len(full)] == full


def test_distributed_evaluation_equals_single_process(two_rank_run) -> None:
    tmp, overrides, (rank0, rank1) = two_rank_run
    assert rank0["evaluation"] == rank1["evaluation"]
    state = load_checkpoint(tmp / "runs" / "ddp" / "last.pt")
    model, _ = load_model(state)
    for key, value in rank0["state"].items():  # last.pt holds the final parameters
        torch.testing.assert_close(model.state_dict()[key], value, rtol=0, atol=0)
    cfg = load_config(None, overrides)
    data = build_datasets(cfg.data, seed=cfg.seed)
    single = evaluate_model(model, data.test, data.class_counts, batch_size=64)
    assert single["num_samples"] == rank0["evaluation"]["num_samples"] == len(data.test)
    assert single["per_class_correct"] == rank0["evaluation"]["per_class_correct"]
    assert single["per_class_total"] == rank0["evaluation"]["per_class_total"]
    assert single["top1"] == pytest.approx(rank0["evaluation"]["top1"])
    assert single["top5"] == pytest.approx(rank0["evaluation"]["top5"])


@pytest.mark.slow
def test_two_nodes_with_a_c10d_rendezvous_train_as_one_job(two_rank_run, tmp_path: Path) -> None:
    # docs/distributed.md: the same torchrun command on every node, a c10d rendezvous. Two local
    # "nodes" of one process each must train exactly as the two-process single-node run.
    import socket

    _, overrides, (reference, _) = two_rank_run
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "LTTK_DISABLE_PLUGINS": "1"}
    nodes = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
             f"--node_rank={rank}", "--rdzv_backend=c10d", f"--rdzv_endpoint=127.0.0.1:{port}",
             "--rdzv_id=lttk-test", str(WORKER), str(tmp_path),
             *[o for o in overrides if not o.startswith("output_dir=")], f"output_dir={tmp_path / 'runs'}"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(out[-2000:] for out in outputs)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert {r["world_size"] for r in ranks} == {2}
    for key, value in reference["state"].items():
        for result in ranks:
            torch.testing.assert_close(result["state"][key], value, rtol=0, atol=0, msg=key)
