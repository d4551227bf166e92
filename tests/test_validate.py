"""validate_run's rules, unit by unit (the command line's table of bad inputs is in test_bad_input.py)."""

import json
import warnings

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from rwkvbench.config import conf_dir
from rwkvbench.errors import ConfigError
from rwkvbench.evals.task_data import TaskDataError
from rwkvbench.validate import check_batch_size, check_kernel, check_limit, validate_run


def config(*overrides):
    with initialize_config_dir(config_dir=str(conf_dir()), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("value", [None, 1, 500, 0.5, 0.01, 3.0])
def test_limit_accepts_lm_evals_forms(value):
    check_limit("limit", value)


@pytest.mark.parametrize("value", [0, -1, 2.5, 0.0, 1.5, "5", True])
def test_limit_rejects_the_rest(value):
    with pytest.raises(ConfigError, match=f"limit={value!r}: expected null"):
        check_limit("limit", value)


def test_batch_size_is_auto_or_positive():
    check_batch_size("batch_size", "auto")
    check_batch_size("batch_size", 1)
    for bad in (0, -2, "8", 2.0, False):
        with pytest.raises(ConfigError, match="expected auto or an int >= 1"):
            check_batch_size("batch_size", bad)
    with pytest.raises(ConfigError, match="expected an int >= 1"):
        check_batch_size("task.parts.0.batch_size", "auto", allow_auto=False)


def test_forced_kernel_that_cannot_build_is_an_error(monkeypatch):
    from rwkvbench.kernels import cuda_build

    calls = []

    def failed_build():  # as load_extension: the reason kept, the warning given on the first call only
        if not calls:
            warnings.warn("rwkvbench: CUDA WKV kernel unavailable, using the PyTorch reference: nvcc not found")
        calls.append(1)
        cuda_build._FAILED[()] = "nvcc not found"
        return None

    monkeypatch.setattr(cuda_build, "load_extension", failed_build)
    monkeypatch.setattr(cuda_build, "_FAILED", {})
    rwkv = OmegaConf.create({"name": "r", "family": "rwkv4"})
    for _ in range(2):  # a second run in the same process (a sequential multirun) still says why
        with pytest.raises(ConfigError,
                           match=r"wkv_kernel=cuda: the CUDA WKV kernel cannot run here \(nvcc not found\)"):
            check_kernel("cuda", [(rwkv, torch.device("cuda"))])
    check_kernel("auto", [(rwkv, torch.device("cuda"))])  # auto may fall back
    check_kernel("cuda", [(OmegaConf.create({"name": "t", "family": "hf"}), torch.device("cpu"))])  # no WKV


def test_a_suite_with_some_data_runs_and_names_what_it_skips(tmp_path, capsys):
    (tmp_path / "copa.jsonl").write_text(json.dumps({"query": "It fell, therefore", "choices": ["a.", "b."],
                                                     "gold": 0}) + "\n")
    validate_run(config("task=paper_zero_shot", f"data_dir={tmp_path}", "device=cpu"))
    note = capsys.readouterr().out
    assert note.count("\n") == 1 and "paper_zero_shot: skipping 8 of 9 tasks" in note
    assert "hellaswag: no local data at" in note and "+data_files.hellaswag=FILE" in note
    (tmp_path / "copa.jsonl").unlink()
    with pytest.raises(TaskDataError, match="paper_zero_shot: no task can run here"):
        validate_run(config("task=paper_zero_shot", f"data_dir={tmp_path}", "device=cpu"))


def test_data_files_for_a_task_outside_the_run_is_announced(tmp_path, capsys):
    data = tmp_path / "piqa.jsonl"
    data.write_text(json.dumps({"query": "Q", "choices": ["a", "b"], "gold": 1}) + "\n")
    validate_run(config("task=piqa", f"+data_files.piqa={data}", f"+data_files.pica={data}", "device=cpu"))
    assert "'pica', which is not a task of this run" in capsys.readouterr().out


def test_a_home_relative_data_dir_runs_where_validation_passed_it(tmp_path, monkeypatch):
    """validate_run expanded ~ in data_dir and the evaluator did not: validation passed, then every task
    was skipped. Both now decide through quality.task_configs."""
    from rwkvbench.evals.quality import task_configs
    from rwkvbench.validate import check_lm_eval_part

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "ev").mkdir()
    row = {"query": "Question: open a jar\n", "choices": ["twist the lid", "eat the lid"], "gold": 0}
    (tmp_path / "ev" / "piqa.jsonl").write_text(json.dumps(row) + "\n", encoding="utf-8")
    part = OmegaConf.create({"tasks": ["piqa"], "data_dir": "~/ev", "limit": None, "num_fewshot": 0,
                             "batch_size": 4})
    check_lm_eval_part(part, "task.parts.0")
    runnable, skipped = task_configs(part)
    assert list(runnable) == ["piqa"] and not skipped
