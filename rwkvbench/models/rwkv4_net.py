"""RWKV-4's network as plain torch modules (BlinkDL's RWKV-4-Pile architecture).

Module names equal BlinkDL's checkpoint keys, so a `.pth` state dict loads as it is. Matrices (emb,
linear layers, head) are held in the model dtype (fp32, bf16 or fp16); layer norms, decays, bonuses and
mix vectors stay fp32, and so do the residual stream and the WKV state and accumulation (fp16 would
overflow the residual of large RWKV-4 models; ChatRWKV rescales layers instead, we keep fp32).

`forward` runs a chunk from a given state and returns logits and the new state (inference: parallel
mode over a chunk, recurrent mode with one token). `features` runs from the empty state and keeps no
state (training: the loss applies the head itself). The layouts that make inference fast (a padded
head, column-major projections for the fused decoder) are opt-in methods, applied by the builder.
"""

from __future__ import annotations

import torch
from torch import nn

from rwkvbench.models.checkpoints import RWKV4Shape
from rwkvbench.models.rwkv4_block import RWKV4State, _mm, block_step


class TimeMix(nn.Module):
    def __init__(self, C: int, dtype, device):
        super().__init__()
        f32 = dict(dtype=torch.float32, device=device)
        self.time_decay = nn.Parameter(torch.empty(C, **f32))
        self.time_first = nn.Parameter(torch.empty(C, **f32))
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C, **f32))
        self.time_mix_v = nn.Parameter(torch.empty(1, 1, C, **f32))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C, **f32))
        self.key, self.value, self.receptance, self.output = (
            nn.Linear(C, C, bias=False, dtype=dtype, device=device) for _ in range(4)
        )

    def weights(self):
        return (self.time_decay, self.time_first, *_flat(self.time_mix_k, self.time_mix_v, self.time_mix_r),
                self.key.weight, self.value.weight, self.receptance.weight, self.output.weight)


class ChannelMix(nn.Module):
    def __init__(self, C: int, F_: int, dtype, device):
        super().__init__()
        self.time_mix_k = nn.Parameter(torch.empty(1, 1, C, dtype=torch.float32, device=device))
        self.time_mix_r = nn.Parameter(torch.empty(1, 1, C, dtype=torch.float32, device=device))
        self.key = nn.Linear(C, F_, bias=False, dtype=dtype, device=device)
        self.receptance = nn.Linear(C, C, bias=False, dtype=dtype, device=device)
        self.value = nn.Linear(F_, C, bias=False, dtype=dtype, device=device)

    def weights(self):
        return (*_flat(self.time_mix_k, self.time_mix_r), self.key.weight, self.receptance.weight, self.value.weight)


def _flat(*mixes):
    """The (1, 1, C) mix vectors (BlinkDL's checkpoint shape) as (C,) views, taken outside any compiled
    step: on an H200 (torch 2.11), a compiled training step's backward returned a (C,) gradient for a
    (1, 1, C) input at C >= 192 and failed autograd's shape check; the views' own backward runs eager."""
    return [m.view(-1) for m in mixes]


class Block(nn.Module):
    def __init__(self, i: int, shape: RWKV4Shape, dtype, device):
        super().__init__()
        C = shape.n_embd
        ln = dict(dtype=torch.float32, device=device)
        if i == 0:
            self.ln0 = nn.LayerNorm(C, **ln)
        self.ln1 = nn.LayerNorm(C, **ln)
        self.ln2 = nn.LayerNorm(C, **ln)
        self.att = TimeMix(C, dtype, device)
        self.ffn = ChannelMix(C, shape.dim_ffn, dtype, device)

    def run(self, x, layer_state, step=block_step):
        """`step` (block_step or a compiled version) on this block's weights: (x, *new layer state)."""
        return step(x, *layer_state, self.ln1.weight, self.ln1.bias, self.ln2.weight, self.ln2.bias,
                    self.att.weights(), self.ffn.weights())

    def forward(self, x, s: RWKV4State, i: int, new: list, step=block_step):
        x, *layer_state = self.run(x, [t[i] for t in s.tensors()], step)
        # Copies, made here and not inside `step`: a view of the last token (which a compiled step
        # returns even for a clone) would keep the whole chunk's activations alive in the state.
        new.append([t.clone() for t in layer_state])
        return x


