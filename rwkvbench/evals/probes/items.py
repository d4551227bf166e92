"""What a recall item is, and the helpers every item generator shares: seeded randomness, token ranges,
and text in the model's own token space.

An item is one token sequence: the prompt followed by the gold answer(s), teacher-forced. Each answer
names the position whose logits must predict its first token; later answer tokens are predicted from the
positions after it, where the input is the gold answer itself (so "every teacher-forced prediction is
the argmax" is exactly "greedy decoding reproduces the answer"). A single-token answer may be followed
by anything (MQAR's query region holds random tokens after each query key).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from rwkvbench.errors import ConfigError


@dataclass
class Answer:
    pos: int  # logits at ids[pos] predict tokens[0], at ids[pos + i] predict tokens[i]
    tokens: np.ndarray


@dataclass
class Item:
    ids: np.ndarray  # int64: the prompt and the teacher-forced answers
    answers: list[Answer]
    group: int = 0  # items of one group may share a haystack: their common prefix is prefilled once
    meta: dict = field(default_factory=dict)  # generator facts reported as rows (entries, needle position)

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=np.int64)
        for a in self.answers:
            a.tokens = np.asarray(a.tokens, dtype=np.int64)
            end = a.pos + len(a.tokens)
            if a.pos < 0 or len(a.tokens) == 0 or end > len(self.ids) + 1:
                raise ValueError(f"answer at {a.pos} of {len(a.tokens)} tokens does not fit {len(self.ids)} ids")
            if len(a.tokens) > 1 and not np.array_equal(self.ids[a.pos + 1 : end], a.tokens[:-1]):
                raise ValueError(f"answer at {a.pos}: the ids after it are not its tokens (not teacher-forced)")


def rng_for(seed: int, *parts) -> np.random.Generator:
    """A generator seeded by `seed` and the parts that name what is generated (stable across processes:
    no Python hash)."""
    words = [zlib.crc32(str(p).encode()) for p in parts]
    return np.random.default_rng(np.random.SeedSequence([int(seed), *words]))


def token_range(ranges, tokenizer, where: str) -> tuple[int, int]:
    """The [lo, hi) range of ids random-token items draw from, for this tokenizer (by its name)."""
    if tokenizer.name not in ranges:
        raise ConfigError(f"{where}.token_ranges has no range for tokenizer {tokenizer.name!r}; "
                          f"give {where}.token_ranges.{tokenizer.name}=[lo,hi]")
    lo, hi = (int(v) for v in ranges[tokenizer.name])
    if not 0 <= lo < hi <= tokenizer.vocab_size or lo <= tokenizer.eos_token_id < hi:
        raise ConfigError(f"{where}.token_ranges.{tokenizer.name}=[{lo}, {hi}]: expected 0 <= lo < hi <= "
                          f"{tokenizer.vocab_size} (the vocabulary) without end-of-text ({tokenizer.eos_token_id})")
    return lo, hi


def encode(tokenizer, text: str) -> np.ndarray:
    return np.asarray(tokenizer.encode(text), dtype=np.int64)


def infix(tokenizer, text: str) -> np.ndarray:
    """The tokens of `text` as they stand between two words: a BPE tokenizer encodes "\\n\\n" alone as one
    token but as two between words ("a\\n\\nb"), and items are built from pieces."""
    word = tokenizer.encode("x")
    whole = tokenizer.encode("x" + text + "x")
    if whole[: len(word)] != word or whole[len(whole) - len(word):] != word:
        raise ConfigError(f"{text!r}: the tokenizer {tokenizer.name!r} merges it with its neighbours; "
                          f"choose a separator that starts and ends a token")
    return np.asarray(whole[len(word) : len(whole) - len(word)], dtype=np.int64)


def variant_label(variant: dict) -> str:
    """`k=64`, `depth=0.50;order=question_first`: the results' variant column."""
    return ";".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in variant.items())
