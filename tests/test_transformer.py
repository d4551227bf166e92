"""The Transformer wrapper: prefill of a prefix then steps == one full forward; state forks."""

import pytest
import torch

from conftest import rel_err
from rwkvbench import load_model


@pytest.fixture(scope="module")
def model():
    return load_model("neox_tiny", device="cpu", dtype="fp32")


def ids(B, T, seed):
    return torch.randint(0, 257, (B, T), generator=torch.Generator().manual_seed(seed))


def test_prefix_then_steps_equals_full_forward(model):
    x = ids(2, 30, 0)
    full, _ = model.prefill(x)
    logits, state = model.prefill(x[:, :20])
    steps = [logits]
    for t in range(20, 30):
        step_logits, state = model.step(x[:, t], state)
        steps.append(step_logits[:, None])
    assert rel_err(torch.cat(steps, 1), full) < 1e-5


def test_repeat_state_forks_each_sequence_and_keeps_the_original(model):
    prefix, conts = ids(2, 12, 1), ids(6, 5, 2)
    _, state = model.prefill(prefix)
    before = model.state_nbytes(state)
    forked, _ = model.prefill(conts, model.repeat_state(state, 3))
    assert model.state_nbytes(state) == before  # the original cache is untouched
    full, _ = model.prefill(torch.cat([prefix.repeat_interleave(3, 0), conts], 1))
    assert rel_err(forked, full[:, 12:]) < 1e-5


def test_state_bytes_grow_with_context(model):
    _, s1 = model.prefill(ids(1, 10, 3))
    _, s2 = model.prefill(ids(1, 20, 3))
    cfg = model.model.config
    per_token = 2 * cfg.num_hidden_layers * cfg.hidden_size * 4  # K and V, fp32
    assert model.state_nbytes(s1) == 10 * per_token
    assert model.state_nbytes(s2) == 20 * per_token
