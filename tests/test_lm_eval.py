"""lm-eval integration: our adapter against lm-eval's own `hf` model, prefix reuse, rolling and
generation, offline tasks over the real evaluation sets, and the errors a user meets."""

import json
import math

import pytest
import torch

from conftest import NEOX_TOKENIZER, SHARED_DATA
from rwkvbench import load_model
from rwkvbench.evals.lm_eval_adapter import SequenceModelLM
from rwkvbench.evals.lm_eval_tasks import BUILTIN, TaskDataError, resolve_task
from rwkvbench.models import checkpoints as ck
from rwkvbench.models.build import build_rwkv4
from rwkvbench.models.rwkv4 import RWKV4Model
from rwkvbench.models.tokenizer import HFTokenizer
from rwkvbench.models.transformer import HFCausalLM
from rwkvbench.results import ResultsWriter, read_results
from rwkvbench.units import run_units

lm_eval = pytest.importorskip("lm_eval")
EVAL_DATA = SHARED_DATA / "eval"


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def fixture_tasks(tmp_path):
    """Small tasks in each layout, written by the test."""
    cloze = write_jsonl(tmp_path / "cloze.jsonl", [
        {"context": f"The number after {i} is", "continuation": str(i + 1)} for i in range(12)])
    mc = write_jsonl(tmp_path / "mc.jsonl", [
        {"query": f"Question: what colour is item {i}?\nAnswer:", "choices": ["red", "green", "blue sky", "a"],
         "gold": i % 4} for i in range(10)])
    partial = write_jsonl(tmp_path / "partial.jsonl", [
        {"context_options": [f"Tom met Ann and {i} dogs so Tom", f"Tom met Ann and {i} dogs so Ann"],
         "continuation": "was happy.", "gold": i % 2} for i in range(8)])
    return {"my_cloze": (cloze, "cloze"), "my_mc": (mc, "multiple_choice"), "my_partial": (partial, "partial")}


def task_dicts(fixture_tasks):
    return [resolve_task(name, data_files={name: str(path)}, layout=layout)
            for name, (path, layout) in fixture_tasks.items()]


# ---- the same weights through lm-eval's hf model and through ours ---------------------------------
@pytest.fixture(scope="module")
def hf_tokenizer():
    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"{NEOX_TOKENIZER} not present")
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_file=str(NEOX_TOKENIZER), eos_token="<|endoftext|>")


def neox_pair(tmp_path):
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    torch.manual_seed(0)
    cfg = GPTNeoXConfig(vocab_size=50304, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=256, max_position_embeddings=512, rotary_pct=0.25)
    hf = GPTNeoXForCausalLM(cfg).eval()
    return hf, HFCausalLM(hf, HFTokenizer(NEOX_TOKENIZER), name="neox")


def rwkv_pair(tmp_path):
    from transformers import RwkvForCausalLM

    shape = ck.RWKV4Shape(2, 64, 50277, 256)
    sd = ck.random_rwkv4(shape, seed=1)
    ck.save_hf(sd, tmp_path / "hf_rwkv", shape)
    hf = RwkvForCausalLM.from_pretrained(tmp_path / "hf_rwkv", dtype=torch.float32).eval()
    return hf, RWKV4Model(build_rwkv4(sd, shape), HFTokenizer(NEOX_TOKENIZER), name="rwkv")


