"""Training runs end to end on a slice of the corpus (CPU, the reference WKV): the loss falls, a killed or
stopped run resumes to the same weights, the reported validation loss is the harness's perplexity on
the same split, and the ladder trains a matched pair that the harness then runs."""

import json
import math
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import SHARED_DATA
from rwkvbench.config import conf_dir, load_option
from rwkvbench.models.build import build_rwkv4  # noqa: F401  (the harness's loaders, imported once)
from rwkvbench.models.checkpoints import read_rwkv4
from rwkvbench.results import ResultsWriter, read_results
from rwkvbench.train.data import load_corpus, read_documents
from rwkvbench.train.rows import training_table
from rwkvbench.train.trainer import RunSpec, train_run

CONTEXT = 32
pytestmark = pytest.mark.usefixtures("one_thread")


def corpus_documents() -> list[str]:
    """About 200 KB of English prose: the shared corpus's validation split when present, else the README."""
    source = SHARED_DATA / "corpus" / "valid.jsonl.xz"
    if source.is_file():
        docs = read_documents(source)
    else:
        from rwkvbench.evals.perplexity import package_docs

        docs = [p for p in package_docs().split("\n\n") if len(p) > 200]
    out, size = [], 0
    for d in docs:
        out.append(d[:20000])
        size += len(out[-1])
        if size > 200_000:
            break
    return out


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    docs = corpus_documents()
    cut = max(1, len(docs) // 8)
    for name, part in [("train-00.jsonl", docs[cut:]), ("valid.jsonl", docs[:cut])]:
        (folder / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in part), encoding="utf-8")
    return folder


def data_config(corpus_dir):
    return OmegaConf.create({"name": "slice", "train": str(corpus_dir / "train-*.jsonl"), "shards": None,
                             "valid": str(corpus_dir / "valid.jsonl"), "tokenizer": "bytes", "tokenizer_path": None,
                             "cache_dir": str(corpus_dir / "cache"), "workers": 1})


@pytest.fixture(scope="module")
def corpus(corpus_dir):
    return load_corpus(data_config(corpus_dir), CONTEXT, seed=0)


def tiny_spec(family, steps=50, **kw) -> RunSpec:
    recipe = OmegaConf.to_container(load_option("train/family", family), resolve=True)
    options = dict(family=family, size="tiny", n_layer=2, n_embd=32, tokens=steps * 4 * CONTEXT, batch_size=4,
                   lr=4e-3, recipe=recipe, context_len=CONTEXT, eval_points=3, eval_tokens=2048, eval_batch_size=16,
                   checkpoint_every_s=1e9, export_weights=False)
    return RunSpec(**{**options, **kw})


@pytest.mark.parametrize("family", ["rwkv4", "neox"])
def test_fifty_steps_on_the_corpus_and_the_loss_falls(tmp_path, corpus, family):
    writer = ResultsWriter(tmp_path)
    spec = tiny_spec(family)
    assert train_run(spec, corpus, tmp_path, writer, torch.device("cpu"))
    table = training_table(writer.read())
    points = table.dropna(subset=["val_loss"])
    assert points.step.tolist() == spec.eval_steps() == [2, 10, 50]  # log-spaced
    assert points.val_loss.iloc[-1] < points.val_loss.iloc[0] - 0.5
    assert points.loss.iloc[-1] < math.log(320) - 1.5  # from ln V at the start
    final = table[table.step == 50].iloc[0]
    assert final.finished == 1.0 and final.tokens == 50 * 4 * CONTEXT
    assert final.epochs == pytest.approx(final.tokens / corpus.windows.tokens_per_epoch)
    assert final.flops == pytest.approx(final.tokens * 6 * final.params_total, rel=0.1)
    rows = read_results(tmp_path)
    assert set(rows.suite) == {"train"} and set(rows.family) == {"rwkv" if family == "rwkv4" else "transformer"}
    assert rows.device_name.notna().all() and (rows.device_name != "").all()  # the CPU or GPU, by name
    assert set(rows.checkpoint) == {str((tmp_path / "runs" / spec.run_dir_name).resolve())}  # where the run's weights are


