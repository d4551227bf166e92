"""The one interface every evaluator talks to (DESIGN.md: "one interface, two families").

State contract: `prefill` and `step` consume the state they are given (a Transformer's KV cache is
extended in place), so a caller that wants to reuse a state — a shared prompt prefix, say — keeps a
`copy_state` of it, or forks it for several continuations with `repeat_state`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

import torch

from rwkvbench.models.tokenizer import Tokenizer

LogitsMode = Literal["all", "last", "none"]


class SequenceModel(ABC):
    name: str
    family: str  # "rwkv" | "transformer"
    tokenizer: Tokenizer
    # What the weights are: "PATH#HASH", "hub:REPO@REVISION" or "random:seed=N" (set by load_model).
    checkpoint: str = "unknown"

    @abstractmethod
    def prefill(self, ids: torch.Tensor, state: Any = None, *, logits: LogitsMode = "all"):
        """Feed a whole chunk (B, T) at once. Returns float32 logits (B, T, V), (B, V) for
        logits="last" or None for logits="none", and the state after the chunk."""

    @abstractmethod
    def step(self, ids: torch.Tensor, state: Any):
        """Feed one token per sequence (B,). Returns float32 logits (B, V) and the new state."""

    @abstractmethod
    def state_nbytes(self, state: Any) -> int:
        """Bytes the model carries between tokens (recurrent state or KV cache)."""

    @abstractmethod
    def copy_state(self, state: Any) -> Any:
        """An independent copy: feeding the copy leaves the original untouched."""

    @abstractmethod
    def repeat_state(self, state: Any, n: int) -> Any:
        """Fork each sequence's state n times along the batch: (B, ...) -> (B*n, ...), each row
        repeated n times consecutively, like torch.repeat_interleave. The original is untouched."""

    @property
    @abstractmethod
    def vocab_size(self) -> int:
        """Rows of the output head (may exceed the tokenizer's vocabulary: padding)."""

    @property
    @abstractmethod
    def n_params(self) -> int: ...

    @property
    @abstractmethod
    def dtype(self) -> torch.dtype: ...

    @property
    @abstractmethod
    def device(self) -> torch.device: ...

    def prepare_decode(self, state: Any, max_new_tokens: int) -> Any:
        """The state in the form this model decodes fastest from, for up to max_new_tokens steps (a
        static cache, graph-captured buffers, ...). Same values; default: unchanged. Like prefill and
        step, it consumes the state it is given (keep a copy_state to reuse it)."""
        return state

    @property
    def decode_config(self) -> str:
        """How `step` runs after `prepare_decode` (recorded with efficiency results)."""
        return "eager"

    @property
    def prefill_config(self) -> str:
        """How `prefill` runs (recorded with efficiency results)."""
        return "eager"

    @property
    def weights_nbytes(self) -> int:
        """Bytes of the model's parameters on its device."""
        return 0

    @property
    def max_context(self) -> int | None:
        """Longest input the model can condition on; None when unbounded (a recurrent state)."""
        return None

    def describe(self) -> dict:
        """The identifying columns of a results row."""
        return {
            "model": self.name,
            "family": self.family,
            "n_params": self.n_params,
            "dtype": str(self.dtype).removeprefix("torch."),
            "device": self.device.type,
            "device_name": device_name(self.device),
            "checkpoint": self.checkpoint,
        }

    def as_ids(self, ids) -> torch.Tensor:
        """Token ids (list, list of lists or tensor) as a (B, T) long tensor on the model's device."""
        t = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        return t.unsqueeze(0) if t.dim() == 1 else t


def device_name(device: torch.device) -> str:
    """The GPU's name (e.g. "NVIDIA H200") or the CPU's model."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from rwkvbench.results import cpu_name

    return cpu_name()


def count_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_bytes(module: torch.nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())
