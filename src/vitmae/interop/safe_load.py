"""Reading PyTorch pickles without running code from them.

`torch.load(weights_only=True)` only rebuilds tensors and plain containers; we allow, in addition, the one
class an official MAE training checkpoint (`checkpoint-N.pth`) holds: its `args`, an `argparse.Namespace`.
Anything else a pickle asks for is refused before it can run.
"""
from __future__ import annotations

import argparse
import pickle
import pickletools
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

SAFE_GLOBALS = [argparse.Namespace]


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or does not fit: a user error, reported in one line."""


class UnsafeCheckpointError(CheckpointError):
    """A pickle that would run code (beyond rebuilding tensors and containers) to load."""


def name_list(names: list, n: int = 5) -> str:
    """The first few of `names`, and how many there are, for a one-line message."""
    more = f", ... ({len(names)} in all)" if len(names) > n else ""
    return ", ".join(map(str, names[:n])) + more


def check_fits(what: str, state: dict, expected: dict, optional=lambda key: False) -> None:
    """Raise a CheckpointError naming every missing (unless `optional`), unexpected and mis-shaped key."""
    missing = [k for k in expected if k not in state and not optional(k)]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(expected[k].shape)}"
             for k in state if k in expected and state[k].shape != expected[k].shape]
    problems = [f"{label} ({len(keys)}): {name_list(keys)}" for label, keys in
                (("missing", missing), ("unexpected", unexpected), ("wrong shape, file vs model", wrong)) if keys]
    if problems:
        raise CheckpointError(f"{what}: {'; '.join(problems)}")


def load_torch_file(path: str | Path) -> Any:
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS), warnings.catch_warnings():
            # a plain pickle of protocol 4+ draws a warning, then the error we report
            warnings.filterwarnings("ignore", "Detected pickle protocol")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        name = _refused_global(path, err)
        if name:
            raise UnsafeCheckpointError(
                f"{path}: refused to load: unpickling it would call {name}, which is not allowed in a "
                f"weights file; it was not executed"
            ) from None
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_reason(err)})") from None
    # torch's errors for a damaged file (torch.load hands `*.safetensors` names to safetensors); a damaged
    # pickle stream fails in its unpickler with whatever its opcodes lead to (IndexError, TypeError, ...)
    except Exception as err:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({_reason(err)})") from None


def _reason(err: Exception) -> str:
    """The informative line of one of torch's (long) load errors."""
    lines = [line.strip() for line in str(err).splitlines()
             if line.strip() and not line.strip().startswith("Check the documentation")]
    return f"{type(err).__name__}: {lines[-1][:160] if lines else ''}"


def _refused_global(path: Path, err: Exception) -> str | None:
    """The global torch refused, as its message names it; torch gives up on a plain pickle of protocol 4+
    before it reaches any global, so there we read the pickle's opcodes ourselves."""
    m = re.search(r"GLOBAL ([\w.]+)", str(err))
    if m:
        return m.group(1)
    if zipfile.is_zipfile(path):
        return None
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS} | {"collections.OrderedDict"}
    try:
        return next((g for g in _pickle_globals(path.read_bytes())
                     if g not in allowed and not g.startswith("torch.")), None)
    except ValueError:  # not a pickle at all
        return None


def _pickle_globals(data: bytes):
    """The globals a pickle names, read from its opcodes (nothing is imported or called): GLOBAL carries
    its name; STACK_GLOBAL takes the two strings pushed before it, which may come from the memo."""
    strings, memo, top = [], {}, None  # top: the string on top of the stack, if the top is a string
    for op, arg, _ in pickletools.genops(data):
        if op.name in ("MEMOIZE", "BINPUT", "LONG_BINPUT", "PUT"):
            memo[len(memo) if op.name == "MEMOIZE" else arg] = top
            continue
        if op.name in ("BINGET", "LONG_BINGET", "GET"):
            top = memo.get(arg)
        elif "UNICODE" in op.name:
            top = arg
        else:
            top = None
            if op.name == "GLOBAL":
                yield arg.replace(" ", ".")
            elif op.name == "STACK_GLOBAL":
                yield ".".join(strings[-2:])
        if top is not None:
            strings.append(top)