@pytest.mark.slow
@pytest.mark.parametrize("pair", [neox_pair, rwkv_pair], ids=["gpt_neox", "rwkv4"])
def test_loglikelihoods_and_metrics_equal_lm_evals_hf_model(tmp_path, hf_tokenizer, fixture_tasks, pair):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    hf_model, ours = pair(tmp_path)
    ref = HFLM(pretrained=hf_model, tokenizer=hf_tokenizer, batch_size=4)
    lm = SequenceModelLM(ours, batch_size=4)
    pairs = [("The capital of France is", " Paris"), ("The capital of France is", " Lyon and more"),
             ("A", " b c d e"), ("", "An empty context"), ("Trailing space ", "here"),
             ("Question: 2+2?\nAnswer:", " 4"), ("Question: 2+2?\nAnswer:", " five")]
    requests = [Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)]
    got, want = lm.loglikelihood(requests), ref.loglikelihood(requests)
    for (g, g_greedy), (w, w_greedy) in zip(got, want):
        assert abs(g - w) <= 1e-4 * max(1.0, abs(w)) and g_greedy == w_greedy

    rolling = [Instance("loglikelihood_rolling", {}, ("Some document text. " * 20,), 0)]
    assert lm.loglikelihood_rolling(rolling)[0] == pytest.approx(ref.loglikelihood_rolling(rolling)[0], rel=1e-4)

    tasks = task_dicts(fixture_tasks)
    ours_res = lm_eval.simple_evaluate(model=lm, tasks=tasks, bootstrap_iters=0, log_samples=False)["results"]
    ref_res = lm_eval.simple_evaluate(model=ref, tasks=tasks, bootstrap_iters=0, log_samples=False)["results"]
    for name in fixture_tasks:
        for key, value in ref_res[name].items():
            if isinstance(value, float) and "stderr" not in key:
                assert ours_res[name][key] == pytest.approx(value, rel=1e-4), (name, key)


# ---- adapter mechanics ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_rwkv():
    return load_model("rwkv4_tiny", device="cpu")


def test_prefix_reuse_gives_the_same_scores_and_counts_the_saving(tiny_rwkv):
    lm = SequenceModelLM(tiny_rwkv, batch_size=8)
    enc = lm.tok_encode
    ctx = enc("A man is sitting on a roof. He")  # HellaSwag-shaped: 4 endings of one context
    conts = [enc(" starts pulling up roofing."), enc(" is holding a rubik's cube."), enc(" is using wrap."),
             enc(" ends up falling.")]
    shared = lm._score_shared_context(ctx, conts)
    assert lm.stats["prefix_tokens_saved"] == 3 * len(ctx)
    flat = lm._score_sequences([(ctx, c) for c in conts])
    for (a, ga), (b, gb) in zip(shared, flat):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-4) and ga == gb


def test_rolling_with_state_carry_is_exact_at_any_chunk_size(tiny_rwkv):
    from lm_eval.api.instance import Instance

    doc = [Instance("loglikelihood_rolling", {}, ("RWKV carries a state from chunk to chunk. " * 6,), 0)]
    whole = SequenceModelLM(tiny_rwkv, rolling_chunk=100000).loglikelihood_rolling(doc)[0]
    chunked = SequenceModelLM(tiny_rwkv, rolling_chunk=7).loglikelihood_rolling(doc)[0]
    assert chunked == pytest.approx(whole, rel=1e-5)
    tokens = tiny_rwkv.tokenizer.encode(doc[0].args[0])
    logits, _ = tiny_rwkv.prefill([[tiny_rwkv.tokenizer.eos_token_id] + tokens[:-1]])
    direct = torch.log_softmax(logits[0], -1).gather(-1, torch.tensor(tokens)[:, None]).sum().item()
    assert whole == pytest.approx(direct, rel=1e-5)


def test_generate_until_is_greedy_and_stops(tiny_rwkv):
    from lm_eval.api.instance import Instance

    lm = SequenceModelLM(tiny_rwkv)
    prompt = "Hello"
    ids = tiny_rwkv.tokenizer.encode(prompt)
    logits, state = tiny_rwkv.prefill([ids], logits="last")
    expected = []
    for _ in range(12):
        tok = int(logits[0].argmax())
        expected.append(tok)
        logits, state = tiny_rwkv.step([tok], state)
    full = tiny_rwkv.tokenizer.decode(expected)
    out = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": [], "max_gen_toks": 12}), 0)])
    assert out == [full]
    stop = full[3:5]
    out = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": [stop], "max_gen_toks": 12}), 0)])
    assert out == [full.split(stop)[0]]


def test_registered_with_lm_eval():
    from lm_eval.api.registry import get_model

    cls = get_model("rwkvbench")
    assert cls is SequenceModelLM
    lm = cls.create_from_arg_string("model=rwkv4_tiny,device=cpu", {"batch_size": 4})
    assert lm.model.name == "rwkv4_tiny" and lm.batch_size == 4
    # lm-eval's command line passes its own --device (default cuda:0) beside model_args' device
    lm = cls.create_from_arg_obj({"model": "rwkv4_tiny", "device": "cpu"},
                                 {"batch_size": 2, "max_batch_size": None, "device": "cuda:0"})
    assert lm.model.device.type == "cpu" and lm.batch_size == 2


