"""Training text: Pile-format files read once, tokenized once into cached uint16 token files, and cut into
context windows in a seeded order that depends on nothing but the seed (both families see the same
tokens in the same order).

A Pile-format file holds one JSON document per line, `{"text": "...", "meta": {...}}`, plain (`.jsonl`)
or compressed (`.jsonl.xz`, `.jsonl.zst`). A file's token stream is its documents joined by the
end-of-text marker, with one in front: `[eos] + encode(DOC_SEPARATOR.join(documents))`, which is what
the perplexity task scores for the same file (evals/perplexity.py reads it through `pile_text`). For the
GPT-NeoX-20B tokenizer the marker is the single token 0 and the documents are tokenized one by one,
which gives the same ids (the tokenizer splits its text at added tokens); for the byte tokenizer the
marker is its 13 bytes in both.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rwkvbench.errors import DataError

PILE_SUFFIXES = (".jsonl", ".jsonl.xz", ".jsonl.zst")
DOC_SEPARATOR = "<|endoftext|>"
CACHE_VERSION = "1"  # bump when the stream format changes


def is_pile_file(path) -> bool:
    return str(path).endswith(PILE_SUFFIXES)


def _open_text(path: Path):
    name = str(path)
    if name.endswith(".xz"):
        import lzma

        return lzma.open(path, "rt", encoding="utf-8")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst needs the zstandard package (pip install zstandard)") from None
        return io.TextIOWrapper(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True),
                                encoding="utf-8")
    return open(path, encoding="utf-8")


def read_documents(path) -> list[str]:
    """The `text` of every line of a Pile-format file, in file order."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (expected a Pile-format .jsonl, .jsonl.xz or .jsonl.zst)")
    if not is_pile_file(path):
        raise DataError(f"{path}: expected a Pile-format file ending in {', '.join(PILE_SUFFIXES)}")
    docs = []
    try:
        with _open_text(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    doc = json.loads(line)
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}:{n}: not a JSON line ({e.msg})") from None
                if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
                    raise DataError(f"{path}:{n}: expected an object with a string 'text' field")
                docs.append(doc["text"])
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read it ({type(e).__name__}: {e}); truncated or not {path.suffix}?") from None
    if not docs:
        raise DataError(f"{path}: no documents")
    return docs


def pile_text(path) -> str:
    """A Pile-format file as one text: its documents joined by the end-of-text marker."""
    return DOC_SEPARATOR.join(read_documents(path))


def encode_many(tokenizer, texts: list[str]) -> list[list[int]]:
    batch = getattr(tokenizer, "encode_batch", None)
    return batch(texts) if batch is not None else [tokenizer.encode(t) for t in texts]


def tokenize_file(path, tokenizer) -> np.ndarray:
    """The file's token stream (see the module docstring) as uint16."""
    if tokenizer.vocab_size > np.iinfo(np.uint16).max + 1:
        raise DataError(f"tokenizer {tokenizer.name!r}: {tokenizer.vocab_size} tokens do not fit the uint16 cache")
    docs = read_documents(path)
    separator = tokenizer.encode(DOC_SEPARATOR)
    parts = [np.array([tokenizer.eos_token_id], dtype=np.uint16)]
    for i, ids in enumerate(encode_many(tokenizer, docs)):
        if i:
            parts.append(np.asarray(separator, dtype=np.uint16))
        parts.append(np.asarray(ids, dtype=np.uint16))
    return np.concatenate(parts)


def tokenizer_identity(tokenizer) -> str:
    """Name plus the content of its file (two copies of one tokenizer share a cache)."""
    path = getattr(tokenizer, "path", None)
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:12] if path else ""
    return f"{tokenizer.name}:{digest}"


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_path(path, tokenizer, cache_dir) -> Path:
    key = hashlib.sha256("|".join([CACHE_VERSION, _file_digest(Path(path)), tokenizer_identity(tokenizer)]).encode())
    name = Path(path).name.split(".")[0]
    return Path(cache_dir).expanduser() / f"{name}-{key.hexdigest()[:16]}.u16"


def _write_cache(path: str, tokenizer_spec: tuple, target: str, threads: int) -> str:
    """Tokenize one file into `target` (atomically). Runs in a worker process."""
    os.environ.setdefault("RAYON_NUM_THREADS", str(threads))  # the tokenizers library's thread pool
    from rwkvbench.models.tokenizer import load_tokenizer

    ids = tokenize_file(path, load_tokenizer(*tokenizer_spec))
    tmp = Path(f"{target}.{os.getpid()}.tmp")
    ids.tofile(tmp)
    os.replace(tmp, target)
    return target


