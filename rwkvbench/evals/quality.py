"""Quality: lm-eval zero-shot (or few-shot) tasks through the SequenceModel adapter. One unit of work per
task: one tidy row per task metric, with lm-eval's stderr and document count, plus the adapter's
prefix-reuse saving, and lm-eval's own results JSON (and per-sample log with log_samples) saved beside the
Parquet. A task without data here is a `skipped` unit whose note says why."""

from __future__ import annotations

import hashlib
import math

from omegaconf import OmegaConf

from rwkvbench import distributed
from rwkvbench.evals import register
from rwkvbench.evals.lm_eval_tasks import partition_tasks
from rwkvbench.units import SkipUnit, Unit, UnitResult


def task_files(task) -> tuple[dict, dict]:
    """The part's data_files and layouts ({task: file}, {task: layout}) as plain dicts."""
    return (OmegaConf.to_container(task.data_files) if task.get("data_files") else {},
            OmegaConf.to_container(task.layouts) if task.get("layouts") else {})


def task_configs(task) -> tuple[dict[str, object], dict[str, str]]:
    """(runnable {name: lm-eval config}, skipped {name: why}); see partition_tasks. The run's validation
    (validate.check_lm_eval_part) calls this too, so both decide alike."""
    return partition_tasks(task.tasks, task.get("data_dir"), *task_files(task))


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def config_identity(config) -> object:
    """What in an lm-eval task config decides the text scored, JSON-able and stable across processes:
    functions by qualified name (not by address), everything else as it is. Data files are hashed apart."""
    if isinstance(config, str):
        return config
    if isinstance(config, dict):
        return {k: config_identity(v) for k, v in sorted(config.items())}
    if isinstance(config, (list, tuple)):
        return [config_identity(v) for v in config]
    if callable(config):
        return f"{getattr(config, '__module__', '')}.{getattr(config, '__qualname__', repr(config))}"
    return config


def _data_hashes(config) -> dict:
    if not isinstance(config, dict):
        return {}
    files = (config.get("dataset_kwargs") or {}).get("data_files") or {}
    return {split: file_sha256(path) for split, path in files.items()}


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


class _Session:
    """lm-eval's task index and our adapter, made once per model on the first unit that needs them."""

    def __init__(self, model, task, configs):
        self.model, self.task, self.configs = model, task, configs
        self._lm = self._manager = None

    def get_batch_size(self) -> int:
        from rwkvbench.evals.lm_eval_adapter import DEFAULT_BATCH_SIZE, parse_batch_size

        return parse_batch_size(self.task.get("batch_size") or DEFAULT_BATCH_SIZE)

    def get(self):
        if self._lm is None:
            from lm_eval.tasks import TaskManager

            from rwkvbench.evals.lm_eval_adapter import SequenceModelLM

            # Indexing lm-eval's own task tree takes seconds: only when a task comes from it.
            self._manager = TaskManager(include_defaults=any(isinstance(c, str) for c in self.configs.values()))
            self._lm = SequenceModelLM(self.model, batch_size=self.get_batch_size())
        return self._lm, self._manager


def measure(session: _Session, name: str, config, shots: int) -> UnitResult:
    import lm_eval

    from rwkvbench.evals.lm_eval_output import lm_eval_files

    lm, manager = session.get()
    task = session.task
    before = dict(lm.stats)
    results = lm_eval.simple_evaluate(model=lm, tasks=[config], task_manager=manager, num_fewshot=shots,
                                      limit=task.get("limit"), bootstrap_iters=int(task.get("bootstrap_iters", 1000)),
                                      log_samples=bool(task.get("log_samples")), verbosity="WARNING")
    # Under torchrun each rank scored its share; the token counts are summed over the ranks (lm-eval pads
    # the shares even with repeats, so they can exceed one process's by a few requests).
    spent = {k: lm.stats[k] - before[k] for k in ("tokens_computed", "prefix_tokens_saved")}
    per_rank = distributed.gather_object(spent, dst=0)
    if results is None:  # not rank 0: lm-eval gathered this rank's metrics there, and rank 0 writes them
        return UnitResult([])
    rows = rows_from_results(results, name)
    rows += [{"metric": k, "value": sum(r[k] for r in per_rank), "n": 1} for k in spent]
    return UnitResult(rows, files=lm_eval_files(results, session.model.name, name, f"{shots}-shot"))


def skip(reason: str):
    def measure(budget):
        raise SkipUnit(reason)

    return measure


KEYS = ("tasks", "layouts", "data_dir", "data_files", "dataset_kwargs", "limit", "num_fewshot", "batch_size",
        "bootstrap_iters", "log_samples")


@register("lm_eval", keys=KEYS)
def units(model, task) -> list[Unit]:
    from rwkvbench.evals.lm_eval_adapter import quiet_lm_eval

    quiet_lm_eval()
    configs, skipped = task_configs(task)  # all data checked before anything runs
    session = _Session(model, task, configs)
    shots = int(task.get("num_fewshot") or 0)
    batch = session.get_batch_size()
    # a task without data here: a `skipped` row that says why (it runs once its data is there)
    out = [Unit(key={"suite": "quality", "task": name, "variant": f"{shots}-shot", "batch_size": batch},
                params={"skipped": reason}, label=name, measure=skip(reason)) for name, reason in skipped.items()]
    for name, config in configs.items():
        params = {"limit": task.get("limit"), "num_fewshot": shots, "bootstrap_iters": task.get("bootstrap_iters", 1000),
                  "config": config_identity(config), "data": _data_hashes(config),
                  **({"log_samples": True} if task.get("log_samples") else {})}
        out.append(Unit(key={"suite": "quality", "task": name, "variant": f"{shots}-shot", "batch_size": batch},
                        params=params, label=name, collective=True,
                        measure=lambda budget, name=name, config=config: measure(session, name, config, shots)))
    return out