def test_killed_and_stopped_runs_resume_to_the_same_weights(tmp_path, corpus, monkeypatch):
    spec = tiny_spec("rwkv4", steps=12, checkpoint_every_steps=1, export_weights=True, eval_points=4)
    whole = ResultsWriter(tmp_path / "whole")
    assert train_run(spec, corpus, tmp_path / "whole", whole, torch.device("cpu"))

    out = tmp_path / "interrupted"
    writer = ResultsWriter(out)
    # stopped by a deadline already past: one step, a checkpoint, False
    assert not train_run(spec, corpus, out, writer, torch.device("cpu"), deadline=0.0)
    assert (out / "runs" / spec.run_dir_name / "checkpoint.pt").is_file()
    # killed while fetching the ninth batch (one step ahead: after the checkpoint of step 7)
    real_batch = type(corpus.windows).batch

    def dies_at_nine(self, index, batch_size):
        if index == 8:
            raise KeyboardInterrupt
        return real_batch(self, index, batch_size)

    monkeypatch.setattr(type(corpus.windows), "batch", dies_at_nine)
    with pytest.raises(KeyboardInterrupt):
        train_run(spec, corpus, out, writer, torch.device("cpu"))
    monkeypatch.setattr(type(corpus.windows), "batch", real_batch)
    assert train_run(spec, corpus, out, writer, torch.device("cpu"))
    assert not (out / "runs" / spec.run_dir_name / "checkpoint.pt").exists()  # removed once finished

    a, _ = read_rwkv4(tmp_path / "whole" / "runs" / spec.run_dir_name / "rwkv4.pth")
    b, _ = read_rwkv4(out / "runs" / spec.run_dir_name / "rwkv4.pth")
    assert all(torch.equal(a[k], b[k]) for k in a)
    metrics = ["loss", "val_loss", "tokens", "flops", "lr"]
    ta, tb = training_table(whole.read()), training_table(writer.read())
    assert ta[["step", *metrics]].equals(tb[["step", *metrics]])


def test_batches_come_in_the_runs_order_one_step_ahead(corpus):
    from rwkvbench.train.trainer import batches_ahead

    fetched = []
    real = corpus.windows.batch

    class Spy:
        def batch(self, index, batch_size):
            fetched.append(index)
            return real(index, batch_size)

    got = batches_ahead(Spy(), 3, 7, 4, torch.device("cpu"))
    first = next(got)
    assert fetched == [3, 4]  # the next batch is on its way while this one trains
    rest = list(got)
    assert len(rest) == 3 and all(torch.equal(b, real(i, 4)) for i, b in zip(range(3, 7), [first, *rest]))
    assert fetched == [3, 4, 5, 6]


def test_a_checkpoint_of_another_run_is_refused(tmp_path, corpus):
    from rwkvbench.errors import ConfigError

    spec = tiny_spec("neox", steps=3, checkpoint_every_steps=1)
    train_run(spec, corpus, tmp_path, ResultsWriter(tmp_path), torch.device("cpu"), deadline=0.0)
    other = tiny_spec("neox", steps=3, checkpoint_every_steps=1, seed=1)
    with pytest.raises(ConfigError, match="written by a different run .*seed: 0 there, 1 now"):
        train_run(other, corpus, tmp_path, ResultsWriter(tmp_path), torch.device("cpu"))


def ladder_config(tmp_path, corpus_dir, *overrides, sizes=(("a", 1, 16, 8), ("b", 2, 32, 12))):
    paths = []
    for name, layers, width, steps in sizes:
        path = tmp_path / f"{name}.yaml"
        path.write_text(f"name: {name}\nn_layer: {layers}\nn_embd: {width}\ntokens: {steps * 4 * CONTEXT}\nbatch_size: 4\n")
        paths.append(str(path))
    with initialize_config_dir(config_dir=str(conf_dir() / "train"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "mode=ladder", f"out_dir={tmp_path / 'out'}", "device=cpu", f"context_len={CONTEXT}", "eval.points=4",
            "eval.tokens=2048", "eval.batch_size=16", "ladder.sweep=[0.004,0.008]", "fit.bootstrap=50", *overrides])
    cfg.ladder.sizes = paths
    cfg.data = data_config(corpus_dir)
    return cfg


