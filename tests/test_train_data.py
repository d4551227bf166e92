"""Training text: Pile-format files in every compression, one token stream per file (the perplexity task's),
the tokenize-once cache, and the seeded window order both families share."""

import json
import lzma

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import SHARED_DATA
from rwkvbench.errors import DataError
from rwkvbench.models.tokenizer import ByteTokenizer, load_tokenizer
from rwkvbench.train import data

DOCS = ["First document.\nIt has two lines.", "Second: ünïcödé ✓", "Third one, the last."]


def write_pile(path, docs=DOCS):
    lines = "".join(json.dumps({"text": d, "meta": {"id": i}}) + "\n" for i, d in enumerate(docs))
    if str(path).endswith(".xz"):
        with lzma.open(path, "wt", encoding="utf-8") as f:
            f.write(lines)
    elif str(path).endswith(".zst"):
        zstandard = pytest.importorskip("zstandard")
        path.write_bytes(zstandard.ZstdCompressor().compress(lines.encode()))
    else:
        path.write_text(lines, encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.xz", ".jsonl.zst"])
def test_reads_every_pile_format(tmp_path, suffix):
    path = write_pile(tmp_path / f"part{suffix}")
    assert data.read_documents(path) == DOCS
    assert data.pile_text(path) == data.DOC_SEPARATOR.join(DOCS)


def test_bad_files_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": 3}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: expected an object with a string 'text'"):
        data.read_documents(bad)
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"broken.jsonl:2: not a JSON line"):
        data.read_documents(tmp_path / "broken.jsonl")
    (tmp_path / "cut.jsonl.xz").write_bytes(lzma.compress(b'{"text": "a"}\n' * 100)[:40])
    with pytest.raises(DataError, match="cut.jsonl.xz: cannot read it"):
        data.read_documents(tmp_path / "cut.jsonl.xz")
    with pytest.raises(DataError, match="expected a Pile-format file"):
        (tmp_path / "notes.txt").write_text("x")
        data.read_documents(tmp_path / "notes.txt")
    with pytest.raises(DataError, match="matches no file"):
        data.expand_files(str(tmp_path / "train-*.jsonl.xz"), "data.train")


def test_stream_is_what_the_perplexity_task_scores_bytes(tmp_path):
    path = write_pile(tmp_path / "part.jsonl")
    tok = ByteTokenizer()
    stream = data.tokenize_file(path, tok)
    assert stream.dtype == np.uint16
    assert stream.tolist() == [tok.eos_token_id] + tok.encode(data.pile_text(path))


def test_stream_is_what_the_perplexity_task_scores_neox(tmp_path, neox_tokenizer_path):
    docs = data.read_documents(SHARED_DATA / "corpus" / "valid.jsonl.xz")[:30]
    path = write_pile(tmp_path / "slice.jsonl", docs)
    tok = load_tokenizer("neox20b", str(neox_tokenizer_path))
    stream = data.tokenize_file(path, tok)  # documents one by one, the marker (token 0) between them
    assert stream.tolist() == [0] + tok.encode(data.pile_text(path))
    assert (stream == 0).sum() == len(docs)


def test_tokenized_once_then_read_from_the_cache(tmp_path, monkeypatch):
    files = [write_pile(tmp_path / f"train-{i}.jsonl", DOCS[i:]) for i in range(3)]
    tok = ByteTokenizer()
    first = data.token_files(files, tok, ("bytes", None), tmp_path / "cache", workers=1)
    monkeypatch.setattr(data, "tokenize_file", lambda *a: pytest.fail("tokenized again"))
    again = data.token_files(files, tok, ("bytes", None), tmp_path / "cache", workers=1)
    assert [a.tolist() for a in again] == [f.tolist() for f in first]
    assert len(list((tmp_path / "cache").glob("*.u16"))) == 3


@pytest.mark.slow
def test_files_tokenized_in_parallel_processes(tmp_path):
    files = [write_pile(tmp_path / f"train-{i}.jsonl", DOCS[i:]) for i in range(2)]
    streams = data.token_files(files, ByteTokenizer(), ("bytes", None), tmp_path / "cache", workers=2)
    assert [s.tolist() for s in streams] == [data.tokenize_file(f, ByteTokenizer()).tolist() for f in files]


def test_windows_order_depends_on_seed_only_and_covers_each_epoch_once():
    streams = [np.arange(100, dtype=np.uint16), np.arange(1000, 1050, dtype=np.uint16)]
    w = data.Windows(streams, context_len=8, seed=3)
    assert len(w) == 12 + 6 and w.tokens_per_epoch == 18 * 8
    epoch = [w.batch(i, 3) for i in range(6)]  # 18 windows in batches of 3: one epoch
    starts = sorted(int(b[0]) for batch in epoch for b in batch)
    assert starts == sorted([*range(0, 96, 8), *range(1000, 1048, 8)])
    for batch in epoch:  # inputs and targets: context_len + 1 consecutive tokens of one stream
        assert batch.shape == (3, 9) and ((batch[:, 1:] - batch[:, :-1]) == 1).all()
    same = data.Windows(streams, context_len=8, seed=3)
    assert all((same.batch(i, 3) == epoch[i]).all() for i in range(6))
    second = [data.Windows(streams, 8, 3).batch(i, 3) for i in range(6, 12)]
    assert not all((a == b).all() for a, b in zip(epoch, second))  # a fresh permutation per epoch
    other = data.Windows(streams, context_len=8, seed=4)
    assert not all((other.batch(i, 3) == epoch[i]).all() for i in range(6))


def test_more_than_max_epochs_is_refused_before_training():
    w = data.Windows([np.zeros(81, dtype=np.uint16)], context_len=8)
    data.check_epochs(160, w, 2, "run")
    with pytest.raises(DataError, match="more than 2 epochs of the 80 available"):
        data.check_epochs(161, w, 2, "run")


def test_load_corpus(tmp_path):
    write_pile(tmp_path / "train-00.jsonl", DOCS * 20)
    write_pile(tmp_path / "train-01.jsonl", DOCS * 20)
    write_pile(tmp_path / "valid.jsonl", DOCS)
    cfg = OmegaConf.create({"name": "t", "train": str(tmp_path / "train-*.jsonl"), "shards": 1,
                            "valid": str(tmp_path / "valid.jsonl"), "tokenizer": "bytes", "tokenizer_path": None,
                            "cache_dir": str(tmp_path / "cache"), "workers": 1})
    corpus = data.load_corpus(cfg, context_len=16, seed=0)
    assert len(corpus.windows.streams) == 1  # shards=1: the first file only
    assert corpus.valid.tolist() == data.tokenize_file(tmp_path / "valid.jsonl", ByteTokenizer()).tolist()
    cfg.tokenizer = "neox20b"
    cfg.tokenizer_path = str(tmp_path / "missing.json")
    with pytest.raises(DataError, match="data.tokenizer='neox20b'"):
        data.load_corpus(cfg, context_len=16, seed=0)
