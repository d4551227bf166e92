"""Tokenizers: GPT-NeoX-20B (what every RWKV-4-Pile and Pythia model was trained with) and a byte-level
one for tiny test models, so the offline default needs no download."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Protocol

from rwkvbench.errors import ConfigError, DataError

NEOX20B_HUB_REPO = "EleutherAI/gpt-neox-20b"
# GPT-NeoX-20B's vocabulary (RWKV-4-Pile heads have exactly this many rows; Pythia pads to 50304+).
NEOX20B_VOCAB = 50277
# Where a local copy of 20B_tokenizer.json may be found, before falling back to the hub.
NEOX20B_ENV = "RWKVBENCH_NEOX_TOKENIZER"


class Tokenizer(Protocol):
    name: str
    vocab_size: int
    eos_token_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes are tokens 0..255; 256 is end-of-text."""

    name = "bytes"
    vocab_size = 257
    eos_token_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")


class HFTokenizer:
    """A `tokenizers` JSON file (e.g. 20B_tokenizer.json). max_vocab drops added tokens at or past that
    id: copies of 20B_tokenizer.json circulate with chat tokens appended (<|im_start|>, "assistant",
    "RWKV" at 50277+), which would split those words out of plain text and index past the head."""

    def __init__(self, path: str | Path, name: str = "neox20b", max_vocab: int | None = None):
        from tokenizers import Tokenizer as _Tok

        try:
            spec = json.loads(Path(path).read_text(encoding="utf-8"))
            if max_vocab is not None:
                spec["added_tokens"] = [t for t in spec.get("added_tokens", []) if t["id"] < max_vocab]
            self._tok = _Tok.from_str(json.dumps(spec))
        except Exception as e:  # tokenizers raises a bare Exception with a serde message
            raise DataError(f"{path}: not a readable tokenizers JSON file ({e})") from None
        self.name = name
        self.path = str(path)
        self.vocab_size = self._tok.get_vocab_size(with_added_tokens=True)
        eos = self._tok.token_to_id("<|endoftext|>")
        self.eos_token_id = 0 if eos is None else eos

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        """Many texts at once, on all cores (the library's own thread pool)."""
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(list(ids), skip_special_tokens=False)


TOKENIZERS = ("neox20b", "bytes")


def tokenizer_file(name: str = "neox20b", path: str | None = None) -> Path | None:
    """The file a tokenizer reads (None for the byte tokenizer, which reads none): `path`, else
    $RWKVBENCH_NEOX_TOKENIZER, else the hub's copy (cached, or downloaded where the hub is reachable).
    Cheap, so a run can check it before any model loads; each failure is one line."""
    if name == "bytes":
        if path:
            raise ConfigError(f"tokenizer_path={path}: this model uses the byte tokenizer (tokenizer: bytes), which "
                              f"reads no file; drop tokenizer_path or choose a model with tokenizer: neox20b")
        return None
    if name != "neox20b":
        raise ConfigError(f"tokenizer: unknown tokenizer {name!r}; valid: {', '.join(TOKENIZERS)}")
    given = path or os.environ.get(NEOX20B_ENV)
    if given:
        file = Path(given).expanduser()
        if not file.is_file():
            source = "tokenizer_path" if path else f"${NEOX20B_ENV}"
            raise DataError(f"{source}={given}: no such file (expected the GPT-NeoX-20B tokenizer JSON, "
                            f"e.g. 20B_tokenizer.json)")
        return file
    return _hub_tokenizer_file()


@functools.cache
def _hub_tokenizer_file() -> Path:
    from rwkvbench.models.hub import hub_file

    return hub_file(NEOX20B_HUB_REPO, "tokenizer.json", what="GPT-NeoX-20B tokenizer", error=DataError,
                    advice=f"give tokenizer_path= a 20B_tokenizer.json or set ${NEOX20B_ENV}")


def load_tokenizer(name: str = "neox20b", path: str | None = None) -> Tokenizer:
    """name: "bytes" | "neox20b". For neox20b: `path`, else $RWKVBENCH_NEOX_TOKENIZER, else the hub."""
    file = tokenizer_file(name, path)
    if file is None:
        return ByteTokenizer()
    return HFTokenizer(file, name="neox20b", max_vocab=NEOX20B_VOCAB)
