"""The recall evaluator end to end: both tiny families through the CLI config for every probe and a sweep
over context_len, tidy rows with the state held, determinism, out-of-memory points (predicted and
observed), the task files, and tiny models of each family trained on copy rising well above chance."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from recall_helpers import CORPUS, PROBES, make_probe, one_thread, part  # noqa: F401

from rwkvbench.config import conf_dir, load_option
from rwkvbench.evals import get_evaluator
from rwkvbench.evals import recall as recall_module
from rwkvbench.evals.probes.sanity import OracleModel
from rwkvbench.evals.probes.scoring import score_items
from rwkvbench.evals.recall import score_rows
from rwkvbench.models.registry import load_model
from rwkvbench.models.tokenizer import ByteTokenizer
from rwkvbench.results import ResultsWriter, read_results
from rwkvbench.run import run
from rwkvbench.units import run_units

SWEEPS = {  # small sweeps over context_len that every probe fits in bytes
    "copy": ["task.parts.0.context_lens=[64,128]", "task.parts.0.n_items=4", "task.parts.0.kinds=[natural]"],
    "phonebook": ["task.parts.0.context_lens=[256,512]", "task.parts.0.books=2", "task.parts.0.queries_per_book=2"],
    "mqar": ["task.parts.0.context_lens=[64,128]", "task.parts.0.kv_pairs=[8]", "task.parts.0.n_items=4"],
    "passkey": ["task.parts.0.context_lens=[288,576]", "task.parts.0.depths=[0.5]", "task.parts.0.n_items=4",
                "task.parts.0.orders=[question_first]"],
}


def cli_config(probe: str, *extra):
    corpus = [f"task.parts.0.corpus_path={CORPUS}"] if probe == "copy" else []
    kinds = [] if CORPUS.is_file() or probe != "copy" else ["task.parts.0.kinds=[random]"]
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=[f"task={probe}", "device=cpu", *SWEEPS[probe], *corpus, *kinds,
                                                        *extra])


@pytest.mark.parametrize("probe", PROBES)
def test_both_tiny_families_run_every_probe_through_the_cli_config(probe, tmp_path):
    run(cli_config(probe), tmp_path)
    df = read_results(tmp_path)
    assert set(df.model) == {"rwkv4_tiny", "neox_tiny"} and set(df.suite) == {"recall"} and set(df.task) == {probe}
    values = df[~df.metric.isin(["oom", "skipped"])]
    lens = sorted(values.context_len.unique())
    assert len(lens) == 2 and values.value.notna().all()
    assert {"exact_match", "token_accuracy", "answer_logprob", "answer_logprob_per_token", "state_bytes",
            "context_tokens", "wall_seconds"} <= set(values.metric)
    acc = values[values.metric == "exact_match"]
    assert ((acc.value >= 0) & (acc.value <= 1)).all() and (acc.n > 0).all() and acc.stderr.notna().all()
    # recall against memory held: the recurrent state is one size, the KV cache grows with the context
    state = values[values.metric == "state_bytes"].groupby(["model", "context_len"]).value.first().unstack("context_len")
    assert state.loc["rwkv4_tiny"].nunique() == 1
    assert state.loc["neox_tiny", lens[1]] > 1.5 * state.loc["neox_tiny", lens[0]]


def test_same_seed_same_rows(tmp_path):
    cfg = cli_config("mqar", "compare=false", "task.parts.0.context_lens=[128]")
    run(cfg, tmp_path / "a")
    run(cfg, tmp_path / "b")
    a, b = (read_results(tmp_path / d).query("metric != 'wall_seconds'").sort_values(["variant", "metric"])
            for d in "ab")
    assert a.value.tolist() == b.value.tolist() and a.fingerprint.tolist() == b.fingerprint.tolist()
    cfg.task.parts[0].seed = 1
    run(cfg, tmp_path / "c")
    c = read_results(tmp_path / "c").query("metric == 'answer_logprob'").sort_values("variant")
    assert c.value.tolist() != a.query("metric == 'answer_logprob'").value.tolist()


def test_the_oracle_scores_everything_through_the_evaluator(tmp_path):
    oracle = OracleModel(ByteTokenizer())
    writer = ResultsWriter(tmp_path)
    small = {"copy": dict(context_lens=[128], n_items=2), "phonebook": dict(context_lens=[512], books=1),
             "mqar": dict(context_lens=[128], kv_pairs=[4, 16], n_items=2),
             "passkey": dict(context_lens=[576], n_items=2)}
    for probe in PROBES:  # every variant of every probe's own task file
        run_units(oracle, get_evaluator("recall")(oracle, part(probe, **small[probe])), writer)
    df = read_results(tmp_path)
    exact = df[df.metric == "exact_match"]
    assert set(exact.task) == set(PROBES) and (exact.value == 1.0).all()
    assert len(exact) == len(part("copy").kinds) + 1 + 2 + 6


def test_a_state_that_cannot_fit_is_an_oom_row_at_once_and_first(tmp_path, monkeypatch):
    """A KV cache that alone outgrows the device's memory is `oom` (predicted), ahead of every other unit;
    a recurrent state never is."""
    rwkv, neox = (load_model(m, device="cpu") for m in ("rwkv4_tiny", "neox_tiny"))
    base, per_token = recall_module.state_growth(neox)
    memory = neox.weights_nbytes + base + per_token * 400  # holds the KV cache of 288 tokens, not of 576
    monkeypatch.setattr(recall_module, "device_memory", lambda device: memory)
    task = cli_config("passkey").task.parts[0]
    units = get_evaluator("recall")(neox, task)
    first = units[0]
    assert first.key["context_len"] == 576
    with pytest.raises(torch.OutOfMemoryError, match="predicted, not attempted"):
        first.measure(None)
    writer = ResultsWriter(tmp_path)
    run_units(neox, units, writer)
    run_units(rwkv, get_evaluator("recall")(rwkv, task), writer)
    df = read_results(tmp_path)
    oom = df[df.metric == "oom"]
    assert set(oom.model) == {"neox_tiny"} and set(oom.context_len) == {576} and oom.note.str.contains("KiB per token").all()
    assert (df[(df.model == "neox_tiny") & (df.context_len == 288)].metric == "exact_match").any()


def test_running_out_of_memory_with_one_item_skips_longer_contexts(tmp_path):
    class SmallMemory(OracleModel):
        def prefill(self, ids, state=None, *, logits="all"):
            held = (0 if state is None else state.shape[1]) + self.as_ids(ids).shape[1]
            if held > 300:
                raise torch.OutOfMemoryError("CUDA out of memory (test)")
            return super().prefill(ids, state, logits=logits)

    model = SmallMemory(ByteTokenizer())
    task = OmegaConf.merge(part("mqar"), {"context_lens": [128, 512, 1024], "kv_pairs": [4, 16], "n_items": 2})
    run_units(model, get_evaluator("recall")(model, task), ResultsWriter(tmp_path))
    df = read_results(tmp_path)
    status = df[df.metric.isin(["oom", "skipped"])].set_index(["context_len", "variant"]).metric.to_dict()
    assert status == {(512, "k=4"): "oom", (512, "k=16"): "skipped", (1024, "k=4"): "skipped",
                      (1024, "k=16"): "skipped"}
    assert (df[df.context_len == 128].metric == "exact_match").sum() == 2


def test_recall_runs_all_four_probes_as_their_own_task_files():
    recall = load_option("task", "recall")
    assert [p.probe for p in recall.parts] == list(PROBES)
    for p in recall.parts:
        assert OmegaConf.to_container(p) == OmegaConf.to_container(load_option("task", p.probe).parts[0])


@pytest.mark.slow
def test_the_cli_runs_every_probe_for_both_families(tmp_path):
    overrides = [o.replace("parts.0", f"parts.{i}") for i, probe in enumerate(PROBES) for o in SWEEPS[probe]]
    out = subprocess.run(
        [sys.executable, "-m", "rwkvbench", "task=recall", "device=cpu", *overrides,
         f"task.parts.0.corpus_path={CORPUS}", *([] if CORPUS.is_file() else ["task.parts.0.kinds=[random]"]),
         f"hydra.run.dir={tmp_path}/run"], cwd=tmp_path, capture_output=True, text=True, timeout=600,
        env={**os.environ, "OMP_NUM_THREADS": "1"})  # tiny models: one thread is faster on a shared machine
    assert out.returncode == 0, out.stderr[-3000:]
    df = read_results(tmp_path / "run")
    assert set(df.task) == set(PROBES) and set(df.model) == {"rwkv4_tiny", "neox_tiny"}
    assert (df.groupby(["model", "task"]).context_len.nunique() == 2).all()
    assert "== passkey" in out.stdout


SMALL = {"rwkv4_tiny": {"arch": {"n_layer": 2, "n_embd": 64, "dim_ffn": 256, "vocab_size": 257}},
         "neox_tiny": {"arch": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 256}}}


def trainable(model) -> torch.nn.Module:
    """The test knows the families (the probes never do): the torch module under each wrapper."""
    return model.net if model.family == "rwkv" else model.model


def train_on_copy(model, probe, variant, L: int, steps: int) -> None:
    net = trainable(model).train().requires_grad_(True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    for step in range(steps):
        items = probe.items(L, variant, seed=1000 + step)
        ids = torch.tensor(np.stack([it.ids for it in items]))
        gold = torch.full_like(ids, -100)
        for b, it in enumerate(items):
            (a,) = it.answers
            gold[b, a.pos : a.pos + len(a.tokens)] = torch.as_tensor(a.tokens)
        logits = net(ids, None, "all")[0] if model.family == "rwkv" else net(input_ids=ids).logits
        loss = torch.nn.functional.cross_entropy(logits.float().flatten(0, 1), gold.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval().requires_grad_(False)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["rwkv4_tiny", "neox_tiny"])
def test_a_tiny_model_trained_on_copy_rises_well_above_chance(name):
    """Random 8-token strings over 8 symbols (chance: 1/8 per token), 250 steps of 16 on CPU."""
    torch.manual_seed(0)
    model = load_model(name, device="cpu", **SMALL[name])
    probe = make_probe("copy", model.tokenizer, kinds=["random"], n_items=16,
                       format={"token_ranges": {"bytes": [97, 105]}})
    variant, L = {"kind": "random"}, 28
    test_items = probe.items(L, variant, seed=0)
    before = {r["metric"]: r["value"] for r in score_rows(score_items(model, test_items, 16))}
    train_on_copy(model, probe, variant, L, steps=250)
    after = {r["metric"]: r["value"] for r in score_rows(score_items(model, test_items, 16))}
    assert before["token_accuracy"] < 0.25
    assert after["token_accuracy"] > 0.4 and after["token_accuracy"] > before["token_accuracy"] + 0.25
