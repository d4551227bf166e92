"""Passkey retrieval (Mohtashami & Jaggi 2023, landmark attention): an intro, filler, the needle "The pass
key is N. Remember it. N is the pass key." at a chosen depth of the filler, more filler, the question;
the model must give N (1..50000). Orders: question_last (theirs) and question_first (the question also
before the haystack, RULER's task-first order).

Built in token space so that a prompt is exactly context_len tokens (to a million and beyond): the
pieces are encoded once and joined by the separator's in-context tokens, the filler being the tokenizer's
own tiling of the repeated sentence (checked). Depth d puts round(d * H) of the item's H filler tokens
before the needle (an empty filler line is left out with its separator, which shifts the needle by at
most a separator at depth 1). Every depth and order of one context length asks the same keys, so their
scores are paired; the items of a point share everything before their key, prefilled once."""

from __future__ import annotations

import numpy as np

from rwkvbench.errors import ConfigError
from rwkvbench.evals.probes import Probe, choose, probe
from rwkvbench.evals.probes.items import Answer, Item, encode, infix, rng_for
from rwkvbench.units import SkipUnit


@probe("passkey")
class Passkey(Probe):
    keys = ("depths", "orders", "n_items")

    def __init__(self, tokenizer, fmt, task):
        super().__init__(tokenizer, fmt, task)
        self.depths = [float(d) for d in task.depths]
        if not self.depths or not all(0.0 <= d <= 1.0 for d in self.depths):
            raise ConfigError(f"passkey.depths={self.depths}: expected fractions of the haystack in [0, 1]")
        self.orders = choose(task.orders, list(fmt["heads"]), "passkey.orders")
        self.n = int(task.n_items)
        self.lo, self.hi = (int(v) for v in fmt["key_range"])
        self.sep = infix(tokenizer, fmt["separator"])
        self.heads = {o: encode(tokenizer, fmt["heads"][o].format(intro=fmt["intro"], question=fmt["question"]))
                      for o in self.orders}
        self.tail = encode(tokenizer, fmt["tail"])
        filler, joiner = fmt["filler"], fmt["filler_joiner"]
        self.first, self.unit = encode(tokenizer, filler), encode(tokenizer, joiner + filler)
        if not np.array_equal(encode(tokenizer, joiner.join([filler] * 3)),
                              np.concatenate([self.first, self.unit, self.unit])):
            raise ConfigError(f"passkey.filler: the tokenizer {tokenizer.name!r} does not tile {filler!r} joined "
                              f"by {joiner!r} sentence by sentence; choose a filler ending in punctuation")
        self._stream = self.first

    def variants(self) -> list[dict]:
        return [{"depth": d, "order": o} for d in self.depths for o in self.orders]

    def filler(self, n: int) -> np.ndarray:
        """The first n tokens of the filler repeated (their garbage_inf[:n], in tokens)."""
        if len(self._stream) < n:
            reps = -(-(n - len(self.first)) // len(self.unit))
            self._stream = np.concatenate([self.first, np.tile(self.unit, 2 * reps)])
        return self._stream[:n]

    def needle(self, key: int) -> tuple[np.ndarray, np.ndarray]:
        return (encode(self.tokenizer, self.fmt["needle"].format(key=key)),
                encode(self.tokenizer, self.fmt["answer"].format(key=key)))

    def haystack(self, context_len: int, order: str, needle_len: int) -> int:
        """Filler tokens of an item (both filler lines present: four separators)."""
        return context_len - len(self.heads[order]) - needle_len - len(self.tail) - 4 * len(self.sep)

    def unfit(self, context_len, variant):
        longest = max(len(self.needle(k)[0]) for k in (self.lo, self.hi, 99999, 12345)) + 2  # and some slack
        room = self.haystack(context_len, variant["order"], longest)
        if room < 2:
            return f"context_len={context_len} leaves no room for filler around the needle ({room} tokens)"
        return None

    def items(self, context_len, variant, seed):
        depth, head = variant["depth"], self.heads[variant["order"]]
        rng = rng_for(seed, "passkey", context_len)  # the same keys at every depth and order
        out = []
        for key in rng.integers(self.lo, self.hi + 1, self.n):
            needle, answer = self.needle(int(key))
            total = self.haystack(context_len, variant["order"], len(needle))
            if total < 2:
                raise SkipUnit(f"context_len={context_len} leaves no room for filler around the needle of key {key}")
            before = int(np.floor(depth * total + 0.5))
            after = total - before
            if before == 0:  # no filler line before the needle: its separator goes to the filler after
                after += len(self.sep)
            elif after == 0:
                before += len(self.sep)
            pieces = [head, self.sep]
            pieces += [self.filler(before), self.sep] if before else []
            pieces += [needle, self.sep]
            pieces += [self.filler(after), self.sep] if after else []
            prompt = np.concatenate(pieces + [self.tail])
            assert len(prompt) == context_len, (len(prompt), context_len)
            start = len(head) + len(self.sep) + (before + len(self.sep) if before else 0)
            out.append(Item(np.concatenate([prompt, answer[:-1]]), [Answer(context_len - 1, answer)],
                            meta={"needle_start": start, "filler_before": before, "filler": before + after}))
        return out
