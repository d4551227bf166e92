"""RWKV-4, our own implementation (BlinkDL's RWKV-4-Pile architecture).

Module names equal BlinkDL's checkpoint keys, so a `.pth` state dict loads as it is. Matrices (emb,
linear layers, head) are held in the model dtype (fp32, bf16 or fp16); layer norms, decays, bonuses and
mix vectors stay fp32, and so do the residual stream and the WKV state and accumulation (fp16 would
overflow the residual of large RWKV-4 models; ChatRWKV rescales layers instead, we keep fp32).

Parallel ("GPT") mode: `prefill` runs every linear layer over the whole chunk and WKV over time.
Recurrent ("RNN") mode: `step` runs one token per sequence. Both take and return the state, so a long
input can be fed in chunks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from rwkvbench.kernels import initial_wkv_state, norm_shift, wkv4
from rwkvbench.models.base import SequenceModel, count_bytes, count_params
from rwkvbench.models.checkpoints import RWKV4Shape
from rwkvbench.models.tokenizer import Tokenizer


@dataclass
class RWKV4State:
    """Per layer, per sequence: the last ln1 output (time-mix shift), the WKV numerator, denominator and
    max exponent, and the last ln2 output (channel-mix shift). Each tensor is (n_layer, B, C) fp32."""

    att_x: torch.Tensor
    att_a: torch.Tensor
    att_b: torch.Tensor
    att_p: torch.Tensor
    ffn_x: torch.Tensor

    def tensors(self):
        return [getattr(self, f.name) for f in fields(self)]

    def map(self, fn) -> "RWKV4State":
        return RWKV4State(*(fn(t) for t in self.tensors()))

    @classmethod
    def empty(cls, n_layer: int, batch: int, channels: int, device) -> "RWKV4State":
        zeros = torch.zeros(n_layer, batch, channels, device=device)
        a, b, p = (s.unsqueeze(0).expand(n_layer, -1, -1).clone() for s in initial_wkv_state(batch, channels, device))
        return cls(zeros, a, b, p, zeros.clone())


def _mm(x, weight):
    """x @ weight.T in the weight's dtype (fp32, bf16 or fp16)."""
    return F.linear(x.to(weight.dtype), weight)


def time_mix(xk, xv, xr, wkv_state, decay, first, W_k, W_v, W_r, W_o):
    """The attention-like branch on its token-shifted inputs (one per linear layer)."""
    k = _mm(xk, W_k)
    v = _mm(xv, W_v)
    r = torch.sigmoid(_mm(xr, W_r))
    y, wkv_state = wkv4(-torch.exp(decay), first, k, v, wkv_state)
    return _mm(r * y, W_o), wkv_state


def channel_mix(xk, xr, W_k, W_r, W_v):
    """The feed-forward branch on its token-shifted inputs."""
    k = torch.square(torch.relu(_mm(xk, W_k)))
    r = torch.sigmoid(_mm(xr, W_r))
    return r * _mm(k, W_v)


