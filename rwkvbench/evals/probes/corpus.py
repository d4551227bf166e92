"""Natural text for the copy probe: the documents of a Pile-style JSON-lines file (plain, .xz or .gz), one
{"text": ...} per line, tokenized on demand and kept per tokenizer."""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
from functools import lru_cache
from pathlib import Path

import numpy as np

from rwkvbench.errors import DataError


def _open(path: Path):
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    return opener(path, "rt", encoding="utf-8")


class Corpus:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise DataError(f"corpus_path={path}: no such file (expected Pile-style JSON lines, e.g. the shared "
                            f"corpus/test.jsonl.xz; set $RWKVBENCH_CORPUS, or the copy part's key: "
                            f"task.parts.0.corpus_path= for task=copy and task=recall)")
        self.docs = []
        try:
            with _open(self.path) as f:
                for i, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    text = json.loads(line).get("text")
                    if not isinstance(text, str):
                        raise DataError(f"{self.path}:{i}: no string field 'text' (expected {{\"text\": ...}} per line)")
                    # as the paper: one line of text (their C4 strings had newlines replaced by spaces)
                    self.docs.append(text.replace("\n", " ").strip())
        except (json.JSONDecodeError, UnicodeDecodeError, lzma.LZMAError, OSError, EOFError) as e:
            raise DataError(f"{self.path}: not readable JSON lines ({type(e).__name__}: {e})") from None
        if not self.docs:
            raise DataError(f"{self.path}: no documents")
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()[:16]
        self._tokens: dict[tuple[str, int], np.ndarray] = {}

    def tokens(self, tokenizer, i: int) -> np.ndarray:
        key = (tokenizer.name, i)
        if key not in self._tokens:
            self._tokens[key] = np.asarray(tokenizer.encode(self.docs[i]), dtype=np.int64)
        return self._tokens[key]

    def window(self, tokenizer, length: int, rng: np.random.Generator) -> np.ndarray:
        """`length` consecutive tokens from random documents joined end to end (as the paper: ten random C4
        documents concatenated, a window at a random start)."""
        parts, total = [], 0
        for i in rng.permutation(len(self.docs)):
            parts.append(self.tokens(tokenizer, int(i)))
            total += len(parts[-1])
            if total >= length:
                break
        if total < length:
            raise DataError(f"{self.path}: {total} tokens in all, fewer than the {length} a copy item needs")
        joined = np.concatenate(parts)
        start = int(rng.integers(0, len(joined) - length + 1))
        return joined[start : start + length]


@lru_cache(maxsize=4)
def load_corpus(path: str) -> Corpus:
    return Corpus(path)
