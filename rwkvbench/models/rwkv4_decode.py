"""RWKV-4 decoding at the speed of reading the weights: one recurrent step captured as a CUDA graph over
static buffers, replayed once per token.

Two ways to build the step, both giving the PyTorch model's logits:
- FusedDecoder: our decode kernel (csrc/rwkv4_decode.cu), one persistent launch per token running two
  stages per layer, weight-streaming GEMVs with the elementwise work around them folded in (the output
  projection and the ffn value as split products). Runs batches up to 8.
- GraphDecoder: the PyTorch step compiled by torch.compile (elementwise work fused by inductor,
  GEMVs by cuBLAS). Any batch.
RWKVBENCH_DECODE=fused|compiled forces one. The default (auto) takes the fused kernel for a single
sequence only: at the 1.5B shape on an H100 it gives 1.40-1.45 ms per token against 1.89 compiled
(benchmarks/compare_inference.py). The batch threshold was measured with the earlier kernel (one
launch per stage: 2.29 ms at batch 2 and 5.58 ms at batch 8, each block repeating the layer norm per
sequence, where the compiled step stays at 1.97 ms) and not yet again with the two-stage one.

The state lives in the decoder's static buffers; `step` updates them in place (the SequenceModel
contract already says a step consumes the state it is given).
"""

from __future__ import annotations

import os
import warnings

import torch

from rwkvbench.models.rwkv4_block import RWKV4State
from rwkvbench.models.rwkv4_net import RWKV4

DECODE_ENV = "RWKVBENCH_DECODE"
FUSED_AUTO_MAX_BATCH = 1  # measured, see above


class CapturedDecoder:
    """Static input ids and state, and a CUDA graph of `_step` (which writes the new state into the
    static buffers and returns static logits)."""

    config = "cuda_graph"

    def __init__(self, net: RWKV4, batch: int):
        self.net, self.batch = net, batch
        shape, dev = net.shape, net.head.weight.device
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.state = RWKV4State.empty(shape.n_layer, batch, shape.n_embd, dev)

    def _step(self) -> torch.Tensor:
        raise NotImplementedError

    def _capture(self, fn):
        self._warm(fn)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):  # same grad mode as the warm-up
            self.logits = fn()

    def _warm(self, fn):
        saved = self.state.map(torch.clone)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        self.load(saved)

    def owns(self, state: RWKV4State) -> bool:
        return state is self.state

    def load(self, state: RWKV4State) -> RWKV4State:
        for buf, value in zip(self.state.tensors(), state.tensors()):
            buf.copy_(value)
        return self.state

    def step(self, ids: torch.Tensor):
        self.ids.copy_(ids)
        self.graph.replay()
        return self.logits.clone(), self.state


class GraphDecoder(CapturedDecoder):
    """The PyTorch step, compiled (falls back to eager capture if compiling fails)."""

    def __init__(self, net: RWKV4, batch: int, compile: bool = True):
        super().__init__(net, batch)
        fn = self._step
        if compile:
            try:
                fn = torch.compile(self._step, fullgraph=True, dynamic=False)
                self._warm(fn)
                self.config = "compiled+cuda_graph"
            except Exception as e:  # noqa: BLE001  (any compiler failure: the eager step still works)
                warnings.warn(f"rwkvbench: compiling the decode step failed, capturing it eagerly: {e}", stacklevel=2)
                fn = self._step
        self._capture(fn)

    def _step(self):
        logits, new = self.net(self.ids, self.state, logits="last")
        self.load(new)
        return logits