def test_model_args_pretrained_alias_batch_size_and_unknown_keys(tmp_path):
    from rwkvbench.errors import ConfigError

    shape = ck.RWKV4Shape(2, 16, 257, 64)
    sd = ck.random_rwkv4(shape, seed=5)
    ck.save_blinkdl(sd, tmp_path / "m.pth")
    lm = SequenceModelLM.create_from_arg_obj({"pretrained": str(tmp_path / "m.pth"), "tokenizer": "bytes",
                                              "device": "cpu"})
    assert lm.model.n_params == shape.n_params()
    assert torch.equal(lm.model.net.emb.weight, sd["emb.weight"])  # the weights of the file given as pretrained=
    for bad in (0, -2, "x", "0"):
        with pytest.raises(ConfigError, match=f"batch_size={bad!r}: expected 'auto' or an int >= 1"):
            SequenceModelLM(load_model("rwkv4_tiny", device="cpu"), batch_size=bad)
    assert SequenceModelLM(load_model("rwkv4_tiny", device="cpu"), batch_size="auto").batch_size == 16
    assert SequenceModelLM(load_model("rwkv4_tiny", device="cpu"), batch_size="auto:4", max_batch_size=4).batch_size == 4
    with pytest.raises(ConfigError, match=r"unknown keyword 'devic' \(did you mean 'device'\?\); valid .*max_batch_size"):
        SequenceModelLM.create_from_arg_obj({"model": "rwkv4_tiny", "devic": "cpu"})
    with pytest.raises(ConfigError, match="pretrained=.* and path=.* disagree"):
        SequenceModelLM(model="rwkv4", pretrained="a.pth", path="b.pth")


def test_local_task_yaml_loads_in_lm_eval_as_the_same_task(tmp_path, monkeypatch):
    from lm_eval.tasks._yaml_loader import load_yaml

    from rwkvbench.lm_eval_cli import local_tasks, write_local_task

    if not (EVAL_DATA / "copa.jsonl").is_file():
        pytest.skip(f"{EVAL_DATA} not present")
    monkeypatch.setenv("RWKVBENCH_CACHE", str(tmp_path))
    path = write_local_task("copa", EVAL_DATA)
    assert path.parent.parent == tmp_path / "lm_eval_tasks"
    assert load_yaml(path, resolve_func=True) == resolve_task("copa", str(EVAL_DATA))
    assert write_local_task("hellaswag", EVAL_DATA) is None  # no local file: lm-eval's own task
    argv = local_tasks(["--model", "rwkvbench", "--tasks", "copa,hellaswag", "--limit", "5"], EVAL_DATA)
    assert argv == ["--model", "rwkvbench", "--tasks", f"{path},hellaswag", "--limit", "5"]
    assert local_tasks(["-t", "copa", "hellaswag"], EVAL_DATA) == ["-t", f"{path},hellaswag"]


