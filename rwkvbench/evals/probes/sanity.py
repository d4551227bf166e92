"""Two SequenceModels that bound what a probe can report, so a probe that cannot fail is caught:

* `OracleModel` answers from the prompt: it finds the longest earlier match of the tokens just read and
  predicts what followed it (the n-gram copy algorithm of Jelassi et al., which solves every probe here:
  copy, phone book, MQAR and passkey all ask for what followed something seen once). It must score 100%.
* `UniformModel` has constant logits: every answer token has probability 1 / V, and its argmax is always
  token 0 (which no probe asks for). It must score chance.

Their state is the token history (B, T): it serves `prefill`, `step`, `copy_state` and `repeat_state`.
"""

from __future__ import annotations

import numpy as np
import torch

from rwkvbench.models.base import SequenceModel

CONFIDENT = 30.0  # the oracle's logit for its prediction (the rest are 0)


class HistoryModel(SequenceModel):
    """A model whose state is the tokens read so far and whose logits are a function of them."""

    def __init__(self, tokenizer, name: str):
        self.tokenizer, self.name = tokenizer, name
        self.checkpoint = f"{name}:none"

    def next_logits(self, history: np.ndarray) -> np.ndarray:
        """Logits (V,) after reading history (T,)."""
        raise NotImplementedError

    def prefill(self, ids, state=None, *, logits="all"):
        ids = self.as_ids(ids).cpu().numpy()
        start = 0 if state is None else state.shape[1]
        state = ids if state is None else np.concatenate([state, ids], axis=1)
        if logits == "none":
            return None, state
        ends = [state.shape[1]] if logits == "last" else range(start + 1, state.shape[1] + 1)
        out = torch.tensor(np.array([[self.next_logits(seq[:t]) for t in ends] for seq in state]))
        return (out[:, 0] if logits == "last" else out), state

    def step(self, ids, state):
        return self.prefill(torch.as_tensor(ids).view(-1, 1), state, logits="last")

    def state_nbytes(self, state) -> int:
        return 0 if state is None else state.nbytes

    def copy_state(self, state):
        return state.copy()

    def repeat_state(self, state, n: int):
        return np.repeat(state, n, axis=0)

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    @property
    def n_params(self) -> int:
        return 0

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")


class OracleModel(HistoryModel):
    family = "oracle"

    def __init__(self, tokenizer, name: str = "oracle"):
        super().__init__(tokenizer, name)

    def next_logits(self, history):
        out = np.zeros(self.vocab_size, dtype=np.float32)
        t = len(history) - 1
        cands, best, m = np.flatnonzero(history[:t] == history[t]), None, 1  # where the last token stood before
        while len(cands):  # extend the match backwards while some candidates still agree
            best = cands
            cands = cands[cands >= m]
            cands = cands[history[cands - m] == history[t - m]] if t >= m else cands[:0]
            m += 1
        if best is not None:
            out[history[best.max() + 1]] = CONFIDENT  # what followed the latest of the longest matches
        return out


class UniformModel(HistoryModel):
    family = "uniform"

    def __init__(self, tokenizer, name: str = "uniform"):
        super().__init__(tokenizer, name)

    def next_logits(self, history):
        return np.zeros(self.vocab_size, dtype=np.float32)
