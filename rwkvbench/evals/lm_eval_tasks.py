"""lm-eval task configs over local JSON-lines files, for machines with no dataset hub.

The files use llm-foundry's layouts (the shared data folder's README), which differ from lm-eval's
datasets. Each built-in task below maps its layout back onto lm-eval's own prompt, so the model scores
exactly the text lm-eval's task of the same name would score. A user's own file in one of the three
layouts becomes a task from config alone:

    cloze            {"context", "continuation"}          score " " + continuation after context
    multiple_choice  {"query", "choices": [...], "gold"}  score " " + each choice after query
    partial          {"context_options", "continuation", "gold"}  score continuation after each option
"""

from __future__ import annotations

from pathlib import Path

from rwkvbench.errors import ConfigError
from rwkvbench.evals.task_data import TaskDataError, validate_task_file

ACC = [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]
ACC_NORM = ACC + [{"metric": "acc_norm", "aggregation": "mean", "higher_is_better": True}]
CLOZE_METRICS = [{"metric": "perplexity", "aggregation": "perplexity", "higher_is_better": False}] + ACC


# ---- layout -> lm-eval prompt mappings (text identical to lm-eval's tasks) ----------------------------
def _query(doc):
    return doc["query"]


def _gold(doc):
    return int(doc["gold"])


def _choices(doc):
    return list(doc["choices"])


def _arc_text(doc):  # local "Question: ..." ; lm-eval "Question: {{question}}\nAnswer:"
    return doc["query"] + "\nAnswer:"


def _piqa_text(doc):  # local "Question: ...\n" ; lm-eval "Question: {{goal}}\nAnswer:"
    return doc["query"] + "Answer:"


def _copa_text(doc):  # local "premise, therefore" ; lm-eval premise[:-1] + " therefore"
    head, _, connector = doc["query"].rpartition(", ")
    return f"{head} {connector}"


def _copa_choices(doc):  # lm-eval: " " + first letter lowered (its target delimiter adds one more space)
    return [" " + c[0].lower() + c[1:] for c in doc["choices"]]


def _boolq_text(doc):  # local "Passage: {p}\nQuestion: {q}?" ; lm-eval "{p}\nQuestion: {q}?\nAnswer:"
    return doc["query"].removeprefix("Passage: ") + "\nAnswer:"


def _cloze_text(doc):
    return doc["context"]


def _cloze_target(doc):
    return " " + doc["continuation"]


def _partial_choices(doc):
    return list(doc["context_options"])


def _partial_target(doc):
    return doc["continuation"]


LAYOUTS = {
    "cloze": dict(output_type="loglikelihood", doc_to_text=_cloze_text, doc_to_target=_cloze_target,
                  target_delimiter="", metric_list=CLOZE_METRICS),
    "multiple_choice": dict(output_type="multiple_choice", doc_to_text=_query, doc_to_choice=_choices,
                            doc_to_target=_gold, metric_list=ACC_NORM),
    # lm-eval's "multiple input" form: doc_to_text gives the gold index, the choices are contexts
    "partial": dict(output_type="multiple_choice", doc_to_text=_gold, doc_to_choice=_partial_choices,
                    doc_to_target=_partial_target, metric_list=ACC),
}

# lm-eval task name -> (file name in the shared layout, layout, overrides that restore lm-eval's prompt)
BUILTIN = {
    "lambada_openai": ("lambada_openai.jsonl", "cloze", {}),
    "piqa": ("piqa.jsonl", "multiple_choice", {"doc_to_text": _piqa_text}),
    "winogrande": ("winogrande.jsonl", "partial", {}),
    "arc_easy": ("arc_easy.jsonl", "multiple_choice", {"doc_to_text": _arc_text}),
    "arc_challenge": ("arc_challenge.jsonl", "multiple_choice", {"doc_to_text": _arc_text}),
    "openbookqa": ("openbook_qa.jsonl", "multiple_choice", {}),
    "copa": ("copa.jsonl", "multiple_choice", {"doc_to_text": _copa_text, "doc_to_choice": _copa_choices,
                                               "metric_list": ACC}),
    "boolq": ("boolq.jsonl", "multiple_choice", {"doc_to_text": _boolq_text, "metric_list": ACC}),
    # No local copy ships for these; give data_files (multiple_choice layout) or run with a network.
    "hellaswag": ("hellaswag.jsonl", "multiple_choice", {}),
    "sciq": ("sciq.jsonl", "multiple_choice", {}),
}


def local_task(name: str, path: str | Path, layout: str, **overrides) -> dict:
    """An lm-eval task config (a dict lm-eval accepts in `tasks=`) reading one JSON-lines file, every row
    of which is checked first (task_data.py)."""
    path = Path(path).expanduser()
    validate_task_file(path, layout, task=name)  # the layout, the file and every row
    path = path.resolve()  # lm-eval reads it later, maybe from another working directory
    return {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": {"test": str(path)}},
            "test_split": "test", "metadata": {"version": 1.0, "source": str(path)},
            **LAYOUTS[layout], **overrides}


def resolve_task(name: str, data_dir: str | None = None, data_files: dict | None = None,
                 layout: str | None = None):
    """A built-in task name or a user task. Local files win: data_files[name], then data_dir/<file>;
    with neither, the name goes to lm-eval as it is (its own hub dataset)."""
    data_files = data_files or {}
    data_dir = str(Path(data_dir).expanduser()) if data_dir else None
    if name in BUILTIN:
        file_name, default_layout, overrides = BUILTIN[name]
        layout = layout or default_layout
        if name in data_files:
            return local_task(name, data_files[name], layout, **overrides)
        if data_dir:
            path = Path(data_dir) / file_name
            if not path.is_file():
                raise TaskDataError(f"task {name}: no local data at {path}; supply +data_files.{name}=FILE "
                                    f"(JSON lines in the {layout!r} layout) or run where the dataset hub is reachable")
            return local_task(name, path, layout, **overrides)
        return name
    if name in data_files:
        if layout is None:
            raise ConfigError(f"task {name}: a new task needs layout= one of {', '.join(LAYOUTS)} "
                              f"(+layouts.{name}=multiple_choice on the command line)")
        return local_task(name, data_files[name], layout)
    raise ConfigError(f"unknown task {name!r}; built-in: {', '.join(BUILTIN)}; or give +data_files.{name}=FILE "
                      f"and +layouts.{name}=LAYOUT")


def partition_tasks(names, data_dir: str | None = None, data_files: dict | None = None,
                    layouts: dict | None = None) -> tuple[dict[str, object], dict[str, str]]:
    """Split a task list into what can run here ({name: lm-eval config or name}) and what cannot
    ({name: why}): a built-in task without a local file is skipped when data_dir= names a folder that
    lacks it, or when no folder is given and the dataset hub is unreachable. Unknown tasks and bad or
    missing files the user named are errors, not skips."""
    from rwkvbench.models.hub import hub_unreachable

    data_files, layouts = data_files or {}, layouts or {}
    data_dir = str(Path(data_dir).expanduser()) if data_dir else None
    runnable, skipped = {}, {}
    for name in names:
        if name in BUILTIN and name not in data_files:
            path = Path(data_dir) / BUILTIN[name][0] if data_dir else None
            if path is not None and not path.is_file():
                skipped[name] = f"no local data at {path}, give +data_files.{name}=FILE"
                continue
            if path is None and (why := hub_unreachable()):
                skipped[name] = f"the dataset hub is unreachable ({why}) and there is no local data (give data_dir= a folder of <task>.jsonl files)"
                continue
        runnable[name] = resolve_task(name, data_dir, data_files, layouts.get(name))
    return runnable, skipped
