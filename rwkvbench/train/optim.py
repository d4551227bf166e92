"""AdamW with per-group learning-rate scales, and the schedule: linear warm-up, then cosine decay to a
floor (both families; each family's recipe sets betas, epsilon, weight decay, warm-up and floor)."""

from __future__ import annotations

import math

import torch

from rwkvbench.train.families import Trainable


def make_optimizer(model: Trainable, recipe, lr: float, device: torch.device) -> torch.optim.AdamW:
    groups = model.param_groups(float(recipe.weight_decay), dict(recipe.get("lr_scale") or {}))
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(recipe.betas), eps=float(recipe.eps),
                             fused=device.type == "cuda")


def warmup_steps(total_steps: int, warmup: float) -> int:
    return max(1, round(warmup * total_steps)) if warmup > 0 else 0


def lr_factor(step: int, total_steps: int, warmup: float, min_ratio: float) -> float:
    """The schedule at `step` (0-based) as a fraction of the peak learning rate."""
    w = warmup_steps(total_steps, warmup)
    if step < w:
        return (step + 1) / w
    progress = min(1.0, (step - w) / max(1, total_steps - w))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
