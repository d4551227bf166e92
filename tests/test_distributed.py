"""Data parallelism on CPU with the gloo backend (torchrun --nproc_per_node=2): torchrun's environment and
each rank's device; a recall sweep sharded over two ranks gives the rows of one process, none lost or
duplicated; data-parallel lm-eval gives one process's metrics; two-rank training takes one rank's steps."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from rwkvbench import distributed
from rwkvbench.config import conf_dir
from rwkvbench.distributed import DistEnv
from rwkvbench.errors import ConfigError
from rwkvbench.results import read_results, read_runs
from rwkvbench.run import run

ROOT = Path(__file__).resolve().parents[1]
# A copy sweep of two context lengths on both tiny models: four units, two per rank.
SWEEP = ["task=copy", "device=cpu", "task.parts.0.context_lens=[64,128]", "task.parts.0.n_items=4",
         "task.parts.0.kinds=[random]"]
KEY = ["model", "suite", "task", "variant", "context_len", "batch_size", "metric"]


def test_place_from_torchruns_environment(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(k, raising=False)
    assert distributed.env() == DistEnv(0, 1, 0)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert distributed.env() == DistEnv(3, 4, 1) and not distributed.env().is_main
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(ConfigError, match="RANK=4, WORLD_SIZE=4"):
        distributed.env()
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x'"):
        distributed.env()


def test_each_rank_gets_its_own_device():
    two = DistEnv(1, 2, 1)
    assert distributed.rank_device("cuda", two) == "cuda:1"
    assert distributed.rank_device("cpu", two) == "cpu"
    assert distributed.rank_device("cuda:0", DistEnv()) == "cuda:0"  # one process: as given
    with pytest.raises(ConfigError, match="same GPU"):
        distributed.rank_device("cuda:0", two)
    assert not distributed.active() and distributed.is_main()  # nothing joined in this process
    distributed.barrier()  # a no-op for one process
    assert distributed.broadcast_object("x") == "x"


def torchrun(n: int, *overrides) -> subprocess.CompletedProcess:
    """`torchrun --nproc_per_node=n -m rwkvbench ...` on CPU (gloo), from this checkout."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        env.pop(k, None)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}",
                          "-m", "rwkvbench", *overrides], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


@pytest.mark.slow
def test_a_probe_sweep_sharded_over_two_ranks_gives_the_rows_of_one(tmp_path, one_thread):
    two = tmp_path / "two"
    out = torchrun(2, *SWEEP, f"hydra.run.dir={two}")
    assert out.stdout.count("== copy") == 1  # rank 0 alone reports
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=SWEEP)
    run(cfg, tmp_path / "one")

    sharded, single = read_results(two), read_results(tmp_path / "one")
    assert len(sharded) == len(single) and not sharded.duplicated(KEY).any()
    assert sharded.run_id.nunique() == 2  # both ranks wrote their share
    assert len(read_runs(two)) == 1  # one provenance line, rank 0's
    a, b = (df[df.metric != "wall_seconds"].sort_values(KEY).reset_index(drop=True) for df in (sharded, single))
    assert a[KEY].astype(str).equals(b[KEY].astype(str))
    assert a.value.tolist() == b.value.tolist() and a.fingerprint.tolist() == b.fingerprint.tolist()
    assert sharded.groupby("model").context_len.nunique().tolist() == [2, 2]


def test_interleave_puts_the_ranks_documents_back_in_order():
    from rwkvbench.evals.lm_eval_adapter import interleave

    # lm-eval gives rank r documents r, r + W, ...; three ranks over 7 documents, one without a key
    ranks = [{"piqa": {"acc": [0, 3, 6]}}, {"piqa": {"acc": [1, 4]}}, {"piqa": {"acc": [2, 5]}, "x": {"m": [9]}}]
    assert interleave(ranks) == {"piqa": {"acc": [0, 1, 2, 3, 4, 5, 6]}, "x": {"m": [9]}}


