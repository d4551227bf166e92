"""Multi-query associative recall (Arora, Eyuboglu et al. 2023, "Zoology", zoology/data/multiquery_ar.py):
k key-value pairs, then a query region in which each key is asked once; the model must give its value at
the query. Per-query accuracy is over every query of every item (n = queries).

As zoology: keys from the lower half of the token range and values from the upper half, no key or value
twice; a point of context_len L has 2k pair tokens and L - 2k query-region tokens; key i is asked at slot
2 g_i of the region, the g_i drawn without replacement from 0..(L - 2k) // 2 - 1 with p(g) ~ power_a *
(g + 1)^(power_a - 1) (a power law: most queries come soon, some far); the other slots hold random tokens
of the range. Unlike zoology's, those random tokens are never one of the item's keys,
so each key occurs exactly twice (its pair, its query): zoology's own "each key present exactly once"
holds for the whole item at every length (at 16K tokens zoology's fill would repeat a key by chance)."""

from __future__ import annotations

import numpy as np

from rwkvbench.evals.probes import Probe, probe
from rwkvbench.evals.probes.items import Answer, Item, rng_for, token_range


@probe("mqar")
class MQAR(Probe):
    keys = ("kv_pairs", "n_items")

    def __init__(self, tokenizer, fmt, task):
        super().__init__(tokenizer, fmt, task)
        self.ks = [int(k) for k in task.kv_pairs]
        self.n = int(task.n_items)
        self.lo, self.hi = token_range(fmt["token_ranges"], tokenizer, "mqar")
        self.mid = (self.lo + self.hi) // 2
        self.power_a = float(fmt["power_a"])

    def variants(self) -> list[dict]:
        return [{"k": k} for k in self.ks]

    def unfit(self, context_len, variant):
        k = variant["k"]
        if 4 * k > context_len:
            return f"k={k} pairs need context_len >= {4 * k} (zoology: 2k pair tokens and 2k query slots)"
        if k > self.mid - self.lo or k > self.hi - self.mid:
            return f"k={k} pairs need {k} keys and values; the token range [{self.lo}, {self.hi}) has {self.mid - self.lo} keys"
        return None

    def items(self, context_len, variant, seed):
        k = variant["k"]
        rng = rng_for(seed, "mqar", context_len, k)
        space = (context_len - 2 * k) // 2
        p = self.power_a * np.arange(1, space + 1, dtype=np.float64) ** (self.power_a - 1)
        p /= p.sum()
        out = []
        for _ in range(self.n):
            keys = rng.choice(np.arange(self.lo, self.mid), k, replace=False)
            values = rng.choice(np.arange(self.mid, self.hi), k, replace=False)
            pairs = np.stack([keys, values], axis=1).reshape(-1)
            others = np.setdiff1d(np.arange(self.lo, self.hi), keys)
            region = rng.choice(others, context_len - 2 * k)
            gaps = rng.choice(space, k, replace=False, p=p)  # key i is asked at slot 2 * gaps[i]
            region[2 * gaps] = keys
            answers = [Answer(2 * k + 2 * int(g), values[i : i + 1]) for i, g in enumerate(gaps)]
            out.append(Item(np.concatenate([pairs, region]), sorted(answers, key=lambda a: a.pos)))
        return out