def _ladder_order(tmp_path, corpus_dir, monkeypatch, sizes=(("a", 1, 16, 8), ("b", 2, 32, 12), ("c", 2, 48, 16))):
    """A ladder whose runs only record their order (Ladder.run -> `order`, all finished; sweep pick: the
    second rate)."""
    from rwkvbench.train.ladder import Ladder

    cfg = ladder_config(tmp_path, corpus_dir, sizes=sizes)
    order = []

    def run(self, spec):
        order.append((spec.name, round(spec.lr, 6)))
        self.trained += 1
        return True

    monkeypatch.setattr(Ladder, "run", run)
    monkeypatch.setattr(Ladder, "best_lr", lambda self, spec_of, lrs: lrs[1])
    ladder = Ladder.__new__(Ladder)  # no corpus: the order alone
    ladder.cfg, ladder.deadline, ladder.trained = cfg, None, 0
    return ladder, order


def test_ladder_trains_each_size_for_both_families_before_the_next(tmp_path, corpus_dir, monkeypatch):
    """A size's pair trains back to back, after both sweeps, at the sweep's rate scaled to its width."""
    from rwkvbench.train.ladder import recipe_for, scaled_lr

    ladder, order = _ladder_order(tmp_path, corpus_dir, monkeypatch)
    chosen = ladder.all()
    lr = {(f, w): round(scaled_lr(recipe_for(ladder.cfg, f), 0.008, 16, w), 6) for f in ("rwkv4", "neox") for w in (32, 48)}
    assert order == [("rwkv4_a", 0.004), ("rwkv4_a", 0.008), ("neox_a", 0.004), ("neox_a", 0.008),
                     ("rwkv4_b", lr["rwkv4", 32]), ("neox_b", lr["neox", 32]),
                     ("rwkv4_c", lr["rwkv4", 48]), ("neox_c", lr["neox", 48])]
    assert {f: [s.name for s in specs] for f, specs in chosen.items()} == {
        "rwkv4": ["rwkv4_a", "rwkv4_b", "rwkv4_c"], "neox": ["neox_a", "neox_b", "neox_c"]}


def test_ladder_stops_before_a_pair_that_does_not_fit_the_deadline_together(tmp_path, corpus_dir, monkeypatch):
    import time

    from rwkvbench.results import ResultsWriter

    ladder, order = _ladder_order(tmp_path, corpus_dir, monkeypatch)
    ladder.writer = ResultsWriter(tmp_path / "rows")
    ladder.estimator = type("Estimate", (), {"seconds": lambda self, spec, results: 60.0})()
    ladder.deadline = time.monotonic() + 100  # one run fits, a pair does not
    assert ladder.all() is None
    assert [name for name, _ in order] == ["rwkv4_a", "rwkv4_a", "neox_a", "neox_a"]  # neither b run started
    from rwkvbench.train.ladder import make_spec, recipe_for, size_config

    pair = [make_spec(ladder.cfg, recipe_for(ladder.cfg, f), size_config(ladder.cfg, ladder.cfg.ladder.sizes[1]), 0.01)
            for f in ("rwkv4", "neox")]
    assert ladder.fits(pair) is False
    ladder.trained = 0  # a call that has trained nothing yet: a pair that fits no call goes on run by run
    assert ladder.fits(pair) is True


