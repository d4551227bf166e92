"""The fused RWKV-4 decode program of csrc/rwkv4_decode.cu.

A stage completes the residual stream (adding the previous stage's split product), layer-norms and
token-shifts it into up to three GEMV inputs, multiplies up to three weight matrices by them and applies
each product's epilogue; then, on the channels each block owns, an optional channel step (the WKV step,
or relu^2) whose result is multiplied by a transposed matrix as a split product into an fp32
accumulator. `encode_stage` checks one stage and packs it (pointers into the tensors given); a
`DecodeProgram` runs its stages in order in one persistent kernel launch, with a grid-wide barrier
between stages. The decoder in models/rwkv4_decode.py builds two stages per layer and captures the
program's launch in a CUDA graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rwkvbench.kernels.cuda_build import load_extension

EPILOGUES = {"store": 0, "sigmoid": 1, "keep": 2}  # csrc/rwkv4_decode.h Rwkv4Epilogue
CHANNEL_STEPS = {None: 0, "wkv": 1, "relu_square": 2}  # Rwkv4ChannelStep
DTYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # the header's dtype codes
MAX_BATCH = 8  # RWKV4_DECODE_MAX_BATCH


@dataclass(frozen=True)
class Gemv:
    """epilogue(weight (rows, K) @ input vector `input` of the stage) -> out (B, rows), or kept in the
    block for the channel step ("keep", no out)."""

    weight: torch.Tensor
    out: torch.Tensor | None = None
    op: str = "store"
    input: int = 0


@dataclass(frozen=True)
class Stage:
    """An encoded stage: the kernel's struct as bytes, and the tensors it points into (kept alive)."""

    bytes: torch.Tensor
    tensors: tuple


def encode_stage(x, gemvs, *, layer_norm, ln_out=None, shift=None, residual=None, residual_out=None,
                 channel_step=None, wkv=None, split=None, copies=(), zero=()) -> Stage:
    """x: (B, K) float32, the residual stream. residual: (acc, gate or None), the previous stage's split
    product to add to x first; residual_out receives the completed stream. layer_norm: (weight, bias);
    ln_out receives the normed vector. shift: (previous normed vector, [mix vectors]), one GEMV input per
    mix. channel_step: "wkv" (gemvs 0-2 kept: key, value, receptance; wkv = (w, u, aa, bb, pp), the state
    updated in place) or "relu_square" (gemv 0 kept). split: (weight (rows of gemv 0, K), acc), the
    step's result times that matrix added into acc, a `split_accumulator` (so is residual's acc).
    copies: (src, dst) float32 pairs copied on the side; zero: tensors zeroed on the side."""
    ln_w, ln_b = layer_norm
    prev, mixes = shift if shift is not None else (None, [])
    mixes = [m.reshape(-1) for m in mixes]
    acc, gate = residual if residual is not None else (None, None)
    split_weight, split_acc = split if split is not None else (None, None)
    tensors = (x, *(g.weight for g in gemvs), *(g.out for g in gemvs), acc, gate, residual_out, ln_w, ln_b, ln_out,
               prev, *mixes, *(wkv or ()), split_weight, split_acc, *(t for pair in copies for t in pair), *zero)
    empty = torch.empty(0)  # stands for a kept product's unused output
    encoded = load_extension().decode_stage_encode(
        x, [g.weight for g in gemvs], [g.input for g in gemvs], [EPILOGUES[g.op] for g in gemvs],
        [empty if g.out is None else g.out for g in gemvs], acc, gate, residual_out, ln_w, ln_b, ln_out, prev, mixes,
        CHANNEL_STEPS[channel_step], list(wkv or ()), split_weight, split_acc, [s for s, _ in copies],
        [d for _, d in copies], list(zero))
    return Stage(encoded, tuple(t for t in tensors if t is not None))


def split_accumulator(batch: int, K: int, device: torch.device) -> torch.Tensor:
    """A zeroed split-product accumulator: the kernel's copies (csrc/rwkv4_decode.h SPLIT_COPIES) of (B, K)."""
    return torch.zeros(load_extension().decode_split_copies(), batch, K, device=device)


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


def smem_bytes(n_inputs: int, batch: int, K: int, dtype: torch.dtype, kept_rows: list[int]) -> int:
    return load_extension().decode_smem_bytes(n_inputs, batch, K, DTYPE_CODES[dtype], kept_rows)


def fused_decode_fits(batch: int, n_embd: int, dim_ffn: int, dtype: torch.dtype) -> bool:
    """Whether the fused stages can run this batch: at most MAX_BATCH sequences, and every stage's input
    vectors and kept products within a block's shared memory (the attention stage: three inputs of
    width n_embd, key, value and receptance kept; the ffn stage: two inputs, the ffn key kept)."""
    ext = load_extension()
    if ext is None or batch > MAX_BATCH or dtype not in DTYPE_CODES:
        return False
    need = max(smem_bytes(3, batch, n_embd, dtype, [n_embd] * 3), smem_bytes(2, batch, n_embd, dtype, [dim_ffn]))
    return need <= ext.decode_smem_limit()
