"""Our RWKV-4 against the `rwkv` pip package (ChatRWKV), an independent implementation, on random
checkpoints written in BlinkDL's format."""

import os

import pytest
import torch

from conftest import rel_err, rwkv4_model
from rwkvbench.models import checkpoints as ck

os.environ["RWKV_CUDA_ON"] = "0"
os.environ.setdefault("RWKV_JIT_ON", "0")  # its plain-Python path (torch.jit.script is deprecated)
rwkv_model = pytest.importorskip("rwkv.model")

SHAPES = [  # (n_layer, n_embd, vocab, dim_ffn), T
    (ck.RWKV4Shape(1, 32, 50, 128), 1),
    (ck.RWKV4Shape(1, 33, 97, 100), 9),  # n_embd not a multiple of 32, one layer
    (ck.RWKV4Shape(3, 45, 301, 180), 64),
    (ck.RWKV4Shape(2, 64, 257, 256), 300),
]


@pytest.mark.parametrize("shape,T", SHAPES, ids=lambda x: str(x))
def test_logits_match_chatrwkv(tmp_path, shape, T):
    seed = shape.n_embd + T
    path = tmp_path / "model.pth"
    ck.save_blinkdl(ck.random_rwkv4(shape, seed=seed), path)
    ref = rwkv_model.RWKV(model=str(path), strategy="cpu fp32", verbose=False)
    ids = torch.randint(0, shape.vocab_size, (T,), generator=torch.Generator().manual_seed(seed)).tolist()
    ref_logits, ref_state = ref.forward(ids, None, full_output=True)

    ours = rwkv4_model(shape, seed=seed)
    logits, state = ours.prefill([ids])
    assert rel_err(logits[0].reshape(T, -1), ref_logits.reshape(T, -1)) <= 1e-5

    # The recurrent state too: ChatRWKV keeps [att_x, aa, bb, pp, ffn_x] per layer.
    for i in range(shape.n_layer):
        ref_layer = ref_state[5 * i: 5 * i + 5]
        ours_layer = [state.att_x[i, 0], state.att_a[i, 0], state.att_b[i, 0], state.att_p[i, 0], state.ffn_x[i, 0]]
        for got, want in zip(ours_layer, ref_layer):
            assert rel_err(got, want) <= 1e-5


def test_recurrent_mode_matches_chatrwkv_one_token_at_a_time(tmp_path):
    shape = ck.RWKV4Shape(2, 40, 120, 160)
    path = tmp_path / "model.pth"
    ck.save_blinkdl(ck.random_rwkv4(shape, seed=3), path)
    ref = rwkv_model.RWKV(model=str(path), strategy="cpu fp32", verbose=False)
    ours = rwkv4_model(shape, seed=3)
    ids = torch.randint(0, 120, (12,), generator=torch.Generator().manual_seed(3)).tolist()
    ref_state, state = None, None
    for tok in ids:
        ref_logits, ref_state = ref.forward([tok], ref_state)
        logits, state = ours.step([tok], state) if state is not None else ours.prefill([[tok]], logits="last")
        assert rel_err(logits[0], ref_logits) <= 1e-5