class FusedDecoder(CapturedDecoder):
    """Two fused stages per layer plus the head, one launch (see csrc/rwkv4_decode.h).

    The output projection and the ffn value run as split products, which read their matrices by
    columns: those two weights are stored column-major (RWKV4.split_weights_column_major), so a
    block's columns are contiguous rows of `weight.t()`."""

    config = "fused_kernels+cuda_graph"

    def __init__(self, net: RWKV4, batch: int):
        super().__init__(net, batch)
        C, V = net.shape.n_embd, net.shape.vocab_size
        zeros = lambda n: torch.zeros(batch, n, device=self.ids.device)  # noqa: E731
        # residual stream: input (embedding), after attention, after ffn; normed vectors on their way to
        # the shift state; sigmoid(ffn receptance); split accumulators by layer parity (each is zeroed
        # a stage after its last reader, see layer_stages)
        self.x, self.x_att, self.x_ffn, self.ln_att, self.ln_ffn, self.ffn_r = (zeros(C) for _ in range(6))
        from rwkvbench.kernels.decode_cuda import DecodeProgram, split_accumulator

        self.acc_out, self.acc_value = ([split_accumulator(batch, C, self.ids.device) for _ in range(2)] for _ in range(2))
        self.out = zeros(V)
        self.decay = [-torch.exp(block.att.time_decay) for block in net.blocks]  # as the PyTorch model has it
        net.split_weights_column_major()  # a no-op for nets built on the GPU

        stages = [stage for i, block in enumerate(net.blocks) for stage in self.layer_stages(i, block)]
        self.program = DecodeProgram([*stages, self.head_stage()], self.ids.device)
        self._capture(self._step)

    def _step(self):
        net = self.net
        self.x.copy_(net.blocks[0].ln0(net.emb(self.ids[:, 0]).float()))
        self.program()
        return self.out

    def layer_stages(self, i, block):
        """Layer i's two stages, encoded (benchmarks/decode_stages.py times each kind on its own).

        Accumulator lifetimes: layer i's attention adds into acc_out[i % 2], read by its ffn stage and
        zeroed by the next attention stage (or the head); its ffn adds into acc_value[i % 2], read by the
        next attention stage (or the head) and zeroed by the ffn stage after that (the first attention
        stage zeroes the last layer's, left by the previous token's head)."""
        from rwkvbench.kernels.decode_cuda import Gemv, encode_stage

        s, att, ffn, L = self.state, block.att, block.ffn, len(self.net.blocks)
        first = i == 0
        return [
            # 1. residual += previous ffn; ln1, token shift -> key, value, receptance -> WKV step ->
            #    r * wkv times the output projection, split, into acc_out
            encode_stage(
                self.x if first else self.x_ffn,
                [Gemv(att.key.weight, op="keep", input=0), Gemv(att.value.weight, op="keep", input=1),
                 Gemv(att.receptance.weight, op="keep", input=2)],
                residual=None if first else (self.acc_value[(i - 1) % 2], self.ffn_r), residual_out=self.x_att,
                layer_norm=(block.ln1.weight, block.ln1.bias), ln_out=self.ln_att,
                shift=(s.att_x[i], [att.time_mix_k, att.time_mix_v, att.time_mix_r]),
                channel_step="wkv", wkv=(self.decay[i], att.time_first, s.att_a[i], s.att_b[i], s.att_p[i]),
                split=(att.output.weight.t(), self.acc_out[i % 2]),
                copies=[] if first else [(self.ln_ffn, s.ffn_x[i - 1])],
                zero=[self.acc_value[(L - 1) % 2]] if first else [self.acc_out[(i - 1) % 2]]),
            # 2. residual += attention output; ln2, token shift -> relu(ffn key)^2 times the ffn value,
            #    split, into acc_value; sigmoid(ffn receptance), the gate the next stage applies
            encode_stage(
                self.x_att, [Gemv(ffn.key.weight, op="keep", input=0), Gemv(ffn.receptance.weight, self.ffn_r, "sigmoid", 1)],
                residual=(self.acc_out[i % 2], None), residual_out=self.x_ffn,
                layer_norm=(block.ln2.weight, block.ln2.bias), ln_out=self.ln_ffn,
                shift=(s.ffn_x[i], [ffn.time_mix_k, ffn.time_mix_r]),
                channel_step="relu_square", split=(ffn.value.weight.t(), self.acc_value[i % 2]),
                copies=[(self.ln_att, s.att_x[i])], zero=[] if first else [self.acc_value[(i - 1) % 2]]),
        ]

    def head_stage(self):
        from rwkvbench.kernels.decode_cuda import Gemv, encode_stage

        net, s, L = self.net, self.state, len(self.net.blocks)
        return encode_stage(self.x_ffn, [Gemv(net.head.weight, self.out)],
                            residual=(self.acc_value[(L - 1) % 2], self.ffn_r),
                            layer_norm=(net.ln_out.weight, net.ln_out.bias),
                            copies=[(self.ln_ffn, s.ffn_x[L - 1])], zero=[self.acc_out[(L - 1) % 2]])


def decode_choice() -> str:
    choice = os.environ.get(DECODE_ENV, "auto")
    if choice not in ("auto", "fused", "compiled"):
        raise ValueError(f"{DECODE_ENV}={choice!r}; expected auto, fused or compiled")
    return choice


def make_decoder(net: RWKV4, batch: int) -> CapturedDecoder:
    """The fused decoder where our kernels run and the batch fits them, else the compiled one."""
    from rwkvbench.kernels.decode_cuda import fused_decode_fits
    from rwkvbench.kernels.dispatch import kernel_choice

    choice = decode_choice()
    shape, dtype = net.shape, net.head.weight.dtype
    fits = kernel_choice() != "reference" and fused_decode_fits(batch, shape.n_embd, shape.dim_ffn, dtype)
    if choice == "fused" and not fits:
        raise RuntimeError(f"{DECODE_ENV}=fused but the fused decode kernels do not run batch {batch} of "
                           f"n_embd {shape.n_embd}, {dtype} here (at most 8 sequences; the CUDA extension must build)")
    if fits and (choice == "fused" or (choice == "auto" and batch <= FUSED_AUTO_MAX_BATCH)):
        return FusedDecoder(net, batch)
    return GraphDecoder(net, batch)
