"""The recall probes' item generators: the properties their source papers define, determinism, identical
items for both families of one size, the model's own tokenization, and one-line errors for bad configs."""

import numpy as np
import pytest
from recall_helpers import CORPUS, NEOX_TOKENIZER, PROBES, make_probe, one_thread  # noqa: F401

from rwkvbench.errors import ConfigError, DataError
from rwkvbench.evals.probes import get_probe
from rwkvbench.evals.probes.items import variant_label
from rwkvbench.models.registry import load_model
from rwkvbench.models.tokenizer import ByteTokenizer, load_tokenizer
from rwkvbench.units import SkipUnit

BYTES = ByteTokenizer()
POINT = {"copy": 256, "phonebook": 512, "mqar": 256, "passkey": 512}  # a context each probe fits in bytes


def same(a, b) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(x.ids, y.ids) and x.group == y.group and len(x.answers) == len(y.answers)
        and all(p.pos == q.pos and np.array_equal(p.tokens, q.tokens) for p, q in zip(x.answers, y.answers))
        for x, y in zip(a, b))


@pytest.mark.parametrize("name", PROBES)
def test_items_are_a_function_of_the_seed(name):
    probe = make_probe(name, BYTES)
    for variant in probe.variants():
        first = probe.items(POINT[name], variant, seed=0)
        assert same(first, make_probe(name, BYTES).items(POINT[name], variant, seed=0))
        assert not same(first, probe.items(POINT[name], variant, seed=1))
        for it in first:  # every answer is predicted from at most context_len tokens
            assert it.ids.dtype == np.int64 and all(0 <= a.pos < min(len(it.ids), POINT[name]) for a in it.answers)


@pytest.fixture(scope="module")
def tiny_pair():
    return [load_model(m, device="cpu") for m in ("rwkv4_tiny", "neox_tiny")]


@pytest.mark.parametrize("name", PROBES)
def test_both_families_of_one_size_see_identical_items(name, tiny_pair):
    rwkv, neox = tiny_pair
    assert rwkv.family != neox.family
    a, b = make_probe(name, rwkv.tokenizer), make_probe(name, neox.tokenizer)
    for variant in a.variants():
        assert same(a.items(POINT[name], variant, 3), b.items(POINT[name], variant, 3))


