"""What the trainer needs from a model family, and the registry of families (`rwkv4`, `neox`).

A family builds a `Trainable` from its recipe (conf/train/family/<name>.yaml), a shape and a vocabulary
size. The trainer only uses this interface: it never branches on the family.

Compute per token (the FLOP formulas, written once here):
* `compute_per_token`: 6 x (parameters in weight matrices, the embedding included) + attention. For
  RWKV-4 that is the paper's 6(2VD + 13D^2 L) (arXiv 2305.13048, §4.2: WKV's O(D) per token is left out,
  as the paper does); for GPT-NeoX 6(2VD + 13D^2 L) + 6 L D T, the last term the causal attention scores
  and their weighted sum (4 T D per token per layer forward for the full T x T square, half of it
  causal, times three for forward and backward). The scaling fit's "total" compute.
* `compute_nonembedding_per_token`: the same without the embedding and the head (Kaplan et al.'s
  C = 6 N T with N the non-embedding parameters; attention kept). The fit's "non-embedding" compute.
* `matmul_flops_per_token`: the FLOPs actually executed, for MFU: the embedding is a lookup, not a
  product, so 6(VD + 13D^2 L) (+ 6 L D T for GPT-NeoX).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from rwkvbench.errors import ConfigError

FAMILIES: dict[str, Callable] = {}


def register_family(name: str, cuda_extension: bool = False):
    """`cuda_extension`: the family trains through our compiled CUDA kernels (csrc/), which a run can
    start building early, beside the tokenizing."""
    def deco(builder):
        builder.cuda_extension = cuda_extension
        FAMILIES[name] = builder
        return builder

    return deco


def get_family(name: str) -> Callable:
    from rwkvbench.train import neox, rwkv4  # noqa: F401  (registration)

    if name not in FAMILIES:
        raise ConfigError(f"family={name!r}: unknown training family; valid: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[name]


def padded_vocab(vocab_size: int, multiple: int = 64) -> int:
    """Rows of embedding and head: the tokenizer's vocabulary rounded up (Pythia's 50304 for 50277), so the
    head's GEMMs take cuBLAS's fast paths. The padding rows are never inputs and never targets."""
    return -(-vocab_size // multiple) * multiple


def _layer_norm(x, weight, bias, eps: float):
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)


def compile_norm(norm: nn.LayerNorm, mode: str | None = None) -> None:
    """Run a LayerNorm through a compiled function of ours. (`nn.LayerNorm.compile()` ran the same eager
    kernels on an H200, dynamo does not trace torch.nn's own frames, and their weight-gradient
    reduction took 0.14 ms a norm at 32 x 1024 x 256.)"""
    fn = torch.compile(_layer_norm, dynamic=False, mode=mode)
    # bound to the norm, so a deep copy of the model binds it to the copy's weights
    norm.forward = types.MethodType(lambda self, x: fn(x, self.weight, self.bias, self.eps), norm)


class Trainable:
    """A model under training: its modules, the features the loss reads, its counts and formulas, and
    how it is saved for the harness."""

    family: str  # registry name, e.g. "rwkv4"
    kind: str  # results' family column, as SequenceModel.family: "rwkv" | "transformer"
    module: nn.Module
    n_layer: int
    n_embd: int
    vocab_size: int

    def features(self, ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T) -> final normed features (B, T, C); the head is applied by the loss."""
        raise NotImplementedError

    @property
    def head_weight(self) -> torch.Tensor:
        raise NotImplementedError

    def compile(self, mode: str | None = None) -> None:
        """Compile the repeated part (one block or layer, shared by every layer); `mode` is
        torch.compile's ("reduce-overhead": CUDA graphs)."""
        raise NotImplementedError

    def embedding_weights(self) -> list[torch.Tensor]:
        """The input embedding and the output head (excluded from the non-embedding count)."""
        raise NotImplementedError

    def save(self, folder: Path, dtype: torch.dtype) -> Path:
        """Weights in the format `load_model(..., path=)` reads; returns that path."""
        raise NotImplementedError

    def model_config(self, name: str, weights: Path, tokenizer: str, tokenizer_path: str | None) -> dict:
        """A conf/model entry for the saved weights (loadable with `load_model(cfg)`)."""
        raise NotImplementedError

    def attention_flops_per_token(self, context_len: int) -> float:
        return 0.0

    # ---- counts and formulas ----------------------------------------------------------------------
    def n_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters())

    def n_params_nonembedding(self) -> int:
        return self.n_params() - sum(w.numel() for w in self.embedding_weights())

    def _matrix_params(self) -> int:
        return sum(p.numel() for p in self.module.parameters() if p.dim() >= 2 and p.squeeze().dim() >= 2)

    def compute_per_token(self, context_len: int) -> float:
        return 6.0 * self._matrix_params() + self.attention_flops_per_token(context_len)

    def compute_nonembedding_per_token(self, context_len: int) -> float:
        embedding = sum(w.numel() for w in self.embedding_weights())
        return 6.0 * (self._matrix_params() - embedding) + self.attention_flops_per_token(context_len)

    def matmul_flops_per_token(self, context_len: int) -> float:
        lookup = self.embedding_weights()[0].numel()
        return 6.0 * (self._matrix_params() - lookup) + self.attention_flops_per_token(context_len)

    # ---- optimisation -----------------------------------------------------------------------------
    def param_groups(self, weight_decay: float, lr_scale: dict | None = None) -> list[dict]:
        """AdamW groups: weight decay on matrices (embeddings included) only, never on vectors (biases,
        norms, decays, mixes); `lr_scale` multiplies the learning rate of parameters whose name contains
        a key (RWKV-LM's larger rates for time_decay and time_first)."""
        groups: dict[tuple, list] = {}
        for name, p in self.module.named_parameters():
            decay = weight_decay if p.squeeze().dim() >= 2 else 0.0
            scale = next((s for key, s in (lr_scale or {}).items() if key in name), 1.0)
            groups.setdefault((decay, float(scale)), []).append(p)
        return [{"params": ps, "weight_decay": d, "lr_scale": s} for (d, s), ps in groups.items()]
