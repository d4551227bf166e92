"""The fused RWKV-4 decode program of csrc/rwkv4_decode.cu.

A stage builds its GEMV inputs (a layer norm with token shift, a plain input, or the WKV step times
the receptance), multiplies up to three weight matrices by them and applies each product's epilogue.
`encode_stage` checks one stage and packs it (pointers into the tensors given); a `DecodeProgram` runs
its stages in order in one persistent kernel launch, with a grid-wide barrier between stages. The
decoder in models/rwkv4_decode.py builds four stages per layer and captures the program's launch in a
CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rwkvbench.kernels.cuda_build import load_extension

PROLOGUES = {"input": 0, "layer_norm": 1, "wkv": 2}
EPILOGUES = {"store": 0, "add": 1, "sigmoid": 2, "relu_square": 3, "gated_add": 4}
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # csrc/rwkv4_decode.h
MAX_BATCH = 8  # csrc/rwkv4_decode.h RWKV4_DECODE_MAX_BATCH


@dataclass(frozen=True)
class Gemv:
    """out (B, rows) <- epilogue(weight (rows, K) @ input vector `input` of the stage)."""

    weight: torch.Tensor
    out: torch.Tensor
    op: str = "store"
    input: int = 0


@dataclass(frozen=True)
class Stage:
    """An encoded stage: the kernel's struct as bytes, and the tensors it points into (kept alive)."""

    bytes: torch.Tensor
    tensors: tuple


def encode_stage(x, gemvs, *, prologue="input", layer_norm=None, ln_out=None, shift=None, wkv=None, gate=None,
                 copies=()) -> Stage:
    """x: (B, K) float32, the residual stream (layer_norm), the input (input) or the receptance (wkv).
    layer_norm: (weight, bias); ln_out receives the normed vector. shift: (previous normed vector,
    [mix vectors]), one GEMV input per mix. wkv: (k, v, w, u, aa, bb, pp, aa_out, bb_out, pp_out).
    gate: the gate of a gated_add. copies: (src, dst) float32 pairs copied on the side."""
    ln_w, ln_b = layer_norm if layer_norm is not None else (None, None)
    prev, mixes = shift if shift is not None else (None, [])
    mixes = [m.reshape(-1) for m in mixes]
    tensors = (x, *(g.weight for g in gemvs), *(g.out for g in gemvs), gate, ln_w, ln_b, ln_out, prev, *mixes,
               *(wkv or ()), *(t for pair in copies for t in pair))
    encoded = load_extension().decode_stage_encode(
        PROLOGUES[prologue], x, [g.weight for g in gemvs], [g.input for g in gemvs],
        [EPILOGUES[g.op] for g in gemvs], [g.out for g in gemvs], gate, ln_w, ln_b, ln_out, prev, mixes,
        list(wkv or ()), [s for s, _ in copies], [d for _, d in copies])
    return Stage(encoded, tuple(t for t in tensors if t is not None))


class DecodeProgram:
    """Stages run in order by one launch; each stage sees the previous ones' results. `defines` build a
    variant of the kernel's knobs (RWKV4_DECODE_UNROLL=4, ...; benchmarks/decode_stages.py, decode_trace.py)."""

    def __init__(self, stages: list[Stage], device: torch.device, defines: tuple[str, ...] = ()):
        self.stages, self.defines = stages, tuple(defines)
        self.host = torch.cat([s.bytes for s in stages])
        self.device = self.host.to(device)
        words = load_extension(self.defines).decode_barrier_words()
        self.barrier = torch.zeros(words, dtype=torch.int32, device=device)  # the kernel's grid barrier

    def __call__(self):
        load_extension(self.defines).decode_run(self.host, self.device, self.barrier)


def smem_bytes(n_inputs: int, batch: int, K: int, dtype: torch.dtype) -> int:
    return load_extension().decode_smem_bytes(n_inputs, batch, K, DTYPE_CODES[dtype])


def fused_decode_fits(batch: int, n_embd: int, dim_ffn: int, dtype: torch.dtype) -> bool:
    """Whether the fused stages can run this batch: at most MAX_BATCH sequences, and every stage's input
    vectors (three of width n_embd, or one of width dim_ffn) within a block's shared memory."""
    ext = load_extension()
    if ext is None or batch > MAX_BATCH or dtype not in DTYPE_CODES:
        return False
    need = max(smem_bytes(3, batch, n_embd, dtype), smem_bytes(1, batch, dim_ffn, dtype))
    return need + 1024 <= ext.decode_smem_limit()  # 1 KiB for the kernel's own reduction scratch
