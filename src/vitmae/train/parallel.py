"""How the engine spreads training over processes: the parallel strategy.

The engine asks a strategy, never torch.distributed's wrappers, for what differs between single-process,
data-parallel and sharded training:

- `wrap(model)`: the module training runs through, made before the optimizer (a sharding strategy
  replaces the parameters);
- `no_sync()`: the context of an accumulation micro-batch that does not synchronise gradients yet;
- `clip_grad_norm(model, max_norm)`;
- `writes_checkpoints`: whether this rank writes (rank 0 of a replicated model; every rank of a sharded
  one, its own shard);
- `save` / `load`: a checkpoint of the model and the train state, and reading one back;
- `optimizer_state` / `load_optimizer_state`, `load_model_state`: the states in the form this strategy
  saves them;
- `main_rank_model()`: a context every rank enters, inside which rank 0's `trainer.model` can run a
  forward pass alone (the evaluations and pictures only rank 0 makes); `save_weights`, collective too;
- `reshards`: whether a checkpoint resumes on another number of processes;
- `name`, for the run's summary.

`none` (one process), `ddp` (DistributedDataParallel, every rank a full replica) and `fsdp` (FSDP2's
`fully_shard`: parameters, gradients and optimizer state sharded over the ranks, checkpoints written by
every rank through torch.distributed.checkpoint) are here; `select_strategy` picks one.
"""
from __future__ import annotations

import contextlib
import copy
import shutil
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError
from ..interop.safe_load import CheckpointError, check_fits
from ..interop.sharded import is_sharded, load_sharded_into, save_sharded
from ..interop.vitmae_format import save_sharded_record, write_manifest
from ..model.flat_names import flat_name, flat_state_dict, from_flat, load_flat_state_dict
from .config import PARALLEL_STRATEGIES
from .checkpoint import (cleaned_up_on_failure, load_checkpoint, publish_checkpoint, read_train_state, save_checkpoint,
                         save_weights, state_bytes, write_train_state)
from .distributed import DistInfo, barrier

Loaded = tuple[dict[str, Tensor], dict[str, Any], Path, list[str]]  # weights, train state, its path, notes