def token_files(paths, tokenizer, tokenizer_spec: tuple, cache_dir, workers: int | None = None) -> list[np.ndarray]:
    """Each file's token stream, memory-mapped from the cache (tokenized first where missing, the files
    in parallel: `workers` processes, default one per file up to the CPU count)."""
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise DataError(f"{p}: no such file")
    targets = [cache_path(p, tokenizer, cache_dir) for p in paths]
    todo = [(p, t) for p, t in zip(paths, targets) if not t.is_file()]
    if todo:
        targets[0].parent.mkdir(parents=True, exist_ok=True)
        cores = os.cpu_count() or 1
        workers = max(1, min(workers or cores, len(todo)))
        if workers == 1:
            for p, t in todo:
                _write_cache(str(p), tokenizer_spec, str(t), cores)
        else:
            import multiprocessing

            with concurrent.futures.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
                jobs = [pool.submit(_write_cache, str(p), tokenizer_spec, str(t), max(1, cores // workers)) for p, t in todo]
                for job in jobs:
                    job.result()
    return [np.memmap(t, dtype=np.uint16, mode="r") for t in targets]


@dataclass
class Windows:
    """Windows of context_len + 1 tokens (inputs and shifted targets) over token streams, back to back
    (stride context_len, overlapping by one token), never across two streams. The run's sample i is
    window order_e[i mod n] of epoch e = i // n, each epoch a fresh permutation drawn from (seed, e)."""

    streams: list[np.ndarray]
    context_len: int
    seed: int = 0

    def __post_init__(self):
        self.starts = [(s, lo) for s, ids in enumerate(self.streams)
                       for lo in range(0, len(ids) - self.context_len, self.context_len)]
        if not self.starts:
            raise DataError(f"the training text is shorter than one window of {self.context_len + 1} tokens")
        self._orders: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def tokens_per_epoch(self) -> int:
        """Target tokens in one pass over every window."""
        return len(self.starts) * self.context_len

    def _order(self, epoch: int) -> np.ndarray:
        if epoch not in self._orders:
            self._orders = {epoch: np.random.default_rng([self.seed, epoch]).permutation(len(self.starts))}
        return self._orders[epoch]

    def batch(self, index: int, batch_size: int) -> torch.Tensor:
        """The run's batch number `index` as a (batch_size, context_len + 1) int64 tensor."""
        rows = []
        for i in range(index * batch_size, (index + 1) * batch_size):
            s, lo = self.starts[self._order(i // len(self.starts))[i % len(self.starts)]]
            rows.append(self.streams[s][lo : lo + self.context_len + 1])
        return torch.from_numpy(np.stack(rows).astype(np.int64))


def epochs_for(tokens: int, windows: Windows) -> float:
    return tokens / windows.tokens_per_epoch


def check_epochs(tokens: int, windows: Windows, max_epochs: float, what: str) -> None:
    """Refuse, before any work, a run that would see some token more than max_epochs times."""
    if tokens > max_epochs * windows.tokens_per_epoch:
        need = math.ceil(tokens / max_epochs)
        raise DataError(f"{what}: {tokens:,} training tokens is more than {max_epochs:g} epochs of the "
                        f"{windows.tokens_per_epoch:,} available; give more text (at least {need:,} tokens) or fewer tokens")


def expand_files(patterns, what: str) -> list[Path]:
    """Files named by one glob pattern or a list of patterns and paths, sorted within each pattern."""
    import glob

    patterns = [patterns] if isinstance(patterns, str) else list(patterns or [])
    files = []
    for pattern in patterns:
        matched = sorted(glob.glob(str(Path(pattern).expanduser())))
        if not matched:
            raise DataError(f"{what}: {pattern} matches no file (give data.root= the folder holding corpus/ and "
                            f"tokenizer/, or $RWKVBENCH_DATA, or {what}= files or globs)")
        files += [Path(m) for m in matched]
    if not files:
        raise DataError(f"{what}: no files given")
    return files


@dataclass
class Corpus:
    """Training windows and the validation stream, tokenized (cached) with one tokenizer."""

    name: str
    windows: Windows
    valid: np.ndarray
    tokenizer: object
    tokenizer_name: str
    tokenizer_path: str | None


def load_corpus(cfg, context_len: int, seed: int) -> Corpus:
    """cfg: conf/train/data/*.yaml (train: patterns; shards: how many of them, first first; valid: a file;
    tokenizer, tokenizer_path, cache_dir, workers)."""
    from rwkvbench.models.tokenizer import load_tokenizer

    train = expand_files(cfg.train, "data.train")
    if cfg.get("shards"):
        train = train[: int(cfg.shards)]
    valid = expand_files(cfg.valid, "data.valid")[0]
    path = cfg.get("tokenizer_path")
    try:
        tokenizer = load_tokenizer(cfg.tokenizer, str(Path(path).expanduser().resolve()) if path else None)
    except (FileNotFoundError, ValueError) as e:
        raise DataError(f"data.tokenizer={cfg.tokenizer!r}: {e}") from None
    spec = (cfg.tokenizer, getattr(tokenizer, "path", None))
    streams = token_files(train + [valid], tokenizer, spec, cfg.cache_dir, cfg.get("workers"))
    return Corpus(cfg.name, Windows(streams[:-1], context_len, seed), streams[-1], tokenizer, cfg.tokenizer, spec[1])
