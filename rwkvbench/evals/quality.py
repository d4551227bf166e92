"""Quality: lm-eval zero-shot (or few-shot) tasks through the SequenceModel adapter; one tidy row per
task metric, with lm-eval's stderr and document count, plus the adapter's prefix-reuse saving."""

from __future__ import annotations

import math

from omegaconf import OmegaConf

from rwkvbench.evals import register
from rwkvbench.evals.lm_eval_tasks import partition_tasks


def _task_configs(task) -> tuple[dict[str, object], dict[str, str]]:
    """(runnable {name: lm-eval config}, skipped {name: why}); see partition_tasks."""
    files = OmegaConf.to_container(task.get("data_files") or {}) if task.get("data_files") else {}
    layouts = OmegaConf.to_container(task.get("layouts") or {}) if task.get("layouts") else {}
    return partition_tasks(task.tasks, task.get("data_dir"), files, layouts)


def skipped_rows(reason: str) -> list[dict]:
    """A task that could not run here is a row too (metric `skipped`, the reason in `note`)."""
    from rwkvbench.results import COLUMNS

    row = {"metric": "skipped", "value": 1.0}
    if "note" in COLUMNS:  # the note column arrives with issue 12's results schema
        row["note"] = reason
    return [row]


def rows_from_results(results: dict, name: str) -> list[dict]:
    rows = []
    per_task = results["results"][name]
    n = results.get("n-samples", {}).get(name, {}).get("effective")
    for key, value in per_task.items():
        metric, _, filt = key.partition(",")
        if metric.endswith("_stderr") or metric in ("alias", "sample_len") or not isinstance(value, (int, float)):
            continue
        stderr = per_task.get(f"{metric}_stderr,{filt}")
        stderr = float(stderr) if isinstance(stderr, (int, float)) and math.isfinite(stderr) else None
        rows.append({"metric": metric, "value": float(value), "stderr": stderr, "n": n})
    return rows


@register("lm_eval")
def run(model, task, writer) -> None:
    import lm_eval
    from lm_eval.tasks import TaskManager

    from rwkvbench.evals.lm_eval_adapter import SequenceModelLM, quiet_lm_eval
    from rwkvbench.evals.lm_eval_output import lm_eval_files, save_files

    quiet_lm_eval()
    configs, skipped = _task_configs(task)  # all data checked before anything runs
    # Indexing lm-eval's own task tree takes seconds: only when a task comes from it, and once.
    manager = TaskManager(include_defaults=any(isinstance(c, str) for c in configs.values()))
    lm = SequenceModelLM(model, batch_size=task.get("batch_size") or 16)
    shots = int(task.get("num_fewshot") or 0)
    variant = f"{shots}-shot"
    for name, reason in skipped.items():
        writer.append(skipped_rows(reason), **model.describe(), suite="quality", task=name, variant=variant)
    for name, config in configs.items():
        if writer.has(model=model.name, suite="quality", task=name, variant=variant, metric="tokens_computed"):
            continue
        before = dict(lm.stats)
        results = lm_eval.simple_evaluate(model=lm, tasks=[config], task_manager=manager, num_fewshot=shots,
                                          limit=task.get("limit"),
                                          bootstrap_iters=int(task.get("bootstrap_iters", 1000)),
                                          log_samples=bool(task.get("log_samples")), verbosity="WARNING")
        save_files(writer.dir, lm_eval_files(results, model.name, name, variant))  # -> UnitResult files
        rows = rows_from_results(results, name)
        saved = lm.stats["prefix_tokens_saved"] - before["prefix_tokens_saved"]
        computed = lm.stats["tokens_computed"] - before["tokens_computed"]
        rows += [{"metric": "tokens_computed", "value": computed, "n": 1},
                 {"metric": "prefix_tokens_saved", "value": saved, "n": 1}]
        writer.append(rows, **model.describe(), suite="quality", task=name, variant=variant,
                      batch_size=lm.batch_size)
