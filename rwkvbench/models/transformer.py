"""Any causal LM from `transformers` (Pythia / GPT-NeoX first) behind the SequenceModel interface.

The state is transformers' KV cache (a `Cache` object, extended in place by each call). Attention runs
through PyTorch SDPA.
"""

from __future__ import annotations

import copy

import torch

from rwkvbench.models.base import SequenceModel, count_params
from rwkvbench.models.tokenizer import Tokenizer


class HFCausalLM(SequenceModel):
    family = "transformer"

    def __init__(self, model, tokenizer: Tokenizer, name: str = "hf"):
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.name = name

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
            logits_to_keep=1 if logits == "last" else 0,
        )
        lg = out.logits.float()
        return (lg[:, -1] if logits == "last" else lg), out.past_key_values

    @torch.inference_mode()
    def step(self, ids, state):
        ids = torch.as_tensor(ids, dtype=torch.long, device=self.device).view(-1, 1)
        return self.prefill(ids, state, logits="last")

    def state_nbytes(self, state) -> int:
        if state is None:
            return 0
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
    def n_params(self) -> int:
        return count_params(self.model)

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_output_embeddings().weight.dtype

    @property
    def device(self) -> torch.device:
        return self.model.get_output_embeddings().weight.device
