"""Shared by the recall tests: a probe's part config from its task file with overrides, its probe, and
one thread for torch (the tiny models are faster on one, and a shared CI machine stays fair)."""

import pytest
import torch
from omegaconf import OmegaConf

from rwkvbench.config import load_option
from rwkvbench.evals.probes import get_probe
from rwkvbench.evals.recall import probe_format
from conftest import NEOX_TOKENIZER, SHARED_DATA

CORPUS = SHARED_DATA / "corpus" / "test.jsonl.xz"
PROBES = ("copy", "phonebook", "mqar", "passkey")


def part(probe: str, **overrides):
    cfg = load_option("task", probe).parts[0]
    if probe == "copy" and not CORPUS.is_file():  # the natural kind needs the shared corpus
        overrides.setdefault("kinds", ["random"])
    return OmegaConf.merge(cfg, {"corpus_path": str(CORPUS), **overrides})


def make_probe(probe: str, tokenizer, **overrides):
    task = part(probe, **overrides)
    return get_probe(probe)(tokenizer, probe_format(task), task)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
