"""The fast inference paths give the reference path's logits: chunked prefill, graph-captured RWKV
decode, static-cache Transformer decode."""

import pytest
import torch

from conftest import rel_err, rwkv4_model
from rwkvbench import load_model
from rwkvbench.models.checkpoints import RWKV4Shape


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


def test_column_major_split_weights_change_nothing_but_the_layout():
    """The fused decoder's weight layout (output projection and ffn value stored transposed) keeps
    every value, shape and logit; a second call is a no-op."""
    model = load_model("rwkv4_tiny", device="cpu")
    ids = torch.randint(0, 257, (2, 30), generator=torch.Generator().manual_seed(1))
    before, _ = model.prefill(ids)
    weights = {name: w.clone() for name, w in model.net.state_dict().items()}
    model.net.split_weights_column_major()
    moved = [b.att.output.weight for b in model.net.blocks] + [b.ffn.value.weight for b in model.net.blocks]
    assert all(w.t().is_contiguous() and not w.is_contiguous() for w in moved)
    ptrs = [w.data_ptr() for w in moved]
    model.net.split_weights_column_major()
    assert [w.data_ptr() for w in moved] == ptrs
    assert all(torch.equal(w, weights[name]) for name, w in model.net.state_dict().items())
    after, _ = model.prefill(ids)
    assert rel_err(after, before) < 1e-5


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
@pytest.mark.parametrize("decoder", ["fused", "compiled"])
def test_rwkv_graph_decode_equals_eager_step(dtype, tol, decoder, monkeypatch):
    monkeypatch.setenv("RWKVBENCH_DECODE", decoder)
    model = load_model("rwkv4_tiny", device="cuda", dtype=dtype)
    ids = torch.randint(0, 257, (3, 40), device="cuda")
    fast, ref = decode_both_ways(model, ids, 20)
    assert model.decode_config == {"fused": "fused_kernels+cuda_graph", "compiled": "compiled+cuda_graph"}[decoder]
    assert rel_err(fast, ref) <= tol


DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@pytest.mark.gpu
@pytest.mark.parametrize("dtype,tol", [("fp32", 1e-5), ("fp16", 2e-2), ("bf16", 5e-2)])
@pytest.mark.parametrize("batch", [1, 3, 8])
# 16-byte weight loads; odd widths (scalar loads); rows longer than one layer-norm pass (K > 2048)
@pytest.mark.parametrize("C,F", [(256, 1024), (33, 70), (2560, 512)])
def test_rwkv_fused_decode_equals_plain_step(dtype, tol, batch, C, F, monkeypatch):
    """Our decode kernels against the plain PyTorch step on the same weights: the first step's logits
    and state, then 12 more steps (fed the same tokens)."""
    from rwkvbench.kernels.decode_cuda import fused_decode_fits

    if not fused_decode_fits(batch, C, F, DTYPES[dtype]):  # fp32 x 8 x 2560: 3 inputs are 240 KiB
        pytest.skip(f"batch {batch} of {C} {dtype} inputs exceed a block's shared memory: the compiled step runs it")
    monkeypatch.setenv("RWKVBENCH_DECODE", "fused")  # auto takes them for one sequence only
    model = rwkv4_model(RWKV4Shape(n_layer=3, n_embd=C, vocab_size=257, dim_ffn=F), dtype=DTYPES[dtype], device="cuda")
    ids = torch.randint(0, 257, (batch, 17), device="cuda", generator=torch.Generator("cuda").manual_seed(batch))
    logits, state = model.prefill(ids, logits="last")
    ref_state, tok = model.copy_state(state), logits.argmax(-1)
    fast_state = model.prepare_decode(state, 13)
    assert model.decode_config == "fused_kernels+cuda_graph"
    for i in range(13):
        fast, fast_state = model.step(tok, fast_state)
        ref, ref_state = model.step(tok, ref_state)
        assert rel_err(fast, ref) <= (tol if i else tol / 4), f"step {i}"
        if i == 0:
            for name, a, b in zip(("att_x", "att_a", "att_b", "att_p", "ffn_x"), fast_state.tensors(), ref_state.tensors()):
                assert rel_err(a, b) <= tol / 4, name
        tok = ref.argmax(-1)


@pytest.mark.gpu
def test_rwkv_decode_choice_by_batch(monkeypatch):
    model = load_model("rwkv4_tiny", device="cuda", dtype="fp16")
    configs = {}
    for batch in (1, 2):
        _, state = model.prefill(torch.randint(0, 257, (batch, 5), device="cuda"), logits="last")
        model.prepare_decode(state, 4)
        configs[batch] = model.decode_config
    assert configs == {1: "fused_kernels+cuda_graph", 2: "compiled+cuda_graph"}
    monkeypatch.setenv("RWKVBENCH_DECODE", "fused")
    _, state = model.prefill(torch.randint(0, 257, (9, 5), device="cuda"), logits="last")
    with pytest.raises(RuntimeError, match="at most 8 sequences"):
        model.prepare_decode(state, 4)


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
    assert model.prefill_config.endswith("+compiled+eager")  # two full chunks compiled, the rest eager
    model.compile_prefill = False
    ref, ref_state = model.prefill(ids)
    assert rel_err(fast, ref) <= tol
    for a, b in zip(fast_state.tensors()[:2], ref_state.tensors()[:2]):
        assert rel_err(a, b) <= tol