class RWKV4(nn.Module):
    """The network. Parameter names are BlinkDL's checkpoint keys."""

    def __init__(self, shape: RWKV4Shape, dtype=torch.float32, device="cpu"):
        super().__init__()
        self.shape = shape
        self.emb = nn.Embedding(shape.vocab_size, shape.n_embd, dtype=dtype, device=device)
        self.blocks = nn.ModuleList(Block(i, shape, dtype, device) for i in range(shape.n_layer))
        self.ln_out = nn.LayerNorm(shape.n_embd, dtype=torch.float32, device=device)
        self.head = nn.Linear(shape.n_embd, shape.vocab_size, bias=False, dtype=dtype, device=device)
        self.register_buffer("head_padded", None, persistent=False)  # see pad_head

    def pad_head(self, multiple: int = 64) -> None:
        """Keep the head in a buffer padded to a multiple of `multiple` rows, head.weight being a view of
        its first vocab_size rows (no extra memory). cuBLAS falls back to a several times slower GEMM
        when the logits' row length is not a multiple of 8 (RWKV-4-Pile's 50277; on an H100, 5.9 ms
        of a 31 ms forward over 32 x 96 tokens)."""
        W = self.head.weight
        rows = -(-W.shape[0] // multiple) * multiple
        padded = torch.zeros(rows, W.shape[1], dtype=W.dtype, device=W.device)
        padded[: W.shape[0]] = W.detach()
        self.head.weight = nn.Parameter(padded[: W.shape[0]], requires_grad=W.requires_grad)
        self.head_padded = padded

    def split_weights_column_major(self) -> None:
        """Store each layer's output projection and ffn value weights transposed in memory (weight.t()
        contiguous; same values and shape). The fused decoder multiplies them as split products, by
        columns (csrc/rwkv4_decode.h); the prefill's GEMMs take either layout."""
        for block in self.blocks:
            for linear in (block.att.output, block.ffn.value):
                w = linear.weight
                if not w.t().is_contiguous():
                    w.data = w.data.t().contiguous().t()

    def _apply(self, fn, recurse=True):
        """.to() / .half() move the padded buffer and head.weight separately: tie them again."""
        super()._apply(fn, recurse)
        if self.head_padded is not None:
            self.pad_head()
        return self

    def _head(self, x):
        if self.head_padded is None:
            return _mm(x, self.head.weight)
        return _mm(x, self.head_padded)[..., : self.shape.vocab_size]

    def features(self, ids: torch.Tensor, step=block_step) -> torch.Tensor:
        """ids (B, T) -> the final layer-normed features (B, T, C) fp32, every sequence from the empty
        state, keeping no state (training: the loss applies the head itself, in chunks)."""
        empty = [t[0] for t in RWKV4State.empty(1, ids.shape[0], self.shape.n_embd, ids.device).tensors()]
        x = self.emb(ids)
        x = self.blocks[0].ln0(x.to(torch.promote_types(x.dtype, torch.float32)))  # float64 stays (references)
        for block in self.blocks:
            x = block.run(x, empty, step)[0]
        return self.ln_out(x)

    def forward(self, ids: torch.Tensor, state: RWKV4State | None, logits: str = "all", step=block_step):
        """ids (B, T) -> logits (B, T, V) fp32 ((B, V) for "last", None for "none") and the new state.
        `step` is block_step or a compiled version of it."""
        B, _ = ids.shape
        if state is None:
            state = RWKV4State.empty(self.shape.n_layer, B, self.shape.n_embd, ids.device)
        x = self.blocks[0].ln0(self.emb(ids).float())
        new: list = []
        for i, block in enumerate(self.blocks):
            x = block(x, state, i, new, step)
        state = RWKV4State(*(torch.stack(t) for t in zip(*new)))
        if logits == "none":
            return None, state
        if logits == "last":
            x = x[:, -1]
        return self._head(self.ln_out(x)).float(), state
