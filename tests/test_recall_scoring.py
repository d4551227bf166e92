"""Scoring recall items: an oracle scores 100% and a uniform model chance on every probe; the teacher-
forced scores equal step-by-step greedy decoding; the shared-prefix, batched path equals scoring each
item alone; running out of memory shrinks batches, and the budget cuts items, without changing a score."""

import math

import numpy as np
import pytest
import torch
from recall_helpers import PROBES, make_probe, one_thread  # noqa: F401

from rwkvbench.evals.probes.sanity import OracleModel, UniformModel
from rwkvbench.evals.probes.scoring import greedy_decode, score_items
from rwkvbench.evals.recall import score_rows
from rwkvbench.models.registry import load_model
from rwkvbench.models.tokenizer import ByteTokenizer
from rwkvbench.units import Budget

BYTES = ByteTokenizer()
POINT = {"copy": 200, "phonebook": 400, "mqar": 256, "passkey": 400}


def all_items(name, **overrides):
    probe = make_probe(name, BYTES, **overrides)
    return [(variant, probe.items(POINT[name], variant, seed=0)) for variant in probe.variants()]


@pytest.fixture(scope="module")
def tiny_pair():
    return [load_model(m, device="cpu") for m in ("rwkv4_tiny", "neox_tiny")]


def metrics(scores) -> dict:
    return {r["metric"]: r for r in score_rows(scores)}


@pytest.mark.parametrize("name", PROBES)
def test_an_oracle_scores_everything_and_a_uniform_model_chance(name):
    oracle, uniform = OracleModel(BYTES), UniformModel(BYTES)
    for variant, items in all_items(name, n_items=3, books=2, queries_per_book=2):
        m = metrics(score_items(oracle, items, batch_size=4))
        assert m["exact_match"]["value"] == 1.0 and m["token_accuracy"]["value"] == 1.0, variant
        assert m["answer_logprob"]["value"] > -1e-6
        m = metrics(score_items(uniform, items, batch_size=4))
        assert m["exact_match"]["value"] == 0.0 and m["token_accuracy"]["value"] == 0.0, variant
        assert m["answer_logprob_per_token"]["value"] == pytest.approx(-math.log(BYTES.vocab_size), abs=1e-5)
        assert m["exact_match"]["stderr"] == 0.0 and m["exact_match"]["n"] == sum(len(it.answers) for it in items)


@pytest.mark.parametrize("name", PROBES)
def test_teacher_forced_scores_are_greedy_decoding(name, tiny_pair):
    """correct[i] for the first mismatch and everything before it is what step-by-step decoding does."""
    for model in (*tiny_pair, OracleModel(BYTES)):
        variant, items = all_items(name, n_items=2, books=1, queries_per_book=2)[0]
        scores = score_items(model, items, batch_size=4)
        answers = [a for it in scores.items for a in it.answers]
        decoded = [d for it in scores.items for d in greedy_decode(model, it)]
        for a, d, s in zip(answers, decoded, scores.answers):
            wrong = np.flatnonzero(d != a.tokens)
            first = wrong[0] if len(wrong) else len(a.tokens)
            assert s.correct[:first].all() and (first == len(a.tokens) or not s.correct[first]), (model.name, variant)
            assert s.correct.all() == (len(wrong) == 0)


@pytest.mark.parametrize("name", ["passkey", "phonebook", "copy"])
def test_the_shared_prefix_and_batches_change_no_score(name, tiny_pair):
    """The fast path (prefix prefilled once, forked with repeat_state, batches of 4) against each item
    scored alone from an empty state."""
    for model in tiny_pair:
        variant, items = all_items(name, n_items=4, books=1, queries_per_book=4)[-1]
        fast = score_items(model, items, batch_size=4)
        for it, ids in zip(items, range(len(items))):
            it.group = ids  # every item its own group: nothing shared
        plain = score_items(model, items, batch_size=1)
        assert len(fast.items) == len(plain.items) == len(items)
        by_item = {id(it): a for it, a in zip(plain.items, plain.answers)}  # one answer per item here
        for it, f in zip(fast.items, fast.answers):
            p = by_item[id(it)]
            assert (f.correct == p.correct).all()
            np.testing.assert_allclose(f.logprob, p.logprob, atol=2e-4, err_msg=f"{model.name} {variant}")
        assert fast.state_bytes == plain.state_bytes


