"""Hugging Face model ids (`facebook/vit-mae-base`, timm's `hf-hub:timm/vit_base_patch16_224.mae`) read
from the local Hugging Face cache, offline: nothing here touches the network.

The cache is `HF_HUB_CACHE`, else `HF_HOME/hub`, else `~/.cache/huggingface/hub`; a model `org/name` lives
in `models--org--name/`, whose `refs/main` names the snapshot `snapshots/<hash>/` that holds its files.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from .safe_load import CheckpointError

TIMM_PREFIX = "hf-hub:"
MODEL_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# timm's hub repos: weights beside a config.json that is timm's, not a transformers one
TIMM_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


def hub_cache() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]) / "hub"
    return Path.home() / ".cache" / "huggingface" / "hub"


def resolve_hub_name(name: str) -> Path:
    """The cached snapshot of the model `name` (a directory; for a timm `hf-hub:` id, its weights file).
    A name that is not a model id, or not in the cache, is a one-line CheckpointError."""
    repo = name.removeprefix(TIMM_PREFIX)
    if not MODEL_ID.fullmatch(repo):
        raise CheckpointError(f"{name}: no such file or directory")
    cache = hub_cache()
    snapshot = _snapshot(cache / ("models--" + repo.replace("/", "--")))
    if snapshot is None:
        raise CheckpointError(f"{name}: no such file or directory, nor a Hugging Face model in the cache {cache} "
                              f"(fetch it with `huggingface-cli download {repo}`, or set HF_HUB_CACHE)")
    if name.startswith(TIMM_PREFIX):
        weights = next((snapshot / w for w in TIMM_WEIGHTS if (snapshot / w).is_file()), None)
        if weights is None:
            raise CheckpointError(f"{name}: the cached snapshot {snapshot} has no {' or '.join(TIMM_WEIGHTS)}")
        return weights
    return snapshot


def _snapshot(repo_dir: Path) -> Path | None:
    """The snapshot `refs/main` names, else the only one there is."""
    ref = repo_dir / "refs" / "main"
    if ref.is_file():
        snapshot = repo_dir / "snapshots" / ref.read_text().strip()
        return snapshot if snapshot.is_dir() else None
    snapshots = sorted((repo_dir / "snapshots").glob("*")) if (repo_dir / "snapshots").is_dir() else []
    return snapshots[0] if len(snapshots) == 1 else None
