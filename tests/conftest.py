import os
from pathlib import Path

import pytest
import torch

from rwkvbench.models import checkpoints as ck
from rwkvbench.models.build import build_rwkv4
from rwkvbench.models.rwkv4 import RWKV4Model
from rwkvbench.models.tokenizer import ByteTokenizer

# Never let a test reach for a hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("RWKV_CUDA_ON", "0")
# fp32 comparisons need fp32 GEMMs. On one H100 instance cuBLAS ran some fp32 products at TF32
# precision although torch leaves TF32 off (nine fp32 tests off by 4-5e-4, one of them transformers'
# GPTNeoX alone); this switch, read when CUDA starts, forbids it.
os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NEOX_TOKENIZER = SHARED_DATA / "tokenizer" / "20B_tokenizer.json"


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|: the relative error of a against reference b."""
    a, b = a.double(), b.double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item()


def rwkv4_model(shape: ck.RWKV4Shape, seed: int = 0, dtype=torch.float32, device="cpu") -> RWKV4Model:
    sd = ck.random_rwkv4(shape, seed=seed)
    return RWKV4Model(build_rwkv4(sd, shape, dtype=dtype, device=device), ByteTokenizer())


@pytest.fixture
def neox_tokenizer_path():
    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"{NEOX_TOKENIZER} not present")
    return NEOX_TOKENIZER


@pytest.fixture
def one_thread():
    """Tiny models on CPU are all dispatch overhead: intra-op threads only contend (a tiny training step
    ran 10x slower with two threads than with one on a busy two-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