@pytest.mark.slow
def test_data_parallel_lm_eval_gives_the_metrics_of_one_process(tmp_path, one_thread):
    from conftest import SHARED_DATA

    data = SHARED_DATA / "eval"
    if not (data / "piqa.jsonl").is_file() or not (data / "lambada_openai.jsonl").is_file():
        pytest.skip(f"no piqa/lambada_openai data in {data}")
    # 11 documents: the ranks' shares are uneven (lm-eval pads them), lambada's stderr is a bootstrap.
    # One request per batch and one thread on every side: other batch shapes or thread counts change
    # float32 rounding, not the method.
    args = ["task=piqa", "task.parts.0.tasks=[piqa,lambada_openai]", f"data_dir={data}", "limit=11",
            "batch_size=1", "device=cpu", "compare=false"]
    two = tmp_path / "two"
    out = torchrun(2, *args, f"hydra.run.dir={two}")
    assert out.stdout.count("== piqa") == 1
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=args)
    run(cfg, tmp_path / "one")
    sharded, single = (read_results(d).query("metric not in ['tokens_computed', 'prefix_tokens_saved']")
                       .sort_values(["task", "metric"]).reset_index(drop=True) for d in (two, tmp_path / "one"))
    assert len(sharded) == 4 and sharded.run_id.nunique() == 1  # rank 0 writes the gathered numbers
    for col in ("task", "metric", "value", "stderr", "n", "fingerprint"):
        assert sharded[col].tolist() == single[col].tolist(), col
    assert (sharded.n == 11).all()


TRAIN_SCRIPT = """
import sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_train_run import data_config, tiny_spec, CONTEXT
from pathlib import Path
from rwkvbench import distributed
from rwkvbench.results import ResultsWriter
from rwkvbench.train.data import load_corpus
from rwkvbench.train.trainer import train_run
distributed.init()
corpus = load_corpus(data_config(Path({corpus!r})), CONTEXT, seed=0)
spec = tiny_spec("rwkv4", steps=12, eval_points=2, micro_batch_size={micro}, export_weights=True)
out = Path({out!r})
assert train_run(spec, corpus, out, ResultsWriter(out), torch.device("cpu"))
# a deadline already past: every rank stops at the same step, the first at which they share rank 0's clock
late = tiny_spec("rwkv4", steps=40, eval_points=2, micro_batch_size={micro}, export_weights=False)
assert not train_run(late, corpus, out / "late", ResultsWriter(out / "late"), torch.device("cpu"), deadline=0.0)
distributed.shutdown()
"""


@pytest.mark.slow
def test_two_rank_data_parallel_training_takes_one_ranks_steps(tmp_path):
    """Batch 4: one process in micro-batches of 2, or two ranks of 2 windows each whose gradients are
    summed; the sum of two terms is the same in either order, so the runs agree to the bit. A deadline
    stops both ranks at the same step."""
    from rwkvbench.train.trainer import CLOCK_STEPS
    from test_train_run import corpus_documents

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    docs = corpus_documents()
    cut = max(1, len(docs) // 8)
    for name, part in [("train-00.jsonl", docs[cut:]), ("valid.jsonl", docs[:cut])]:
        (corpus / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in part), encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for n in (1, 2):
        script = tmp_path / f"train{n}.py"
        script.write_text(TRAIN_SCRIPT.format(tests=str(ROOT / "tests"), corpus=str(corpus),
                                              out=str(tmp_path / f"out{n}"), micro=2 if n == 1 else "None"))
        launch = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  "--nproc_per_node=2"]
        out = subprocess.run([*launch, str(script)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        stop = 1 if n == 1 else CLOCK_STEPS  # one process reads its own clock every step
        assert out.stdout.count(f"deadline reached at step {stop} of 40") == n, out.stdout[-2000:]
    one, two = (read_results(tmp_path / f"out{n}") for n in (1, 2))
    pick = lambda df: df[df.metric.isin(["loss", "val_loss"])].sort_values(["step", "metric"])  # noqa: E731
    assert len(pick(one)) == 4 and pick(one).value.tolist() == pick(two).value.tolist()
    assert two.run_id.nunique() == 1  # rank 0 alone writes
    weights = [torch.load(next((tmp_path / f"out{n}" / "runs").rglob("*.pth"))) for n in (1, 2)]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
