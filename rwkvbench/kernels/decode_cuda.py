"""The fused RWKV-4 decode stages of csrc/rwkv4_decode.cu, one call per kernel launch.

A stage builds its GEMV inputs (a layer norm with token shift, a plain input, or the WKV step times
the receptance), multiplies up to three weight matrices by them and applies each product's epilogue.
The decoder in models/rwkv4_decode.py chains four stages per layer and captures them as a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rwkvbench.kernels.cuda_build import load_extension

PROLOGUES = {"input": 0, "layer_norm": 1, "wkv": 2}
EPILOGUES = {"store": 0, "add": 1, "sigmoid": 2, "relu_square": 3, "gated_add": 4}
MAX_BATCH = 8  # csrc/rwkv4_decode.h RWKV4_DECODE_MAX_BATCH


@dataclass(frozen=True)
class Gemv:
    """out (B, rows) <- epilogue(weight (rows, K) @ input vector `input` of the stage)."""

    weight: torch.Tensor
    out: torch.Tensor
    op: str = "store"
    input: int = 0


def decode_stage(x, gemvs, *, prologue="input", layer_norm=None, ln_out=None, shift=None, wkv=None, gate=None,
                 copies=()):
    """x: (B, K) float32, the residual stream (layer_norm), the input (input) or the receptance (wkv).
    layer_norm: (weight, bias); ln_out receives the normed vector. shift: (previous normed vector,
    [mix vectors]), one GEMV input per mix. wkv: (k, v, w, u, aa, bb, pp, aa_out, bb_out, pp_out).
    gate: the gate of a gated_add. copies: (src, dst) float32 pairs copied on the side."""
    ln_w, ln_b = layer_norm if layer_norm is not None else (None, None)
    prev, mixes = shift if shift is not None else (None, [])
    load_extension().decode_stage(
        PROLOGUES[prologue], x, [g.weight for g in gemvs], [g.input for g in gemvs],
        [EPILOGUES[g.op] for g in gemvs], [g.out for g in gemvs], gate, ln_w, ln_b, ln_out, prev,
        [m.reshape(-1) for m in mixes], list(wkv or ()), [s for s, _ in copies], [d for _, d in copies])


def _smem_bytes(n_inputs: int, batch: int, K: int, dtype: torch.dtype) -> int:
    return n_inputs * batch * (-(-K // 8) * 8) * (4 if dtype == torch.float32 else 2)


def fused_decode_fits(batch: int, n_embd: int, dim_ffn: int, dtype: torch.dtype) -> bool:
    """Whether the fused stages can run this batch: at most MAX_BATCH sequences, and every stage's input
    vectors (three of width n_embd, or one of width dim_ffn) within a block's shared memory."""
    ext = load_extension()
    if ext is None or batch > MAX_BATCH or dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return False
    need = max(_smem_bytes(3, batch, n_embd, dtype), _smem_bytes(1, batch, dim_ffn, dtype))
    return need + 1024 <= ext.decode_smem_limit()  # 1 KiB for the kernel's own reduction scratch
