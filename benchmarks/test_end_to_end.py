"""End-to-end speed on one GPU, random weights at the 1.5B shape, fp16 (pytest-benchmark; GPU only):
a 16K-token prefill to the last logits, and one decode step after a prefill, for our RWKV-4 (the fused
decode kernel at batch 1, the compiled step at batch 8) and the matched Transformer (static cache and
compiled forward). Each timed call ends with a synchronize.

Against the committed baseline of your GPU, failing on a regression: benchmarks/regression.sh
(README, "Speed regressions").
"""

import pytest
import torch

from rwkvbench import load_model

VOCAB = 50277
DECODE_ROUNDS, DECODE_WARMUP = 200, 20


@pytest.fixture(scope="module", params=["rwkv4_1b5", "pythia_1b4"])
def model(request):
    m = load_model(request.param, init="random", dtype="fp16", device="cuda")
    yield m
    del m
    torch.cuda.empty_cache()


def random_ids(batch: int, context: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(context)
    return torch.randint(0, VOCAB, (batch, context), generator=g).cuda()


def test_prefill_16k(benchmark, model):
    ids = random_ids(1, 16384)

    def prefill():
        model.prefill(ids, logits="last")
        torch.cuda.synchronize()

    benchmark.pedantic(prefill, warmup_rounds=3, rounds=20, iterations=1)


@pytest.mark.parametrize("batch,context", [(1, 1024), (1, 16384), (8, 4096)], ids=lambda v: str(v))
def test_decode_step(benchmark, model, batch, context):
    logits, state = model.prefill(random_ids(batch, context), logits="last")
    state = model.prepare_decode(state, DECODE_ROUNDS + DECODE_WARMUP)
    tok = logits.argmax(-1)

    def step():
        nonlocal tok, state
        out, state = model.step(tok, state)
        tok = out.argmax(-1)
        torch.cuda.synchronize()

    benchmark.pedantic(step, warmup_rounds=DECODE_WARMUP, rounds=DECODE_ROUNDS, iterations=1)