@pytest.mark.slow
def test_ladder_trains_a_matched_pair_the_harness_runs_and_a_rerun_skips_it(tmp_path, corpus_dir, monkeypatch):
    from rwkvbench.run import run
    from rwkvbench.train import __main__ as cli

    cfg = ladder_config(tmp_path, corpus_dir)
    out = tmp_path / "out"
    writer = ResultsWriter(out)
    cli.run_ladder(cfg, out, writer)
    table = training_table(writer.read())
    finished = table[table.finished == 1.0]
    assert sorted(finished.model) == ["neox_a", "neox_a", "neox_b", "rwkv4_a", "rwkv4_a", "rwkv4_b"]  # sweep at a
    assert (out / "ladder.md").is_file() and "neox_b" in (out / "ladder.md").read_text()

    # the harness on the trained pair: its perplexity on the validation split is the trainer's val loss
    pair = OmegaConf.load(out / "models" / "model" / "rwkv4_b.yaml")
    assert OmegaConf.load(pair.matched).name == "neox_b"
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        harness = compose(config_name="config", overrides=["task=perplexity", "device=cpu", "dtype=fp32"])
    harness.model = pair
    part = harness.task.parts[0]
    part.text, part.context_len, part.max_tokens, part.batch_size = str(corpus_dir / "valid.jsonl"), CONTEXT, 2048, 16
    run(harness, tmp_path / "harness")
    ppl = read_results(tmp_path / "harness")
    for model in ["rwkv4_b", "neox_b"]:
        nll = ppl[(ppl.model == model) & (ppl.metric == "nll_per_token")].value.iloc[0]
        final = table[(table.model == model) & (table.finished == 1.0)].iloc[0]
        val = table[(table.model == model) & (table.step == final.step)].val_loss.iloc[0]
        assert nll == pytest.approx(val, rel=1e-5), model

    monkeypatch.setattr("rwkvbench.train.ladder.train_run", lambda *a, **k: pytest.fail("trained again"))
    cli.run_ladder(cfg, out, ResultsWriter(out))


@pytest.mark.slow
def test_cli_bad_input_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rwkvbench.train", "family=gru", f"out_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode != 0 and "family" in out.stderr and "gru" in out.stderr
    out = subprocess.run([sys.executable, "-m", "rwkvbench.train", f"out_dir={tmp_path}", "size=tiny",
                          f"data.train={tmp_path}/nothing-*.jsonl.xz"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    for mode in ("run", "ladder"):  # before the corpus is read: data.train matches nothing here either
        bad = subprocess.run([sys.executable, "-m", "rwkvbench.train", f"mode={mode}", "compile_mode=reduce_overhead",
                              f"out_dir={tmp_path}", f"data.train={tmp_path}/nothing-*.jsonl.xz"],
                             capture_output=True, text=True, timeout=120)
        assert bad.returncode == 2 and "compile_mode='reduce_overhead'" in bad.stderr and "reduce-overhead" in bad.stderr
    assert out.stderr.strip() == (f"rwkvbench.train: error: data.train: {tmp_path}/nothing-*.jsonl.xz matches no file "
                                  "(give data.root= the folder holding corpus/ and tokenizer/, or $RWKVBENCH_DATA, or "
                                  "data.train= files or globs)")


@pytest.mark.slow
def test_a_finished_run_is_kept_not_trained_again(tmp_path, corpus_dir, monkeypatch, capsys):
    from rwkvbench.train import __main__ as cli

    cfg = ladder_config(tmp_path, corpus_dir, "mode=run", "family=neox")
    cfg.size = OmegaConf.load(cfg.ladder.sizes[0])
    out = tmp_path / "out"
    cli.run_one(cfg, out, ResultsWriter(out))
    assert len(finished_runs_of(out)) == 1
    monkeypatch.setattr("rwkvbench.train.trainer.train_run", lambda *a, **k: pytest.fail("trained again"))
    monkeypatch.setattr("rwkvbench.train.data.load_corpus", lambda *a, **k: pytest.fail("tokenized again"))
    cli.run_one(cfg, out, ResultsWriter(out))
    assert "finished before" in capsys.readouterr().out
    cfg.lr = 0.001  # another setting: another run
    monkeypatch.undo()
    cli.run_one(cfg, out, ResultsWriter(out))
    assert len(finished_runs_of(out)) == 2


def finished_runs_of(out):
    from rwkvbench.train.rows import finished_runs

    return finished_runs(read_results(out))


def test_the_sweep_takes_the_smallest_rate_near_the_lowest_loss():
    from rwkvbench.train.ladder import choose_lr

    finals = {2e-3: 6.457, 4e-3: 6.333, 8e-3: 6.328, 1.6e-2: 6.543}  # GPT-NeoX s1 on an H200
    assert choose_lr(finals, 0.0) == 8e-3  # no tolerance: the argmin
    assert choose_lr(finals, 0.02) == 4e-3
    assert choose_lr({2e-3: 5.954, 4e-3: 5.709, 8e-3: 5.609, 1.6e-2: 5.671}, 0.02) == 8e-3  # a clear optimum stays
