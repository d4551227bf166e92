"""Bad input through the real command line: each mistake exits non-zero within seconds with one clear line
on stderr naming the culprit, and no traceback. Most are caught by validate_run before any model loads.

The table's fast subset runs unmarked; the rest is marked slow and runs its subprocesses a few at a time
(each is ~3-5 s of Hydra and imports).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from conftest import SHARED_DATA

EVAL = SHARED_DATA / "eval"
NO_CUDA = not torch.cuda.is_available()
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    id: str
    args: list[str]
    needles: list[str]  # each must appear in stderr (the culprit, what was expected)
    fast: bool = False
    needs: list[str] = field(default_factory=list)  # "no_cuda", "eval_data"
    before_model: bool = False  # also checked: refused before any model loads (no model's line printed)


def fixture_files(folder: Path) -> dict[str, str]:
    """Files the cases point at, written once per session."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.pth").write_text("101\nthese are my notes, not weights\n")

    class Exploit:
        def __reduce__(self):
            return (print, ("this would run",))

    torch.save({"emb.weight": torch.zeros(2, 2), "payload": Exploit()}, folder / "unsafe.pth")
    (folder / "tokenizer.json").write_text("{}")  # exists: enough to pass the check before any load
    rows = [{"query": "Q1", "choices": ["a", "b", "c"], "gold": 0}, {"query": "Q2", "choices": ["a", "b", "c"], "gold": 7}]
    (folder / "bad_gold.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "ok.jsonl").write_text(json.dumps(rows[0]) + "\n")
    (folder / "latin1.txt").write_bytes("plain line\ncaf\u00e9\n".encode("latin-1"))
    return {"notes": str(folder / "notes.pth"), "unsafe": str(folder / "unsafe.pth"),
            "tok": str(folder / "tokenizer.json"), "bad_gold": str(folder / "bad_gold.jsonl"),
            "ok": str(folder / "ok.jsonl"), "latin1": str(folder / "latin1.txt"), "folder": str(folder)}


def cases(f: dict[str, str]) -> list[Case]:
    custom = ["task=custom", "task.parts.0.tasks=[mine]"]
    return [
        # Hydra's own errors
        Case("unknown_model", ["model=rwkv9"], ["rwkv9", "rwkv4_1b5"], fast=True),
        Case("unknown_task", ["task=lambda"], ["lambda", "lambada", "paper_zero_shot"]),
        Case("unknown_key", ["foo=1"], ["foo", "+foo=1"]),
        Case("data_files_without_plus", ["data_files.piqa=x.jsonl"], ["+data_files.piqa"], fast=True),
        Case("override_syntax", ["limit=[1,"], ["limit=[1,"]),
        Case("broken_interpolation", ["limit=${nope}"], ["limit", "nope"]),
        # validation before any model loads
        Case("cuda_on_cpu_machine", ["device=cuda"], ["device=cuda", "CUDA", "device=cpu"], fast=True,
             needs=["no_cuda"]),
        Case("bad_device", ["device=tpu"], ["device='tpu'", "cuda"]),
        Case("bad_dtype", ["dtype=fp8"], ["dtype='fp8'", "bf16"]),
        Case("bad_init", ["init=randm"], ["init='randm'", "random"]),
        Case("compare_not_bool", ["compare=maybe"], ["compare='maybe'", "true or false"]),
        Case("unknown_added_key", ["+fewshot=3"], ["+fewshot", "num_fewshot"]),
        Case("unknown_model_key", ["+model.pth=x"], ["'pth'", "path"]),
        Case("unknown_part_key", ["task=copy", "+task.parts.0.n_item=4"],
             ["task.parts.0.n_item", "recall evaluator", "probe copy", "did you mean task.parts.0.n_items"], fast=True),
        Case("part_key_of_another_probe", ["task=copy", "+task.parts.0.books=4"], ["task.parts.0.books", "probe copy"]),
        Case("limit_negative", ["task=piqa", f"data_dir={EVAL}", "limit=-1"], ["limit=-1", "int >= 1"], fast=True,
             needs=["eval_data"]),
        Case("limit_zero", ["limit=0"], ["limit=0"]),
        Case("limit_not_whole", ["limit=2.5"], ["limit=2.5", "fraction"]),
        Case("batch_size_zero", ["task=piqa", f"data_dir={EVAL}", "batch_size=0"], ["batch_size=0", "auto"],
             needs=["eval_data"]),
        Case("batch_size_negative", ["batch_size=-2"], ["batch_size=-2"]),
        Case("num_fewshot_negative", ["num_fewshot=-1"], ["num_fewshot=-1"]),
        Case("forced_kernel_on_cpu", ["wkv_kernel=cuda", "device=cpu"], ["wkv_kernel=cuda", "cpu"], fast=True),
        Case("unknown_kernel", ["wkv_kernel=fast"], ["wkv_kernel='fast'", "reference"]),
        Case("tokenizer_for_byte_model", [f"tokenizer_path={f['tok']}"], ["tokenizer_path", "byte tokenizer"]),
        Case("tokenizer_missing", ["model=rwkv4_169m", "init=random", "tokenizer_path=/nope/20B.json"],
             ["/nope/20B.json", "no such file"]),
        Case("checkpoint_offline", ["model=rwkv4_169m", "compare=false", f"tokenizer_path={f['tok']}"],
             ["BlinkDL/rwkv-4-pile-169m", "unreachable", "path="]),
        Case("hf_model_offline", ["model=pythia_160m", "compare=false", f"tokenizer_path={f['tok']}"],
             ["EleutherAI/pythia-160m", "unreachable"]),
        Case("checkpoint_missing", ["model=rwkv4", "model.path=/nope/m.pth", "model.tokenizer=bytes"],
             ["/nope/m.pth", "no such file"]),
        Case("checkpoint_is_text", ["model=rwkv4", f"model.path={f['notes']}", "model.tokenizer=bytes"],
             ["notes.pth", "not a PyTorch checkpoint", "101"]),
        Case("checkpoint_unsafe_pickle", ["model=rwkv4", f"model.path={f['unsafe']}", "model.tokenizer=bytes"],
             ["unsafe.pth", "pickled Python objects", "refuses"]),
        Case("custom_without_tasks", ["task=custom"], ["task.parts.0.tasks"]),
        Case("custom_without_layout", [*custom, f"+data_files.mine={f['ok']}"], ["mine", "+layouts.mine"]),
        Case("custom_gold_out_of_range", [*custom, f"+data_files.mine={f['bad_gold']}", "+layouts.mine=multiple_choice"],
             ["bad_gold.jsonl:2", "'gold' is 7", "0..2"]),
        Case("data_dir_missing", ["task=piqa", "data_dir=/nope/eval"], ["data_dir=/nope/eval", "no such folder"]),
        Case("task_without_local_data", ["task=hellaswag", f"data_dir={EVAL}"], ["hellaswag", "no local data",
                                                                                  "+data_files.hellaswag"],
             needs=["eval_data"]),
        Case("perplexity_text_missing", ["task=perplexity", "task.parts.0.text=/nope.txt"], ["/nope.txt"]),
        Case("perplexity_text_not_utf8", ["task=perplexity", f"task.parts.0.text={f['latin1']}"],
             ["latin1.txt:2", "not UTF-8"]),
        Case("recall_corpus_missing", ["task=copy", "task.parts.0.corpus_path=/nope/c.jsonl.xz"],
             ["corpus_path=/nope/c.jsonl.xz", "no such file"], before_model=True),
        Case("prompt_data_missing", ["task=prompt_sensitivity", "task.base=[piqa]", f"data_dir={f['folder']}"],
             ["task piqa", "no local data", "+data_files.piqa"], before_model=True),
        Case("context_len_zero", ["task=latency", "task.parts.0.context_lens=[0]"], ["context_lens.0=0"]),
    ]


def run_case(case: Case, cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    env.pop("RWKVBENCH_NEOX_TOKENIZER", None)
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "rwkvbench", *case.args, f"hydra.run.dir={cwd}/{case.id}"],
                         cwd=cwd, capture_output=True, text=True, timeout=120, env=env)
    return out, time.perf_counter() - start


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    return fixture_files(tmp_path_factory.mktemp("bad_input"))