def test_mqar_follows_zoology():
    probe = make_probe("mqar", BYTES, n_items=64)
    lo, mid, hi = probe.lo, probe.mid, probe.hi
    slots = []
    for L, k in ((256, 4), (256, 64), (1024, 16)):
        for it in probe.items(L, {"k": k}, seed=0):
            keys, values = it.ids[0 : 2 * k : 2], it.ids[1 : 2 * k : 2]
            assert len(it.ids) == L and len(it.answers) == k
            assert ((lo <= keys) & (keys < mid)).all() and ((mid <= values) & (values < hi)).all()  # disjoint halves
            assert len(set(keys)) == k and len(set(values)) == k
            assert all((it.ids == key).sum() == 2 for key in keys)  # its pair and its query, nowhere else
            region = it.ids[2 * k :]
            assert ((lo <= region) & (region < hi)).all()
            for a in it.answers:
                offset = a.pos - 2 * k
                assert offset % 2 == 0 and offset >= 0
                j = int(np.flatnonzero(keys == it.ids[a.pos])[0])  # the key asked here ...
                assert a.tokens.tolist() == [values[j]]  # ... wants its own value
            if L == 1024:
                slots += [(a.pos - 2 * k) // 2 for a in it.answers]
    # power-law gaps: far more queries come early than a uniform draw over the 504 slots would put there
    slots = np.asarray(slots)
    assert (slots < 50).mean() > 0.4 and slots.max() > 250


def test_passkey_follows_landmark_attention_at_the_requested_depth():
    probe = make_probe("passkey", BYTES, depths=[0.0, 0.25, 0.5, 0.75, 1.0], n_items=6)
    L = 1024
    keys = None
    for variant in probe.variants():
        items = probe.items(L, variant, seed=0)
        text_keys = []
        for it in items:
            prompt = it.ids[: it.answers[0].pos + 1]
            assert len(prompt) == L
            text = BYTES.decode(prompt.tolist())
            key = int(BYTES.decode(it.answers[0].tokens.tolist()))
            text_keys.append(key)
            assert 1 <= key <= 50000 and BYTES.decode(it.answers[0].tokens.tolist()) == f" {key}"
            needle = f"The pass key is {key}. Remember it. {key} is the pass key."
            start = it.meta["needle_start"]
            assert BYTES.decode(prompt[start : start + len(needle)].tolist()) == needle
            assert abs(it.meta["filler_before"] - variant["depth"] * it.meta["filler"]) <= 1
            assert text.startswith("There is an important info hidden") and text.endswith("What is the pass key? The pass key is")
            assert "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. The grass" in text
            asks_first = text.index("What is the pass key?") < text.index(needle)
            assert asks_first == (variant["order"] == "question_first")
        keys = keys or text_keys
        assert text_keys == keys  # every depth and order asks the same keys: paired comparisons


def test_copy_shows_the_text_twice_then_its_first_token():
    probe = make_probe("copy", BYTES, kinds=["random", "shuffled", "natural"] if CORPUS.is_file() else ["random"])
    L = 256
    n = (L - 2 * 2) // 3
    for variant in probe.variants():
        for it in probe.items(L, variant, seed=0):
            (a,) = it.answers
            text = np.concatenate([it.ids[a.pos : a.pos + 1], a.tokens])
            assert len(text) == n
            sep = [10, 10]
            assert it.ids.tolist() == [*text, *sep, *text, *sep, *text[:-1]]
            if variant["kind"] == "random":
                assert ((1 <= text) & (text < 256)).all()
            if variant["kind"] == "natural":
                docs = probe.corpus.docs
                assert any(BYTES.decode(text[:24].tolist()) in d for d in docs)


def test_phonebook_follows_repeat_after_me():
    probe = make_probe("phonebook", BYTES)
    L = 1024
    items = probe.items(L, probe.variants()[0], seed=0)
    assert len(items) == probe.books * probe.queries
    for it in items:
        text = BYTES.decode(it.ids.tolist() + it.answers[0].tokens[-1:].tolist())
        book, shots, query = text.split("\n\n")
        lines = book.split("\n")
        names = [line.split(": ")[0] for line in lines]
        assert len(names) == len(set(names)) == it.meta["entries"]  # no name twice in a book
        assert all(line in lines for line in shots.split("\n")) and len(shots.split("\n")) == 2
        name, number = query.rstrip("\n").split(": ")
        assert f"{name}: {number}" in lines and f"{name}: {number}" not in shots.split("\n")
        assert len(number) == 10 and number.isdigit() and number[0] in "6789"
        assert BYTES.decode(it.answers[0].tokens.tolist()) == f" {number}\n"
        assert len(it.ids) + 1 <= L and len(it.ids) > L - 4 * probe.max_line
    books = {it.group for it in items}
    assert len(books) == probe.books


def test_variant_labels():
    assert variant_label({"depth": 0.5, "order": "question_first"}) == "depth=0.50;order=question_first"
    assert variant_label({"k": 64}) == "k=64" and variant_label({"kind": "natural"}) == "kind=natural"


@pytest.mark.parametrize("overrides, error, words", [
    ({"kinds": ["natural", "poetry"]}, ConfigError, "copy.kinds"),
    ({"kinds": ["natural"], "corpus_path": "/nowhere/corpus.jsonl.xz"}, DataError, "corpus_path=/nowhere"),
    ({"kinds": ["random"], "format": {"token_ranges": {"bytes": [0, 300]}}}, ConfigError, "copy.token_ranges.bytes"),
])
def test_bad_copy_configs_fail_in_one_line(overrides, error, words):
    with pytest.raises(error, match=words.replace(".", r"\.")) as e:
        make_probe("copy", BYTES, **overrides)
    assert "\n" not in str(e.value)


def test_bad_passkey_and_probe_names_fail_in_one_line():
    with pytest.raises(ConfigError, match="passkey.depths"):
        make_probe("passkey", BYTES, depths=[0.5, 1.5])
    with pytest.raises(ConfigError, match="passkey.orders"):
        make_probe("passkey", BYTES, orders=["question_middle"])
    with pytest.raises(ConfigError, match="probe='recite'"):
        get_probe("recite")


def test_points_that_cannot_be_built_say_why():
    assert "k=64 pairs need context_len >= 256" in make_probe("mqar", BYTES).unfit(128, {"k": 64})
    assert make_probe("passkey", BYTES).unfit(128, {"depth": 0.5, "order": "question_last"})
    assert make_probe("phonebook", BYTES).unfit(64, {"fewshot": 2})
    assert make_probe("copy", BYTES).unfit(8, {"kind": "random"})
    with pytest.raises(SkipUnit, match="more entries than the 16002 names"):
        make_probe("phonebook", BYTES, books=1).items(1 << 20, {"fewshot": 2}, seed=0)


@pytest.mark.skipif(not NEOX_TOKENIZER.is_file(), reason="needs the GPT-NeoX-20B tokenizer in the shared data")
def test_items_are_the_neox_tokenizers_own_encoding():
    """Pieces are joined in token space; the result must be what the tokenizer makes of the text."""
    tok = load_tokenizer("neox20b", str(NEOX_TOKENIZER))
    for name, L in (("passkey", 2048), ("phonebook", 1024)):
        probe = make_probe(name, tok)
        for variant in probe.variants():
            for it in probe.items(L, variant, seed=0)[:2]:
                full = np.concatenate([it.ids, it.answers[-1].tokens[-1:]])
                assert tok.encode(tok.decode(full.tolist())) == full.tolist()
    probe = make_probe("passkey", tok, depths=[0.5])
    it = probe.items(1 << 20, {"depth": 0.5, "order": "question_last"}, seed=0)[0]  # a million tokens, built quickly
    assert len(it.ids) == (1 << 20) + len(it.answers[0].tokens) - 1
