"""RWKV-4 behind the SequenceModel interface: the fast inference paths around the network of
models/rwkv4_net.py.

Parallel ("GPT") mode: `prefill` runs every linear layer over the whole chunk and WKV over time (long
inputs in chunks, full chunks through a compiled block on CUDA). Recurrent ("RNN") mode: `step` runs
one token per sequence (a captured CUDA graph after `prepare_decode`). Both take and return the state,
so a long input can be fed in chunks.
"""

from __future__ import annotations

import warnings

import torch

from rwkvbench.models.base import SequenceModel, count_bytes, count_params
from rwkvbench.models.rwkv4_block import RWKV4State, block_step
from rwkvbench.models.rwkv4_net import RWKV4
from rwkvbench.models.tokenizer import Tokenizer


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