TABLE = cases({k: f"<{k}>" for k in ("notes", "unsafe", "tok", "bad_gold", "ok", "latin1", "folder")})  # ids and flags only


@pytest.fixture(scope="module")
def outcomes(request, files, tmp_path_factory):
    """Run every selected slow case, three subprocesses at a time, once."""
    selected = {item.callspec.params["case"].id for item in request.session.items
                if getattr(item, "originalname", "") == "test_bad_input" and hasattr(item, "callspec")}
    table = [c for c in cases(files) if c.id in selected]
    cwd = tmp_path_factory.mktemp("cli")
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip([c.id for c in table], pool.map(lambda c: run_case(c, cwd), table)))


def check(case: Case, out: subprocess.CompletedProcess, seconds: float) -> None:
    if "no_cuda" in case.needs and not NO_CUDA:
        pytest.skip("a CUDA device is present")
    if "eval_data" in case.needs and not EVAL.is_dir():
        pytest.skip(f"{EVAL} not present")
    lines = [ln for ln in out.stderr.splitlines() if ln.strip()]
    assert out.returncode != 0, out.stdout[-1000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert 1 <= len(lines) <= 3, out.stderr
    for needle in case.needles:
        assert needle in out.stderr, (needle, out.stderr)
    if case.before_model:
        assert " params, " not in out.stdout + out.stderr, out.stdout[-1000:]  # a model's load line
    assert seconds < 30, seconds


@pytest.mark.parametrize("case", [c for c in TABLE if c.fast], ids=lambda c: c.id)
def test_bad_input_fast(case, files, tmp_path):
    case = next(c for c in cases(files) if c.id == case.id)
    check(case, *run_case(case, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("case", [c for c in TABLE if not c.fast], ids=lambda c: c.id)
def test_bad_input(case, outcomes):
    check(case, *outcomes[case.id])


def test_table_has_at_least_twenty_cases():
    assert len(TABLE) >= 20 and len({c.id for c in TABLE}) == len(TABLE)


def test_full_error_keeps_the_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HYDRA_FULL_ERROR": "1"}
    out = subprocess.run([sys.executable, "-m", "rwkvbench", "batch_size=0", f"hydra.run.dir={tmp_path}"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode != 0 and "Traceback" in out.stderr and "ConfigError: batch_size=0" in out.stderr


def test_help_describes_the_keys(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "rwkvbench", "--help"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=env)
    assert out.returncode == 0
    for key in ("model=", "task=", "device=", "wkv_kernel=", "data_dir=", "+data_files.", "limit=", "batch_size=",
                "log_samples=", "HYDRA_FULL_ERROR", "rwkv4_1b5", "paper_zero_shot"):
        assert key in out.stdout, key
