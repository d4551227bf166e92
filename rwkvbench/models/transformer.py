"""Any causal LM from `transformers` (Pythia / GPT-NeoX first) behind the SequenceModel interface.

The state is transformers' KV cache (a `Cache` object, extended in place by each call). Attention runs
through PyTorch SDPA.
"""

from __future__ import annotations

import copy
import warnings

import torch

from rwkvbench.models.base import SequenceModel, count_bytes, count_params
from rwkvbench.models.tokenizer import Tokenizer


class StaticDecodeState:
    """A preallocated KV cache (transformers' StaticCache) and how many positions it holds."""

    def __init__(self, cache, length: int):
        self.cache, self.length = cache, length


class HFCausalLM(SequenceModel):
    family = "transformer"

    def __init__(self, model, tokenizer: Tokenizer, name: str = "hf", compile_decode: bool = True):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name
        self.compile_decode = compile_decode
        self._decode_forward = None
        self._decode_config = "sdpa+dynamic_cache"

    def _new_cache(self):
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    @torch.inference_mode()
    def prefill(self, ids, state=None, *, logits: str = "all"):
        ids = self.as_ids(ids)
        out = self.model(
            input_ids=ids,
            past_key_values=self._new_cache() if state is None else state,
            use_cache=True,
            logits_to_keep=0 if logits == "all" else 1,
        )
        if logits == "none":
            return None, out.past_key_values
        lg = out.logits.float()
        return (lg[:, -1] if logits == "last" else lg), out.past_key_values

    @torch.inference_mode()
    def step(self, ids, state):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).view(-1, 1)
        if isinstance(state, StaticDecodeState):
            pos = torch.tensor([state.length], device=self.device)
            kwargs = dict(input_ids=ids, past_key_values=state.cache, cache_position=pos,
                          position_ids=pos.view(1, 1).expand(ids.shape[0], 1), use_cache=True)
            try:
                out = self._decode_forward(**kwargs)
            except Exception as e:  # noqa: BLE001  (a compiler failure: decode uncompiled, say so)
                if self._decode_forward is self.model.forward:
                    raise
                warnings.warn(f"rwkvbench: compiled decode failed, running it uncompiled: {e}", stacklevel=2)
                self._decode_forward, self._decode_config = self.model.forward, "sdpa+static_cache"
                out = self._decode_forward(**kwargs)
            state.length += 1
            # copy: a compiled (CUDA-graph) forward reuses its output buffer on the next step
            return out.logits[:, -1].to(torch.float32, copy=True), state
        return self.prefill(ids, state, logits="last")

    @torch.inference_mode()
    def prepare_decode(self, state, max_new_tokens: int):
        """On CUDA: move the KV cache into a static cache sized for the decode (the dynamic cache given is
        consumed), and decode through a compiled forward (CUDA graphs), as transformers recommends for
        fast generation."""
        if self.device.type != "cuda" or isinstance(state, StaticDecodeState):
            return state
        from transformers import StaticCache

        length = state.get_seq_length()
        static = StaticCache(config=self.model.config, max_cache_len=length + max_new_tokens)
        positions = torch.arange(length, device=self.device)
        for i, layer in enumerate(state.layers):
            static.update(layer.keys, layer.values, i, {"cache_position": positions})
            layer.keys = layer.values = None  # consumed: freed as we go, so memory holds one cache, not two
        if self._decode_forward is None:
            self._decode_forward, self._decode_config = self.model.forward, "sdpa+static_cache"
            if self.compile_decode:
                self._decode_forward = torch.compile(self.model.forward, mode="reduce-overhead", fullgraph=True)
                self._decode_config = "sdpa+static_cache+compiled"
        return StaticDecodeState(static, length)

    @property
    def decode_config(self) -> str:
        return self._decode_config

    @property
    def prefill_config(self) -> str:
        return f"{self.model.config._attn_implementation}+dynamic_cache"

    def state_nbytes(self, state) -> int:
        if state is None:
            return 0
        if isinstance(state, StaticDecodeState):
            state = state.cache
        total = 0
        for layer in state.layers:
            for t in (getattr(layer, "keys", None), getattr(layer, "values", None)):
                if isinstance(t, torch.Tensor):
                    total += t.numel() * t.element_size()
        return total

    def copy_state(self, state):
        return copy.deepcopy(state)

    def repeat_state(self, state, n: int):
        state = copy.deepcopy(state)
        state.batch_repeat_interleave(n)
        return state

    @property
    def max_context(self) -> int | None:
        return getattr(self.model.config, "max_position_embeddings", None)

    @property
    def vocab_size(self) -> int:
        return self.model.get_output_embeddings().weight.shape[0]

    @property
    def weights_nbytes(self) -> int:
        return count_bytes(self.model)

    @property
    def n_params(self) -> int:
        return count_params(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_output_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.get_output_embeddings().weight.device
