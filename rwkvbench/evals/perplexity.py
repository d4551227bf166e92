"""Perplexity of a text in fixed windows, each window scored from an empty state by both families.

The default text is the package's own documentation (its README, shipped as package metadata, plus
module docstrings), so the offline default needs no download. bits_per_byte is the number comparable
across tokenizers.
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import torch
from tqdm.auto import tqdm

from rwkvbench.errors import decode_utf8
from rwkvbench.evals import register
from rwkvbench.units import Unit


def package_docs() -> str:
    """The README (from the installed package's metadata) followed by every module's docstring, read from
    the source (no module is imported: some need a GPU package, e.g. the Triton kernels)."""
    import ast
    import importlib.metadata
    import pkgutil

    import rwkvbench

    parts = []
    try:
        parts.append(importlib.metadata.metadata("rwkvbench").get_payload() or "")
    except importlib.metadata.PackageNotFoundError:
        pass
    for mod in pkgutil.walk_packages(rwkvbench.__path__, "rwkvbench."):
        if mod.name.startswith(("rwkvbench.conf", "rwkvbench.csrc", "rwkvbench.__main__")):
            continue
        origin = mod.module_finder.find_spec(mod.name).origin
        doc = ast.get_docstring(ast.parse(Path(origin).read_text(encoding="utf-8")), clean=False)
        if doc:
            parts.append(doc.strip())
    return "\n\n".join(p for p in parts if p)


def load_text(source: str) -> str:
    """The text to score: package_docs, a Pile-format file's documents, or a UTF-8 text file. The run's
    validation reads it first (validate.check_perplexity_part); a file is read once for both."""
    if source == "package_docs":
        return package_docs()
    path = Path(source).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{source}: perplexity text not found (give a text file or 'package_docs')")
    stat = path.stat()
    return _file_text(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _file_text(path: str, mtime_ns: int, size: int) -> str:
    from rwkvbench.train.data import is_pile_file, pile_text

    if is_pile_file(path):  # a Pile-format split: its documents as the trainer's validation stream joins them
        return pile_text(path)
    return decode_utf8(Path(path).read_bytes(), path)


def windows(ids: list[int], length: int) -> list[list[int]]:
    """Windows of length+1 tokens overlapping by one: each scores `length` targets from its own inputs."""
    return [ids[i : i + length + 1] for i in range(0, len(ids) - 1, length)]


@torch.inference_mode()
def window_nll(model, batch: list[list[int]]) -> torch.Tensor:
    """Per-token negative log-likelihood (B, T) of a batch of equal-length windows."""
    ids = model.as_ids(batch)
    logits, _ = model.prefill(ids[:, :-1])
    logp = torch.log_softmax(logits, dim=-1)
    return -logp.gather(-1, ids[:, 1:, None]).squeeze(-1)


def measure(model, task, text: str) -> list[dict]:
    ids = [model.tokenizer.eos_token_id] + model.tokenizer.encode(text)
    ids = ids[: task.max_tokens + 1]
    scored_bytes = len(model.tokenizer.decode(ids[1:]).encode("utf-8"))
    wins = windows(ids, task.context_len)
    groups: dict[int, list] = {}
    for w in wins:  # batch windows of equal length together (the last one may be shorter)
        groups.setdefault(len(w), []).append(w)
    nll = []
    with tqdm(total=len(wins), desc=f"perplexity {model.name}", leave=False) as bar:
        for group in groups.values():
            for i in range(0, len(group), task.batch_size):
                chunk = group[i : i + task.batch_size]
                nll.append(window_nll(model, chunk).flatten().double().cpu())
                bar.update(len(chunk))
    nll = torch.cat(nll)
    n = nll.numel()
    mean, se = nll.mean().item(), (nll.std().item() / math.sqrt(n) if n > 1 else None)
    return [
        {"metric": "nll_per_token", "value": mean, "stderr": se, "n": n},
        {"metric": "perplexity", "value": math.exp(mean), "stderr": None if se is None else math.exp(mean) * se, "n": n},
        {"metric": "bits_per_byte", "value": nll.sum().item() / math.log(2) / scored_bytes, "n": scored_bytes},
    ]


@register("perplexity", keys=("text", "context_len", "max_tokens", "batch_size"))
def units(model, task) -> list[Unit]:
    text = load_text(task.text)
    params = {"text_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], "max_tokens": task.max_tokens}
    key = {"suite": "perplexity", "task": task.name, "variant": str(task.text), "context_len": task.context_len,
           "batch_size": task.batch_size}
    return [Unit(key=key, params=params, measure=lambda budget: measure(model, task, text), label=str(task.text))]