class Strategy:
    """Single-process training: the model as it is, a full checkpoint written by the one process."""

    name = "none"
    reshards = False
    param_dtype: torch.dtype | None = None  # the dtype a sharding strategy gathers parameters in (None: as stored)

    def __init__(self, dist: DistInfo, device: torch.device):
        self.dist, self.device = dist, device

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def no_sync(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> Tensor:
        return nn.utils.clip_grad_norm_(model.parameters(), max_norm)

    @property
    def writes_checkpoints(self) -> bool:
        return self.dist.is_main

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def save(self, run_dir: Path, name: str, model: nn.Module, train_state: dict[str, Any], keep: int) -> Path:
        return save_checkpoint(run_dir, name, model, train_state, keep)

    def load(self, path: str | Path) -> Loaded:
        return load_checkpoint(path)

    def load_model_state(self, model: nn.Module, weights: dict[str, Tensor], where: str) -> None:
        check_fits(where, weights, flat_state_dict(model))  # a checkpoint's weights have the flat names
        load_flat_state_dict(model, weights)

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        if "sharded" in state:  # a sharded run's, read whole: by parameter name
            set_flat_optimizer_state(model, optimizer, {**state["sharded"], **state["tensors"]})
        else:
            optimizer.load_state_dict(state)

    def main_rank_model(self) -> contextlib.AbstractContextManager[nn.Module | None]:
        """A context every rank enters around what rank 0 alone runs the model for; it gives rank 0 a
        model to run in place of the trained one, or None where the trained one runs alone."""
        return contextlib.nullcontext()

    def save_weights(self, model: nn.Module, path: Path) -> None:
        """Weights alone (the best checkpoint), written by rank 0; every rank calls it."""
        if self.dist.is_main:
            save_weights(model, path)

    def close(self) -> None:
        """Release what the strategy set up for the run (a process group of its own)."""


class DDPStrategy(Strategy):
    """Data parallel: every rank holds the whole model; gradients are averaged in backward (except in
    `no_sync`); rank 0 writes the full checkpoint, which every rank reads back."""

    name = "ddp"

    def wrap(self, model: nn.Module) -> nn.Module:
        self.wrapped = DistributedDataParallel(model, device_ids=[self.device.index]
                                               if self.device.type == "cuda" else None)
        return self.wrapped

    def no_sync(self) -> contextlib.AbstractContextManager:
        return self.wrapped.no_sync()


class FSDPStrategy(Strategy):
    """Fully sharded data parallel (FSDP2): each shard unit (the transformer blocks) and then the root is
    `fully_shard`ed, so every rank holds 1/world of each parameter, its gradient and its AdamW state, and
    gathers a unit's parameters only while it runs. Mixed precision is FSDP's: parameters gathered in the
    run's low precision, gradients reduced in fp32. Every rank writes its shards of a checkpoint (no
    gather onto rank 0), and a checkpoint resumes on any number of processes."""

    name = "fsdp"
    reshards = True

    def __init__(self, dist: DistInfo, device: torch.device, units: Callable[[nn.Module], list[nn.Module]] | None = None,
                 reshard_after_forward: bool = True, cpu_offload: bool = False,
                 param_dtype: torch.dtype | None = None):
        super().__init__(dist, device)
        self.units, self.reshard_after_forward, self.cpu_offload = units, reshard_after_forward, cpu_offload
        self.param_dtype = param_dtype
        self._own_group = False
        self._checkpoint: Path | None = None  # the sharded checkpoint `load` found, read by the load_* calls
        self._replica: nn.Module | None = None

    @property
    def writes_checkpoints(self) -> bool:
        return True

    def wrap(self, model: nn.Module) -> nn.Module:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

        if not dist.is_initialized():  # one process: FSDP still needs a process group (of one)
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo", store=dist.HashStore(),
                                    rank=0, world_size=1)
            self._own_group = True
        if self.dist.is_main:  # rank 0's whole copy, for what it evaluates alone (main_rank_model)
            self._replica = copy.deepcopy(model).cpu()
        mesh = init_device_mesh(self.device.type, (self.dist.world_size,))
        policy = MixedPrecisionPolicy(param_dtype=self.param_dtype, reduce_dtype=torch.float32
                                      if self.param_dtype is not None else None)
        options = {"mesh": mesh, "mp_policy": policy,
                   "offload_policy": CPUOffloadPolicy() if self.cpu_offload else OffloadPolicy()}
        for unit in self.units(model) if self.units else []:
            fully_shard(unit, reshard_after_forward=self.reshard_after_forward, **options)
        fully_shard(model, reshard_after_forward=False, **options)  # the root is gathered again at once
        # FSDP warns of views among a forward's outputs, in case a caller changes one in place; none does.
        # Set here, where it applies (a test's warning capture would drop a filter set at import); the same
        # filter set again replaces itself.
        warnings.filterwarnings("ignore", message="FSDP2-wrapped module .* returned a view tensor")
        self.wrapped = model
        return model

    @contextlib.contextmanager
    def no_sync(self) -> Iterator[None]:
        self.wrapped.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            self.wrapped.set_requires_gradient_sync(True)

    def clip_grad_norm(self, model: nn.Module, max_norm: float) -> Tensor:
        from torch.distributed.tensor import DTensor

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        total = nn.utils.get_total_norm(grads, foreach=True)
        if isinstance(total, DTensor):  # each rank's norm is of its shard: the whole one is a reduction
            total = total.full_tensor()
        nn.utils.clip_grads_with_norm_(model.parameters(), max_norm, total, foreach=True)
        return total

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """{"sharded": the hyperparameters of each parameter's group, "tensors": AdamW's state}, by
        parameter name (module path); the tensors are this rank's shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        state = get_optimizer_state_dict(model, optimizer, options=StateDictOptions(flatten_optimizer_state_dict=True))
        return {"sharded": {k: v for k, v in state.items() if not isinstance(v, Tensor)},
                "tensors": {k: v for k, v in state.items() if isinstance(v, Tensor)}}

    def save(self, run_dir: Path, name: str, model: nn.Module, train_state: dict[str, Any], keep: int) -> Path:
        """Every rank writes its shards into the new checkpoint; rank 0 then adds the record, the train state
        (the optimizer's tensors left to the shards) and the manifest, and publishes it."""
        root = Path(run_dir) / "checkpoints"
        tmp = root / f".tmp-{name}"
        if self.dist.is_main:
            root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        barrier(self.dist)
        shards = {"model": flat_state_dict(model), "optimizer": train_state["optimizer"]["tensors"]}
        with cleaned_up_on_failure(root, tmp, name, needed=state_bytes(shards)):  # a DTensor counts whole
            save_sharded(tmp, shards)
            if self.dist.is_main:
                save_sharded_record(model, tmp)
                sharded_state = {**train_state, "optimizer": {"sharded": train_state["optimizer"]["sharded"]}}
                write_train_state(tmp, sharded_state)
                write_manifest(tmp)  # last: a checkpoint with a manifest is complete
        if self.dist.is_main:
            publish_checkpoint(root, tmp, name, keep)
        barrier(self.dist)
        return root / name

    def load(self, path: str | Path) -> Loaded:
        self._checkpoint = None
        return load_checkpoint(path, read=self._read)

    def _read(self, ckpt: Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
        """A sharded checkpoint's train state (its shards are read into the sharded model and optimizer
        later); a whole one's weights too, each rank taking its shards of them."""
        if not is_sharded(ckpt):
            return load_checkpoint(ckpt)[:2]
        state = read_train_state(ckpt)
        self._checkpoint = ckpt
        return {}, state

    def load_model_state(self, model: nn.Module, weights: dict[str, Tensor], where: str) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        if self._checkpoint is not None:
            state = flat_state_dict(model)
            load_sharded_into(self._checkpoint, {"model": state})
            return
        check_fits(where, weights, flat_state_dict(model))
        set_model_state_dict(model, from_flat(model, weights), options=StateDictOptions(full_state_dict=True))

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                             state: dict[str, Any]) -> None:
        if self._checkpoint is not None:  # this rank's shards of the saved tensors, the saved hyperparameters
            tensors = self.optimizer_state(model, optimizer)["tensors"]
            load_sharded_into(self._checkpoint, {"optimizer": tensors})
            set_flat_optimizer_state(model, optimizer, {**state["sharded"], **tensors})
        else:  # a replicated run's optimizer.state_dict(): by position, named here, each rank taking its shards
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

            set_optimizer_state_dict(model, optimizer, named_optimizer_state(model, optimizer, state),
                                     options=StateDictOptions(full_state_dict=True))

    @contextlib.contextmanager
    def main_rank_model(self) -> Iterator[nn.Module | None]:
        """Every rank gathers the whole weights (a collective); rank 0 loads them into its whole copy, which
        the context gives it (None elsewhere). The copy lives in host memory between uses."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(self.wrapped, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not self.dist.is_main:
            yield None
            return
        replica = self._replica
        replica.load_state_dict(state)
        replica.to(self.device).train(self.wrapped.training)
        try:
            yield replica
        finally:
            replica.cpu()

    def save_weights(self, model: nn.Module, path: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if model is not self.wrapped:  # an unsharded model (an average of the weights, say)
            return super().save_weights(model, path)
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.dist.is_main:
            save_weights(model, path, state={flat_name(model, k): v for k, v in state.items()})

    def close(self) -> None:
        import torch.distributed as dist

        if self._own_group and dist.is_initialized():
            dist.destroy_process_group()
        self._own_group = False


def named_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer,
                          state: dict[str, Any]) -> dict[str, Any]:
    """A replicated run's `optimizer.state_dict()` (parameters by position, in the order of `optimizer`'s
    groups) with the parameters named by module path, as torch.distributed.checkpoint's state dicts are."""
    names = {id(p): name for name, p in model.named_parameters()}
    params = [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
    if len(params) != sum(len(group["params"]) for group in state["param_groups"]):
        raise CheckpointError("the checkpoint's optimizer state has another number of parameters than this model")
    groups = [{**saved, "params": [params[index] for index in saved["params"]]} for saved in state["param_groups"]]
    return {"state": {params[int(index)]: values for index, values in state["state"].items()}, "param_groups": groups}


def set_flat_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load torch's flattened, by-name optimizer state (`state.NAME.exp_avg`, `param_groups.NAME.lr`; this
    rank's shards under fsdp, whole tensors otherwise) into `optimizer`."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(flatten_optimizer_state_dict=True))


def select_strategy(dist: DistInfo, device: torch.device, name: str = "ddp",
                    units: Callable[[nn.Module], list[nn.Module]] | None = None, reshard_after_forward: bool = True,
                    cpu_offload: bool = False, param_dtype: torch.dtype | None = None) -> Strategy:
    """`fsdp` when asked for (on any number of processes); else `ddp` when the run has several processes,
    `none` otherwise."""
    if name not in PARALLEL_STRATEGIES:
        raise ConfigError(f"--strategy {name}: one of {', '.join(PARALLEL_STRATEGIES)}")
    if name == "fsdp":
        if param_dtype == torch.float16:  # the gradient scaler would need FSDP1's sharded one
            raise ConfigError("--strategy fsdp trains in bf16 or fp32: use --precision bf16")
        return FSDPStrategy(dist, device, units, reshard_after_forward, cpu_offload, param_dtype)
    if cpu_offload:
        raise ConfigError("--cpu-offload is FSDP's: add --strategy fsdp")
    return DDPStrategy(dist, device) if dist.enabled else Strategy(dist, device)
