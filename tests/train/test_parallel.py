"""The parallel-strategy contract: whatever the strategy, one optimizer step on a batch split over the
processes and over accumulation micro-batches is the step one process takes on the whole batch, and
its checkpoint (a sharded one too) reads back whole into a fresh model and optimizer."""
import contextlib
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from vitmae.model import MaskedAutoencoder, ModelConfig
from vitmae.train.checkpoint import TRAIN_STATE_KEYS
from vitmae.train.distributed import DistInfo
from vitmae.families.masked import mae_shard_units
from vitmae.train.parallel import DDPStrategy, FSDPStrategy, Strategy, select_strategy

CONFIG = ModelConfig(img_size=16, patch_size=4, in_chans=1, embed_dim=16, depth=1, num_heads=2,
                     decoder_embed_dim=16, decoder_depth=1, decoder_num_heads=2)
BATCH, ACCUM, CLIP = 8, 2, 0.05


def model_and_batch() -> tuple[MaskedAutoencoder, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = MaskedAutoencoder(CONFIG).double()
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(BATCH, 1, 16, 16, generator=generator, dtype=torch.float64)
    return model, images, torch.rand(BATCH, 16, generator=generator)


def train_step(strategy: Strategy, rank: int, world: int, run_dir) -> torch.optim.Optimizer:
    """One AdamW step on this rank's share of the batch, in ACCUM micro-batches, clipped; then a save."""
    model, images, noise = model_and_batch()
    wrapped = strategy.wrap(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    share = slice(rank * BATCH // world, (rank + 1) * BATCH // world)
    micro_batches = list(zip(images[share].chunk(ACCUM), noise[share].chunk(ACCUM)))
    for i, (x, z) in enumerate(micro_batches):
        with contextlib.nullcontext() if i == ACCUM - 1 else strategy.no_sync():
            (wrapped(x, noise=z).loss / ACCUM).backward()
        if i < ACCUM - 1 and strategy.name == "ddp":  # not synchronised yet: each rank holds its own gradient
            grad = model.decoder.decoder_pred.weight.grad
            grads = [torch.zeros_like(grad) for _ in range(world)]
            dist.all_gather(grads, grad)
            assert not torch.equal(grads[0], grads[1])
    strategy.clip_grad_norm(model, CLIP)
    optimizer.step()
    state = {**dict.fromkeys(TRAIN_STATE_KEYS, {}), "optimizer": strategy.optimizer_state(model, optimizer)}
    if strategy.writes_checkpoints:
        strategy.save(run_dir, "step-00000001", model, state, keep=0)
    return optimizer


def ddp_rank(rank: int, world: int, run_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{run_dir}/store", rank=rank, world_size=world)
    try:
        strategy = select_strategy(DistInfo(rank, world), torch.device("cpu"))
        assert isinstance(strategy, DDPStrategy) and strategy.name == "ddp"
        assert strategy.writes_checkpoints == (rank == 0)  # a replicated model: one writer
        train_step(strategy, rank, world, run_dir)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def fsdp_rank(rank: int, world: int, run_dir: str) -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    dist.init_process_group("gloo", init_method=f"file://{run_dir}/store", rank=rank, world_size=world)
    try:
        strategy = select_strategy(DistInfo(rank, world), torch.device("cpu"), "fsdp", mae_shard_units)
        assert isinstance(strategy, FSDPStrategy) and strategy.writes_checkpoints  # every rank its shard
        optimizer = train_step(strategy, rank, world, run_dir)
        # each rank holds its share of every parameter and of its AdamW state, as local DTensor shards
        trained = [p for p in optimizer.param_groups[0]["params"] if p.requires_grad]
        local = sum(p.to_local().numel() for p in trained)
        moments = sum(optimizer.state[p]["exp_avg"].to_local().numel() for p in trained)
        total = sum(p.numel() for p in trained)
        assert local == moments and abs(local - total / world) <= 0.05 * total, (local, moments, total)
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_the_strategy_follows_the_process_group():
    assert select_strategy(DistInfo(), torch.device("cpu")).name == "none"
    assert select_strategy(DistInfo(1, 2), torch.device("cpu")).name == "ddp"
    assert select_strategy(DistInfo(), torch.device("cpu"), "fsdp").name == "fsdp"
    assert not Strategy.reshards and not DDPStrategy.reshards and FSDPStrategy.reshards


@pytest.mark.parametrize("strategy,world", [("none", 1), ("ddp", 2), ("fsdp", 1), ("fsdp", 2)])
def test_a_step_split_over_processes_and_micro_batches_is_the_whole_batch_step(tmp_path, strategy, world):
    reference = train_step(Strategy(DistInfo(), torch.device("cpu")), 0, 1, tmp_path / "reference")
    if strategy == "none":
        run = tmp_path / "reference"
    else:
        run = tmp_path / "run"
        run.mkdir()
        mp.spawn(ddp_rank if strategy == "ddp" else fsdp_rank, args=(world, str(run)), nprocs=world, join=True)
    if strategy == "fsdp":  # every rank wrote its shard of the one checkpoint
        shards = sorted(p.name for p in (run / "checkpoints" / "step-00000001" / "sharded").glob("*.distcp"))
        assert len(shards) == world
    loader = Strategy(DistInfo(), torch.device("cpu"))  # one process reads a sharded checkpoint whole
    weights, state, _, notes = loader.load(run)
    assert notes == [] and len(list((run / "checkpoints").glob("step-*"))) == 1
    model = MaskedAutoencoder(CONFIG).double()
    loader.load_model_state(model, weights, "the test's checkpoint")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    loader.load_optimizer_state(model, optimizer, state["optimizer"])
    for p, q in zip(reference.param_groups[0]["params"], model.parameters()):
        assert torch.allclose(p, q, atol=1e-12, rtol=0)
        assert (p in reference.state) == (q in optimizer.state) == p.requires_grad
        for moment in ("exp_avg", "exp_avg_sq") if p.requires_grad else ():  # the clipped gradient it saw
            assert torch.allclose(reference.state[p][moment], optimizer.state[q][moment], atol=1e-12, rtol=0)
