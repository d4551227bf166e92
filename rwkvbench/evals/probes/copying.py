"""Copy (Jelassi et al. 2024, "Repeat After Me"): a text shown `shows` times, then its first token(s); the
model must continue with the rest of the text, greedily. The context holds shows + 1 copies of the text
(the last one teacher-forced), so a point of context_len C copies a text of
(C - shows * separator) // (shows + 1) tokens."""

from __future__ import annotations

import numpy as np

from rwkvbench.evals.probes import Probe, choose, probe
from rwkvbench.evals.probes.corpus import load_corpus
from rwkvbench.evals.probes.items import Answer, Item, infix, rng_for, token_range

KINDS = ("natural", "shuffled", "random")


@probe("copy")
class Copy(Probe):
    keys = ("kinds", "n_items", "corpus_path")

    @classmethod
    def check(cls, task) -> None:
        if set(choose(task.kinds, KINDS, "copy.kinds")) - {"random"}:
            load_corpus(str(task.corpus_path))  # read as the run reads it (cached for it)

    def __init__(self, tokenizer, fmt, task):
        super().__init__(tokenizer, fmt, task)
        self.kinds = choose(task.kinds, KINDS, "copy.kinds")
        self.n = int(task.n_items)
        self.sep = infix(tokenizer, fmt["separator"])
        self.shows, self.hint = int(fmt["shows"]), int(fmt["hint_tokens"])
        self.range = token_range(fmt["token_ranges"], tokenizer, "copy") if "random" in self.kinds else None
        self.corpus = load_corpus(str(task.corpus_path)) if set(self.kinds) - {"random"} else None

    def variants(self) -> list[dict]:
        return [{"kind": k} for k in self.kinds]

    def text_length(self, context_len: int) -> int:
        return (context_len - self.shows * len(self.sep)) // (self.shows + 1)

    def unfit(self, context_len, variant):
        n = self.text_length(context_len)
        if n <= self.hint:
            return f"context_len={context_len} leaves {n} tokens per copy; at least {self.hint + 1} are needed"
        return None

    def text(self, kind: str, n: int, rng) -> np.ndarray:
        if kind == "random":
            return rng.integers(*self.range, size=n)
        window = self.corpus.window(self.tokenizer, n, rng)
        return rng.permutation(window) if kind == "shuffled" else window

    def items(self, context_len, variant, seed):
        rng = rng_for(seed, "copy", context_len, variant["kind"])
        n = self.text_length(context_len)
        out = []
        for _ in range(self.n):
            text = self.text(variant["kind"], n, rng)
            prompt = np.concatenate([*[text, self.sep] * self.shows, text[: self.hint]])
            answer = text[self.hint :]
            out.append(Item(np.concatenate([prompt, answer[:-1]]), [Answer(len(prompt) - 1, answer)]))
        return out

    def params(self, variant):
        if variant["kind"] == "random":
            return {"token_range": list(self.range)}
        return {"corpus_sha256": self.corpus.sha256}