class OutOfMemoryAbove(OracleModel):
    """The oracle, out of memory for batches above `limit` (and on any fork when fork=False)."""

    def __init__(self, limit: int, fork: bool = True):
        super().__init__(BYTES)
        self.limit, self.fork, self.batches = limit, fork, []

    def prefill(self, ids, state=None, *, logits="all"):
        ids = self.as_ids(ids)
        if ids.shape[0] > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: batch {ids.shape[0]}")
        self.batches.append(ids.shape[0])
        return super().prefill(ids, state, logits=logits)

    def repeat_state(self, state, n):
        if not self.fork:
            raise torch.OutOfMemoryError("CUDA out of memory: the fork")
        return super().repeat_state(state, n)


def test_out_of_memory_shrinks_the_batch_then_drops_the_fork_then_raises():
    (_, items), = all_items("mqar", n_items=8, kv_pairs=[4])  # eight items of one length
    reference = score_items(OracleModel(BYTES), items, batch_size=8)
    small = OutOfMemoryAbove(limit=2)
    scores = score_items(small, items, batch_size=8)
    assert set(small.batches) == {2} and len(scores.items) == 8  # batches of 8 and 4 ran out
    assert [a.correct.tolist() for a in scores.answers] == [a.correct.tolist() for a in reference.answers]
    (_, items), = all_items("passkey", n_items=4, depths=[0.5], orders=["question_last"])  # a shared prefix
    no_fork = OutOfMemoryAbove(limit=1, fork=False)
    scores = score_items(no_fork, items, batch_size=8)
    assert len(scores.items) == 4 and metrics(scores)["exact_match"]["value"] == 1.0
    with pytest.raises(torch.OutOfMemoryError):
        score_items(OutOfMemoryAbove(limit=0), items, batch_size=8)


def test_a_spent_budget_scores_one_batch_and_says_so():
    (_, items), = all_items("mqar", n_items=8, kv_pairs=[4])
    scores = score_items(OracleModel(BYTES), items, batch_size=2, budget=Budget(seconds=1e-9))
    assert len(scores.items) == 2 and len(scores.answers) == 2 * 4
    assert metrics(scores)["exact_match"]["n"] == 8


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["rwkv4_169m", "pythia_160m"])
def test_on_cuda_the_fast_path_matches_each_item_alone(name):
    """fp16 on the GPU, through RWKV's CUDA kernels and compiled 4096-token chunks and the Transformer's
    SDPA: a passkey point of 8K tokens with the prefix shared and batched, against each item alone."""
    import os

    from recall_helpers import NEOX_TOKENIZER

    path = str(NEOX_TOKENIZER) if NEOX_TOKENIZER.is_file() else os.environ.get("RWKVBENCH_NEOX_TOKENIZER")
    if not path:
        pytest.skip(f"{NEOX_TOKENIZER} not present and $RWKVBENCH_NEOX_TOKENIZER unset")
    model = load_model(name, init="random", device="cuda", dtype="fp16", tokenizer_path=path)
    probe = make_probe("passkey", model.tokenizer, n_items=4)
    items = probe.items(8192, {"depth": 0.5, "order": "question_last"}, seed=0)
    fast = score_items(model, items, batch_size=4)
    first = {id(it): a for it, a in zip(fast.items, fast.answers)}
    for i, it in enumerate(items):
        it.group = i
    plain = score_items(model, items, batch_size=1)
    for it, p in zip(plain.items, plain.answers):
        np.testing.assert_allclose(first[id(it)].logprob, p.logprob, atol=0.05, rtol=0.01)
    assert fast.state_bytes == plain.state_bytes > 0
