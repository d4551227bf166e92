"""RWKV-4 decoding at the speed of reading the weights: one recurrent step, compiled (elementwise work
fused by inductor) and captured as a CUDA graph over static buffers, replayed once per token.

The state lives in the decoder's static buffers; `step` updates them in place (the SequenceModel
contract already says a step consumes the state it is given).
"""

from __future__ import annotations

import warnings

import torch

from rwkvbench.models.rwkv4 import RWKV4, RWKV4State


class GraphDecoder:
    def __init__(self, net: RWKV4, batch: int, compile: bool = True):
        self.net, self.batch = net, batch
        shape, dev = net.shape, net.head.weight.device
        self.ids = torch.zeros(batch, 1, dtype=torch.long, device=dev)
        self.state = RWKV4State.empty(shape.n_layer, batch, shape.n_embd, dev)
        self.config = "cuda_graph"
        fn = self._step
        if compile:
            try:
                fn = torch.compile(self._step, fullgraph=True, dynamic=False)
                self._warm(fn)
                self.config = "compiled+cuda_graph"
            except Exception as e:  # noqa: BLE001  (any compiler failure: the eager step still works)
                warnings.warn(f"rwkvbench: compiling the decode step failed, capturing it eagerly: {e}", stacklevel=2)
                fn = self._step
        self._warm(fn)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph):  # same grad mode as the warm-up
            self.logits = fn()

    def _step(self):
        logits, new = self.net(self.ids, self.state, logits="last")
        for buf, value in zip(self.state.tensors(), new.tensors()):
            buf.copy_(value)
        return logits

    def _warm(self, fn):
        saved = self.state.map(torch.clone)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        for buf, value in zip(self.state.tensors(), saved.tensors()):
            buf.copy_(value)

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
