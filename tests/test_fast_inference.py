"""The fast inference paths give the reference path's logits: chunked prefill, graph-captured RWKV
decode, static-cache Transformer decode."""

import pytest
import torch

from conftest import rel_err
from rwkvbench import load_model


def test_chunked_prefill_equals_one_chunk():
    model = load_model("rwkv4_tiny", device="cpu")
    ids = torch.randint(0, 257, (2, 50), generator=torch.Generator().manual_seed(0))
    whole, s_whole = model.prefill(ids)
    model.prefill_chunk = 7
    chunked, s_chunked = model.prefill(ids)
    last, _ = model.prefill(ids, logits="last")
    none, s_none = model.prefill(ids, logits="none")
    assert rel_err(chunked, whole) < 1e-5 and rel_err(last, whole[:, -1]) < 1e-5 and none is None
    for a, b, c in zip(s_chunked.tensors(), s_whole.tensors(), s_none.tensors()):
        assert rel_err(a, b) < 1e-5 and torch.equal(a, c)


def test_prepare_decode_is_identity_on_cpu():
    for name in ("rwkv4_tiny", "neox_tiny"):
        model = load_model(name, device="cpu")
        _, state = model.prefill([[1, 2, 3]])
        assert model.prepare_decode(state, 8) is state and model.decode_config.endswith(("eager", "dynamic_cache"))


def decode_both_ways(model, ids, steps):
    logits, state = model.prefill(ids, logits="last")
    ref_state = model.copy_state(state)
    fast_state = model.prepare_decode(state, steps)
    tok = logits.argmax(-1)
    fast, ref = [], []
    for _ in range(steps):
        lf, fast_state = model.step(tok, fast_state)
        lr, ref_state = model.step(tok, ref_state)
        fast.append(lf)
        ref.append(lr)
        tok = lr.argmax(-1)
    return torch.stack(fast), torch.stack(ref)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_rwkv_graph_decode_equals_eager_step(dtype, tol):
    model = load_model("rwkv4_tiny", device="cuda", dtype=dtype)
    ids = torch.randint(0, 257, (3, 40), device="cuda")
    fast, ref = decode_both_ways(model, ids, 20)
    assert "cuda_graph" in model.decode_config
    assert rel_err(fast, ref) <= tol


@pytest.mark.gpu
def test_transformer_static_cache_decode_equals_dynamic_cache():
    model = load_model("neox_tiny", device="cuda", dtype="fp32")
    ids = torch.randint(0, 257, (2, 30), device="cuda")
    fast, ref = decode_both_ways(model, ids, 12)
    assert "static_cache" in model.decode_config
    assert rel_err(fast, ref) <= 1e-4


@pytest.mark.gpu
def test_rwkv_prefill_memory_does_not_grow_with_context():
    model = load_model("rwkv4_tiny", device="cuda", dtype="fp16")
    peaks = []
    for T in (4096, 65536):
        ids = torch.randint(0, 257, (1, T), device="cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        model.prefill(ids, logits="last")
        peaks.append(torch.cuda.max_memory_allocated() - base)
    assert peaks[1] < 1.5 * peaks[0]


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-4), ("fp16", 2e-2)])
def test_rwkv_compiled_prefill_equals_plain_prefill(dtype, tol):
    model = load_model("rwkv4_tiny", device="cuda", dtype=dtype)
    model.prefill_chunk = 96
    ids = torch.randint(0, 257, (2, 250), device="cuda")
    fast, fast_state = model.prefill(ids)
    assert model.prefill_config.endswith("+compiled")
    model.compile_prefill = False
    ref, ref_state = model.prefill(ids)
    assert rel_err(fast, ref) <= tol
    for a, b in zip(fast_state.tensors()[:2], ref_state.tensors()[:2]):
        assert rel_err(a, b) <= tol