@pytest.mark.slow
def test_lm_eval_console_script_end_to_end(tmp_path):
    """lm-eval's own command line with our model and local data: results JSON and per-sample log."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if not (EVAL_DATA / "piqa.jsonl").is_file():
        pytest.skip(f"{EVAL_DATA} not present")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "RWKVBENCH_CACHE": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-m", "rwkvbench.lm_eval_cli", "--model", "rwkvbench", "--model_args",
         "model=rwkv4_tiny,device=cpu", "--tasks", "piqa", "--data_dir", str(EVAL_DATA), "--output_path",
         str(tmp_path / "out"), "--log_samples", "--limit", "5", "--batch_size", "4"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "Traceback" not in out.stderr and "piqa" in out.stdout and "acc_norm" in out.stdout
    [results] = (tmp_path / "out" / "rwkv4_tiny").glob("results_*.json")
    data = json.loads(results.read_text())
    assert data["n-samples"]["piqa"]["effective"] == 5 and 0 <= data["results"]["piqa"]["acc,none"] <= 1
    assert data["configs"]["piqa"]["dataset_kwargs"]["data_files"]["test"] == str(EVAL_DATA / "piqa.jsonl")
    [samples] = (tmp_path / "out" / "rwkv4_tiny").glob("samples_piqa_*.jsonl")
    assert len(samples.read_text().splitlines()) == 5


# ---- tasks and data ----------------------------------------------------------------------------------
def test_users_own_files_become_tasks_from_config_alone(tmp_path, fixture_tasks):
    from rwkvbench.evals import get_evaluator
    from omegaconf import OmegaConf

    part = OmegaConf.create({"evaluator": "lm_eval", "name": "custom", "tasks": list(fixture_tasks),
                             "data_dir": None, "limit": None, "num_fewshot": 0, "batch_size": 8,
                             "data_files": {n: str(p) for n, (p, _) in fixture_tasks.items()},
                             "layouts": {n: layout for n, (_, layout) in fixture_tasks.items()}})
    model = load_model("neox_tiny", device="cpu")
    run_units(model, get_evaluator("lm_eval")(model, part), ResultsWriter(tmp_path / "out"))
    df = read_results(tmp_path / "out")
    acc = df[df.metric == "acc"].set_index("task")
    assert set(acc.index) == set(fixture_tasks)
    assert acc.loc["my_mc", "n"] == 10 and acc.loc["my_partial", "n"] == 8 and acc.loc["my_cloze", "n"] == 12
    assert df[df.metric == "prefix_tokens_saved"].set_index("task").loc["my_mc", "value"] > 0


@pytest.mark.slow
def test_every_real_eval_set_runs_end_to_end(tmp_path):
    """Each real set in the shared folder on a tiny model: every row checked before the run (task_data),
    the first 64 documents scored (every document took 11 minutes of CI), counts match, metrics finite."""
    from rwkvbench.evals import get_evaluator
    from omegaconf import OmegaConf

    present = {name: EVAL_DATA / f for name, (f, _, _) in BUILTIN.items() if (EVAL_DATA / f).is_file()}
    if not present:
        pytest.skip(f"{EVAL_DATA} not present")
    limit = 64
    part = OmegaConf.create({"evaluator": "lm_eval", "name": "paper", "tasks": list(present), "data_dir": str(EVAL_DATA),
                             "data_files": {}, "layouts": {}, "limit": limit, "num_fewshot": 0, "batch_size": 32})
    model = load_model("neox_tiny", device="cpu")
    run_units(model, get_evaluator("lm_eval")(model, part), ResultsWriter(tmp_path))
    df = read_results(tmp_path)
    for name, path in present.items():
        rows = df[(df.task == name) & (df.metric == "acc")]
        assert len(rows) == 1, name
        assert rows.n.iloc[0] == min(limit, sum(1 for _ in path.open())), name
        assert df[df.task == name].value.map(math.isfinite).all(), name


def test_unknown_task_and_missing_offline_data(tmp_path):
    with pytest.raises(ValueError, match="unknown task 'lambda'; built-in: lambada_openai"):
        resolve_task("lambda", data_dir=str(tmp_path))
    with pytest.raises(TaskDataError, match=r"task hellaswag: no local data at .*hellaswag.jsonl; supply "
                                            r"\+data_files.hellaswag=FILE"):
        resolve_task("hellaswag", data_dir=str(tmp_path))
    with pytest.raises(TaskDataError, match="data file .*nope.jsonl not found"):
        resolve_task("piqa", data_files={"piqa": str(tmp_path / "nope.jsonl")})
    with pytest.raises(ValueError, match="needs layout="):
        resolve_task("mine", data_files={"mine": str(tmp_path / "x.jsonl")})


def test_cli_unknown_task_names_the_valid_ones(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "rwkvbench", "task=lambda"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode != 0 and "lambada" in out.stderr and "paper_zero_shot" in out.stderr


def test_simple_evaluate_takes_the_model_by_name(tmp_path, fixture_tasks):
    out = lm_eval.simple_evaluate(model="rwkvbench", model_args="model=rwkv4_tiny,device=cpu",
                                  tasks=task_dicts(fixture_tasks)[1:2], limit=3, bootstrap_iters=0, log_samples=False)
    assert out["results"]["my_mc"]["acc,none"] >= 0