def block_step(x, att_x, a, b, p, ffn_x, ln1_w, ln1_b, ln2_w, ln2_b, att_weights, ffn_weights):
    """One block as a pure function of tensors: compiled once, it serves every layer (same shapes).
    The residual x is fp32; each branch reads it through norm_shift (layer norm, token shift, one mix
    per linear layer; the first branch's output is added on the way into the second's)."""
    decay, first, *att_mixes, W_k, W_v, W_r, W_o = att_weights
    *ffn_mixes, F_k, F_r, F_v = ffn_weights
    (xk, xv, xr), att_x, _ = norm_shift(x, None, ln1_w, ln1_b, att_x, att_mixes, W_k.dtype)
    att, (a, b, p) = time_mix(xk, xv, xr, (a, b, p), decay, first, W_k, W_v, W_r, W_o)
    (xk, xr), ffn_x, x = norm_shift(x, att, ln2_w, ln2_b, ffn_x, ffn_mixes, F_k.dtype)
    return x + channel_mix(xk, xr, F_k, F_r, F_v), att_x, a, b, p, ffn_x


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
        return (self.time_decay, self.time_first, self.time_mix_k, self.time_mix_v, self.time_mix_r,
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
        return (self.time_mix_k, self.time_mix_r, self.key.weight, self.receptance.weight, self.value.weight)


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

    def forward(self, x, s: RWKV4State, i: int, new: list, step=block_step):
        x, *layer_state = step(x, s.att_x[i], s.att_a[i], s.att_b[i], s.att_p[i], s.ffn_x[i],
                               self.ln1.weight, self.ln1.bias, self.ln2.weight, self.ln2.bias,
                               self.att.weights(), self.ffn.weights())
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


class RWKV4Model(SequenceModel):
    """RWKV-4 behind the SequenceModel interface.

    prefill_chunk: long inputs run in chunks of this many tokens with the state carried, so peak
    memory does not grow with the input (only the requested logits are computed).
    """

    family = "rwkv"

    def __init__(self, net: RWKV4, tokenizer: Tokenizer, name: str = "rwkv4", prefill_chunk: int = 4096,
                 compile_prefill: bool = True):
        self.net = net.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.prefill_chunk = prefill_chunk
        self.compile_prefill = compile_prefill
        self._compiled_step = None
        self._decoder = None
        self._prefill_paths: set[str] = set()  # how the last prefill's chunks ran (see prefill_config)

    def _block_step(self, ids):
        """On CUDA with our kernels, for full chunks: the block compiled (elementwise work fused). Other
        lengths run eager, with the fused layer norm + token shift kernel: compiling each new (batch,
        length) shape of, say, an lm-eval run costs more than it saves (full LAMBADA 45.8 s with every
        shape compiled), and one shape-generic compile (~8 s per process) would take a 32 x 96 forward
        only from 21.2 to 20.1 ms on an H100."""
        if not self.compile_prefill or ids.shape[1] != self.prefill_chunk or not _cuda_kernel_applies(self.net):
            return block_step
        if self._compiled_step is None:
            self._compiled_step = torch.compile(block_step, dynamic=False)
        return self._compiled_step

    def _run(self, ids, state, mode):
        step = self._block_step(ids)
        try:
            out = self.net(ids, state, mode, step)
            self._prefill_paths.add("eager" if step is block_step else "compiled")
            return out
        except Exception as e:  # noqa: BLE001  (a compiler failure: run uncompiled, say so)
            if step is block_step:
                raise
            warnings.warn(f"rwkvbench: compiled prefill failed, running it uncompiled: {e}", stacklevel=3)
            self.compile_prefill = False
            self._prefill_paths.add("eager")
            return self.net(ids, state, mode)

    @torch.inference_mode()
    def prefill(self, ids, state: RWKV4State | None = None, *, logits: str = "all"):
        ids = self.as_ids(ids)
        T = ids.shape[1]
        outputs = []
        self._prefill_paths = set()
        for lo in range(0, T, self.prefill_chunk):
            last_chunk = lo + self.prefill_chunk >= T
            mode = logits if logits == "all" or last_chunk else "none"
            out, state = self._run(ids[:, lo : lo + self.prefill_chunk], state, mode)
            outputs.append(out)
        return (torch.cat(outputs, dim=1) if logits == "all" else outputs[-1]), state

    @torch.inference_mode()
    def step(self, ids, state: RWKV4State):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).view(-1, 1)
        if self._decoder is not None and self._decoder.owns(state):
            return self._decoder.step(ids)
        return self.net(ids, state, logits="last")

    def prepare_decode(self, state: RWKV4State, max_new_tokens: int) -> RWKV4State:
        """On CUDA: move the state into the static buffers of a captured decode step (fused kernels, or
        the compiled PyTorch step where they do not apply)."""
        if self.device.type != "cuda":
            return state
        from rwkvbench.models.rwkv4_decode import make_decoder

        batch = state.att_x.shape[1]
        if self._decoder is None or self._decoder.batch != batch:
            self._decoder = None  # free the old one's buffers and graph first
            self._decoder = make_decoder(self.net, batch)
        return self._decoder.load(state)

    @property
    def decode_config(self) -> str:
        return self._decoder.config if self._decoder is not None else "eager"

    @property
    def prefill_config(self) -> str:
        """How the last prefill ran: the WKV path and whether its chunks ran compiled, eager or both."""
        wkv = "cuda_wkv" if _cuda_kernel_applies(self.net) else "reference_wkv"
        return "+".join([f"chunk{self.prefill_chunk}", wkv, *sorted(self._prefill_paths)])

    def state_nbytes(self, state: RWKV4State) -> int:
        return sum(t.numel() * t.element_size() for t in state.tensors())

    def copy_state(self, state: RWKV4State) -> RWKV4State:
        return state.map(torch.clone)

    def repeat_state(self, state: RWKV4State, n: int) -> RWKV4State:
        return state.map(lambda t: t.repeat_interleave(n, dim=1))

    @property
    def vocab_size(self) -> int:
        return self.net.shape.vocab_size

    @property
    def weights_nbytes(self) -> int:
        return count_bytes(self.net)

    @property
    def n_params(self) -> int:
        return count_params(self.net)

    @property
    def dtype(self) -> torch.dtype:
        return self.net.head.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.net.head.weight.device


def _cuda_kernel_applies(net: RWKV4) -> bool:
    from rwkvbench.kernels.dispatch import use_cuda_kernel

    return use_cuda_kernel(net.head.weight)


def build_rwkv4(sd: dict, shape: RWKV4Shape, dtype=torch.float32, device="cpu") -> RWKV4:
    """Instantiate and load a validated BlinkDL-named state dict (weights are cast per parameter)."""
    with torch.device("meta"):
        net = RWKV4(shape, dtype=dtype, device="meta")
    net = net.to_empty(device=device)
    own = net.state_dict()
    net.load_state_dict({k: v.to(dtype=own[k].dtype) for k, v in sd.items()}, strict=True)
    net.pad_head()
    if net.head.weight.is_cuda:  # decided at load, so prefill and decode always see the same layout
        net.split_weights_column_major()
    return net
