"""Task data files are checked row by row before any model loads; a suite runs the tasks it has data for
and reports the others as skipped."""

import json

import pytest
from omegaconf import OmegaConf

from rwkvbench.evals.lm_eval_tasks import partition_tasks, resolve_task
from rwkvbench.evals.task_data import TaskDataError, validate_task_file

MC = {"query": "Question: which?\nAnswer:", "choices": ["a", "b", "c"], "gold": 1}


def write(path, lines):
    path.write_bytes(b"".join((ln if isinstance(ln, bytes) else ln.encode()) + b"\n" for ln in lines))
    return path


def rows(*docs):
    return [json.dumps(d) for d in docs]


@pytest.mark.parametrize("lines, layout, needles", [
    (rows(MC, {**MC, "gold": 7}), "multiple_choice", [":2:", "'gold' is 7", "3 choices", "0..2"]),
    (rows(MC, MC, {**MC, "gold": -1}), "multiple_choice", [":3:", "'gold' is -1"]),
    (rows({**MC, "gold": "1"}), "multiple_choice", [":1:", "'gold' is '1'"]),
    (rows({**MC, "gold": True}), "multiple_choice", [":1:", "'gold' is True"]),
    (rows(MC, {"query": "q", "gold": 0}), "multiple_choice", [":2:", "missing field 'choices'", '"query", "choices", "gold"']),
    (rows({**MC, "choices": "a b"}), "multiple_choice", [":1:", "'choices'", "list of strings"]),
    (rows({**MC, "choices": []}), "multiple_choice", [":1:", "'choices'"]),
    (rows(MC) + ['{"query": "q", "choices": ["a"], "gold": 0'], "multiple_choice", [":2:", "not valid JSON"]),
    (rows(MC) + ["[1, 2]"], "multiple_choice", [":2:", "expected a JSON object", "list"]),
    (rows(MC) + [b'{"query": "caf\xe9", "choices": ["a"], "gold": 0}'], "multiple_choice", [":2:", "not UTF-8", "0xe9"]),
    (rows({"context": "The sky is"}), "cloze", [":1:", "missing field 'continuation'"]),
    (rows({"context": "The sky is", "continuation": ""}), "cloze", [":1:", "'continuation' is empty"]),
    (rows({"context_options": ["A", "B"], "continuation": "x", "gold": 2}), "partial", [":1:", "2 context_options"]),
    ([], "cloze", ["no rows", "empty file"]),
    (["", "  "], "cloze", ["no rows"]),
], ids=["gold_7_of_3", "gold_negative", "gold_string", "gold_bool", "missing_field", "choices_not_list",
        "choices_empty", "bad_json", "not_an_object", "not_utf8", "cloze_missing", "cloze_empty_target",
        "partial_gold", "empty_file", "blank_file"])
def test_each_defect_is_one_line_naming_file_and_line(tmp_path, lines, layout, needles):
    path = write(tmp_path / "task.jsonl", lines)
    with pytest.raises(TaskDataError) as e:
        validate_task_file(path, layout)
    msg = str(e.value)
    assert "\n" not in msg and "task.jsonl" in msg
    for needle in needles:
        assert needle in msg, msg


def test_good_file_counts_rows_and_allows_blank_lines(tmp_path):
    path = write(tmp_path / "ok.jsonl", rows(MC, MC) + [""] + rows(MC))
    assert validate_task_file(path, "multiple_choice") == 3


def test_resolve_task_validates_before_anything_runs(tmp_path):
    path = write(tmp_path / "mine.jsonl", rows(MC, {**MC, "gold": 3}))
    with pytest.raises(TaskDataError, match=r"mine.jsonl:2: field 'gold' is 3"):
        resolve_task("mine", data_files={"mine": str(path)}, layout="multiple_choice")


def test_partition_runs_what_has_data_and_says_why_not_the_rest(tmp_path):
    write(tmp_path / "copa.jsonl", rows({"query": "It rained, therefore", "choices": ["wet.", "dry."], "gold": 0}))
    runnable, skipped = partition_tasks(["copa", "hellaswag", "sciq"], data_dir=str(tmp_path))
    assert list(runnable) == ["copa"] and runnable["copa"]["task"] == "copa"
    assert set(skipped) == {"hellaswag", "sciq"}
    assert "hellaswag.jsonl" in skipped["hellaswag"] and "+data_files.hellaswag" in skipped["hellaswag"]
    # without a data folder and without the hub (tests run offline) a built-in task cannot run either
    runnable, skipped = partition_tasks(["piqa"])
    assert not runnable and "hub is unreachable" in skipped["piqa"]


def test_suite_writes_skipped_rows_and_lm_eval_files(tmp_path):
    from rwkvbench import load_model
    from rwkvbench.evals import get_evaluator
    from rwkvbench.results import ResultsWriter, read_results
    from rwkvbench.units import run_units

    data = tmp_path / "data"
    data.mkdir()
    write(data / "copa.jsonl", rows(*[{"query": f"Item {i} fell, therefore", "choices": ["it broke.", "it flew."],
                                       "gold": i % 2} for i in range(4)]))
    part = OmegaConf.create({"evaluator": "lm_eval", "name": "suite", "tasks": ["copa", "hellaswag"],
                             "data_dir": str(data), "data_files": {}, "layouts": {}, "limit": None,
                             "num_fewshot": 0, "batch_size": 4, "log_samples": True})
    model = load_model("rwkv4_tiny", device="cpu")
    run_units(model, get_evaluator("lm_eval")(model, part), ResultsWriter(tmp_path / "out"))
    df = read_results(tmp_path / "out")
    skipped = df[df.task == "hellaswag"]
    assert skipped.metric.tolist() == ["skipped"] and "no local data at" in skipped.note.item()
    assert df[(df.task == "copa") & (df.metric == "acc")].n.tolist() == [4]
    out = tmp_path / "out" / "lm_eval" / "rwkv4_tiny"
    result = json.loads((out / "results_copa_0-shot.json").read_text())
    assert result["results"]["copa"]["acc,none"] == df[(df.task == "copa") & (df.metric == "acc")].value.item()
    samples = (out / "samples_copa_0-shot.jsonl").read_text().splitlines()
    assert len(samples) == 4 and {"doc", "resps", "acc"} <= set(json.loads(samples[0]))
