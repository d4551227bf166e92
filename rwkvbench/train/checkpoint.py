"""Resumable training state: weights, optimizer, step and the run's running sums, written atomically
(temporary file + rename), so a run killed at any moment resumes from its last checkpoint. Nothing in a
run draws random numbers after initialisation (the data order is a function of the seed and the step),
so a resumed run takes exactly the steps the uninterrupted run would have taken."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rwkvbench.errors import ConfigError


def save_checkpoint(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                    identity: dict, progress: dict) -> None:
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    torch.save({"model": module.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
                "identity": identity, "progress": progress}, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, module: torch.nn.Module, optimizer: torch.optim.Optimizer, identity: dict):
    """Restore module and optimizer in place; returns (step, progress). The checkpoint must have been
    written by a run with the same identity (family, shape, data, schedule...)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    saved = state["identity"]
    if saved != identity:
        diff = [f"{k}: {saved.get(k)!r} there, {identity.get(k)!r} now"
                for k in sorted(set(saved) | set(identity)) if saved.get(k) != identity.get(k)]
        raise ConfigError(f"{path}: written by a different run ({'; '.join(diff[:3])}); delete it or use another out_dir")
    module.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    return state["step"], state["progress"]
