"""Parallel mode == recurrent mode token by token == parallel mode in uneven chunks with state carry;
batches equal single sequences; half-precision weights stay close to fp32."""

import pytest
import torch

from conftest import rel_err, rwkv4_model
from rwkvbench.models.checkpoints import RWKV4Shape

SHAPE = RWKV4Shape(3, 40, 100, 160)


@pytest.fixture(scope="module")
def model():
    return rwkv4_model(SHAPE, seed=7)


def ids(B, T, seed=0):
    return torch.randint(0, SHAPE.vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def test_parallel_equals_recurrent(model):
    x = ids(2, 40)
    full, full_state = model.prefill(x)
    state, steps = None, []
    for t in range(x.shape[1]):
        if state is None:
            logits, state = model.prefill(x[:, :1], logits="last")
        else:
            logits, state = model.step(x[:, t], state)
        steps.append(logits)
    assert rel_err(torch.stack(steps, 1), full) < 1e-5
    for a, b in zip(state.tensors(), full_state.tensors()):
        assert rel_err(a, b) < 1e-5


def test_parallel_equals_uneven_chunks(model):
    x = ids(3, 61, seed=1)
    full, _ = model.prefill(x)
    state, parts = None, []
    for lo, hi in [(0, 5), (5, 6), (6, 40), (40, 61)]:
        logits, state = model.prefill(x[:, lo:hi], state)
        parts.append(logits)
    assert rel_err(torch.cat(parts, 1), full) < 1e-5


def test_batch_equals_single_sequences(model):
    x = ids(4, 23, seed=2)
    batched, _ = model.prefill(x)
    for b in range(4):
        single, _ = model.prefill(x[b : b + 1])
        assert rel_err(batched[b], single[0]) < 1e-5


def test_last_logits_equal_all_logits_last_row(model):
    x = ids(2, 17, seed=3)
    all_logits, _ = model.prefill(x)
    last, _ = model.prefill(x, logits="last")
    assert rel_err(last, all_logits[:, -1]) < 1e-6  # the head GEMM's shape differs: equal to rounding


def test_prefill_does_not_modify_given_state(model):
    x = ids(1, 10, seed=4)
    _, state = model.prefill(x)
    kept = model.copy_state(state)
    model.prefill(ids(1, 5, seed=5), state)
    for a, b in zip(kept.tensors(), state.tensors()):
        assert torch.equal(a, b)


def test_repeat_state_forks_each_sequence(model):
    prefix, conts = ids(2, 9, seed=6), ids(6, 4, seed=7)
    _, state = model.prefill(prefix)
    forked, _ = model.prefill(conts, model.repeat_state(state, 3))
    full, _ = model.prefill(torch.cat([prefix.repeat_interleave(3, 0), conts], 1))
    assert rel_err(forked, full[:, 9:]) < 1e-5
    assert model.state_nbytes(state) == 5 * SHAPE.n_layer * 2 * SHAPE.n_embd * 4


@pytest.mark.parametrize("dtype,tol", [(torch.bfloat16, 0.05), (torch.float16, 0.01)])
def test_half_precision_weights_close_to_fp32(dtype, tol):
    x = ids(2, 30, seed=8)
    ref, _ = rwkv4_model(SHAPE, seed=7).prefill(x)
    half = rwkv4_model(SHAPE, seed=7, dtype=dtype)
    assert half.dtype == dtype
    got, state = half.prefill(x)
    assert got.dtype == torch.float32 and all(t.dtype == torch.float32 for t in state.tensors())
    assert rel_err(got, ref) < tol
