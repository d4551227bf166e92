"""Everything a run needs, checked before any model loads (DESIGN.md: bad input gets one clear line, found
before expensive work starts). `validate_run(cfg)` raises the first mistake as a ConfigError or DataError
naming the key (or the file and line), what was given and what is valid.

Checked: the config resolves (no `???` left, no broken `${...}`), no unknown top-level key, and
* per model of the run (the chosen one and its match): its keys, family, init, device (present here),
  dtype, tokenizer (file present, none for a byte tokenizer) and checkpoint (local, cached, or a
  reachable hub), without reading any weights;
* wkv_kernel: auto, cuda or reference; a forced `cuda` that cannot run here is an error;
* per task part, through PART_CHECKS (one per evaluator): its sizes, and for lm-eval every task's data
  present and valid row by row. Tasks without data are skipped with a note, not an error, as long as
  something is left to run.
"""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf import errors as oc_errors

from rwkvbench.errors import ConfigError, closest


def say(note: str) -> None:
    print(f"[rwkvbench] {note}", flush=True)


# ---- single values --------------------------------------------------------------------------------------
def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(key: str, value, minimum: int = 1) -> int:
    if not _is_int(value) or value < minimum:
        raise ConfigError(f"{key}={value!r}: expected an int >= {minimum}")
    return value


def check_ints(key: str, values, minimum: int = 1) -> list[int]:
    if not OmegaConf.is_list(values) and not isinstance(values, (list, tuple)) or len(values) == 0:
        raise ConfigError(f"{key}={values!r}: expected a non-empty list of ints >= {minimum}, e.g. [1,8]")
    for i, v in enumerate(values):
        check_int(f"{key}.{i}", v, minimum)
    return list(values)


def check_limit(key: str, value) -> None:
    """lm-eval's limit: null (every document), a count >= 1, or a fraction of the documents in (0, 1)."""
    if value is None:
        return
    if _is_int(value) and value >= 1:
        return
    if isinstance(value, float) and (0 < value < 1 or (value >= 1 and value.is_integer())):
        return
    raise ConfigError(f"{key}={value!r}: expected null (all documents), an int >= 1 (documents per task) "
                      f"or a fraction in (0, 1)")


def check_batch_size(key: str, value, allow_auto: bool = True) -> None:
    if allow_auto and value == "auto":
        return
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{key}={value!r}: expected {'auto or ' if allow_auto else ''}an int >= 1")


def check_bool(key: str, value) -> None:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}={value!r}: expected true or false")


# ---- the config as a whole ------------------------------------------------------------------------------
def _resolve(cfg: DictConfig) -> None:
    """Every value resolvable: `???` left in a config, or a broken interpolation, named by its key."""
    try:
        OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except oc_errors.MissingMandatoryValue as e:
        key = re.sub(r"\[(\d+)\]", r".\1", e.full_key)  # task.parts[0].tasks -> task.parts.0.tasks (override syntax)
        raise ConfigError(f"{key}: needs a value (it is ??? in the config); give {key}=...") from None
    except oc_errors.OmegaConfBaseException as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"{e.full_key or 'config'}: {msg}") from None


def _top_level_keys() -> set[str]:
    from rwkvbench.config import conf_dir

    keys = set(OmegaConf.load(conf_dir() / "config.yaml").keys())
    return (keys - {"defaults", "hydra"}) | {"model", "task"}


def _check_top_level(cfg: DictConfig) -> None:
    valid = _top_level_keys()
    for key in cfg:
        if key not in valid:
            raise ConfigError(f"+{key}: not a key of this config; valid: {', '.join(sorted(valid))}")
    check_bool("compare", cfg.get("compare"))
    if "limit" in cfg:
        check_limit("limit", cfg.limit)
    if "num_fewshot" in cfg:
        check_int("num_fewshot", cfg.num_fewshot, minimum=0)
    if "batch_size" in cfg:
        check_batch_size("batch_size", cfg.batch_size)
    if "log_samples" in cfg:
        check_bool("log_samples", cfg.log_samples)


# ---- models ---------------------------------------------------------------------------------------------
def _check_hf_weights(mcfg: DictConfig, where: str) -> None:
    """A local folder, or a hub id that is cached or reachable."""
    source = mcfg.get("path") or mcfg.get("hub_id")
    if not source:
        raise ConfigError(f"{where}: init=pretrained needs model.path= (a local folder) or model.hub_id=")
    if Path(str(source)).expanduser().exists():
        return
    if str(source).startswith(("/", ".", "~")):
        raise ConfigError(f"{where}: path={source}: no such folder")
    from rwkvbench.models.hub import hub_file

    hub_file(str(source), "config.json", download=False, what=f"{where}: {source}",
             advice="give model.path= a local folder", error=ConfigError)


def check_model(mcfg: DictConfig):
    """One model's config, resolved with the run's overrides; its torch.device."""
    from rwkvbench.models.checkpoints import resolve_rwkv4
    from rwkvbench.models.registry import check_model_keys, check_settings
    from rwkvbench.models.tokenizer import tokenizer_file

    where = f"model {mcfg.get('name')!r}"
    check_model_keys(list(mcfg.keys()), mcfg.get("family"), where, noun="key")
    device, _ = check_settings(mcfg, where)
    tokenizer_file(mcfg.get("tokenizer"), mcfg.get("tokenizer_path"))
    if mcfg.init == "random":
        if not mcfg.get("arch"):
            raise ConfigError(f"{where}: init=random needs model.arch (the shape to build)")
    elif mcfg.family == "rwkv4":
        source = mcfg.get("source") or {}
        resolve_rwkv4(mcfg.get("path"), source.get("hub_repo"), source.get("hub_file"), download=False)
    else:
        _check_hf_weights(mcfg, where)
    return device


def check_kernel(choice, models: list[tuple[DictConfig, object]]) -> None:
    """auto, cuda or reference; a forced cuda must be able to run for every RWKV model of the run."""
    from rwkvbench.kernels.dispatch import KERNELS

    if choice not in KERNELS:
        raise ConfigError(f"wkv_kernel={choice!r}: expected {', '.join(KERNELS)}")
    if choice != "cuda":
        return
    for mcfg, device in models:
        if mcfg.family == "rwkv4" and device.type != "cuda":
            raise ConfigError(f"wkv_kernel=cuda forces the CUDA WKV kernel, but model {mcfg.name!r} runs on "
                              f"{device.type}; use device=cuda, or wkv_kernel=auto / reference")
    if any(mcfg.family == "rwkv4" for mcfg, _ in models):
        from rwkvbench.kernels.cuda_build import build_error, load_extension

        if load_extension() is None:
            raise ConfigError(f"wkv_kernel=cuda: the CUDA WKV kernel cannot run here ({build_error()})")


# ---- task parts -----------------------------------------------------------------------------------------
def check_lm_eval_part(part: DictConfig, where: str) -> None:
    from rwkvbench.evals.quality import task_configs, task_files

    tasks = part.tasks
    if isinstance(tasks, str):
        raise ConfigError(f"{where}.tasks={tasks!r}: expected a list of task names, e.g. '{where}.tasks=[{tasks}]'")
    if not tasks:
        raise ConfigError(f"{where}.tasks: empty; give at least one task, e.g. '{where}.tasks=[piqa]'")
    check_limit(f"{where}.limit", part.get("limit"))
    check_int(f"{where}.num_fewshot", part.get("num_fewshot") or 0, minimum=0)
    check_batch_size(f"{where}.batch_size", part.get("batch_size"))
    data_dir = part.get("data_dir")
    if data_dir and not Path(str(data_dir)).expanduser().is_dir():
        raise ConfigError(f"data_dir={data_dir}: no such folder (expected a folder of <task>.jsonl files, e.g. "
                          f"../shared/data/eval)")
    files, layouts = task_files(part)
    for name in sorted((set(files) | set(layouts)) - set(tasks)):
        say(f"warning: data_files/layouts name {name!r}, which is not a task of this run "
            f"({', '.join(tasks)}); it is ignored")
    runnable, skipped = task_configs(part)
    name = part.get("name") or where
    if not runnable:
        from rwkvbench.evals.task_data import TaskDataError

        raise TaskDataError(f"{name}: no task can run here: {_reasons(skipped)}")
    if skipped:
        say(f"{name}: skipping {len(skipped)} of {len(tasks)} tasks: {_reasons(skipped)}")


def _reasons(skipped: dict[str, str]) -> str:
    """{task: why} as "a, b: why; c: other reason" (tasks that share a reason share the words)."""
    by_reason: dict[str, list[str]] = {}
    for task, why in skipped.items():
        by_reason.setdefault(why, []).append(task)
    return "; ".join(f"{', '.join(tasks)}: {why}" for why, tasks in by_reason.items())


def check_perplexity_part(part: DictConfig, where: str) -> None:
    text = part.get("text")
    if text != "package_docs":
        if not Path(str(text)).expanduser().is_file():
            raise ConfigError(f"{where}.text={text}: no such file (give a UTF-8 text file or package_docs)")
        from rwkvbench.evals.perplexity import load_text

        load_text(str(text))  # what the run reads, read as it reads it (cached for the run)
    check_int(f"{where}.context_len", part.get("context_len"))
    check_int(f"{where}.max_tokens", part.get("max_tokens"))
    check_batch_size(f"{where}.batch_size", part.get("batch_size"), allow_auto=False)


def check_efficiency_part(part: DictConfig, where: str) -> None:
    check_ints(f"{where}.context_lens", part.get("context_lens"))
    check_ints(f"{where}.batch_sizes", part.get("batch_sizes"))
    check_int(f"{where}.decode_steps", part.get("decode_steps"))
    check_int(f"{where}.repeats", part.get("repeats"))
    check_int(f"{where}.warmup", part.get("warmup"), minimum=0)


def check_recall_part(part: DictConfig, where: str) -> None:
    from rwkvbench.evals.probes import get_probe
    from rwkvbench.evals.recall import probe_format

    probe = get_probe(part.get("probe"))  # an unknown probe: one line naming the valid ones
    probe_format(part)
    probe.check(part)
    check_ints(f"{where}.context_lens", part.get("context_lens"))
    for key in ("n_items", "books", "queries_per_book", "batch_size"):
        if key in part:
            check_int(f"{where}.{key}", part.get(key))


def check_prompt_part(part: DictConfig, where: str) -> None:
    from rwkvbench.evals.prompts import data_plan

    check_limit("limit", part.get("limit"))
    check_limit(f"{where}.default_limit", part.get("default_limit"))
    check_int("num_fewshot", part.get("num_fewshot") or 0, minimum=0)
    data_plan(part)  # unknown sets or templates, bad template files, missing or unreadable data


# evaluator name -> its part's checks (an evaluator without an entry is only checked to exist)
PART_CHECKS = {"lm_eval": check_lm_eval_part, "perplexity": check_perplexity_part,
               "efficiency": check_efficiency_part, "recall": check_recall_part,
               "prompt_sensitivity": check_prompt_part}


def check_parts(task: DictConfig) -> None:
    from rwkvbench.evals import EVALUATORS, _import_all

    _import_all()
    if not task.get("parts"):
        raise ConfigError(f"task {task.get('name')!r}: no parts to run")
    for i, part in enumerate(task.parts):
        where = f"task.parts.{i}"
        if part.get("evaluator") not in EVALUATORS:
            raise ConfigError(f"{where}.evaluator={part.get('evaluator')!r}: unknown; valid: "
                              f"{', '.join(sorted(EVALUATORS))}")
        check_part_keys(part, where)  # a misspelt key first: the checks below read the keys as given
        check = PART_CHECKS.get(part.evaluator)
        if check:
            check(part, where)


def check_part_keys(part: DictConfig, where: str) -> None:
    """A key the part's evaluator never reads is a typo or a misplaced setting: one line, a guess."""
    from rwkvbench.evals import part_keys

    known = part_keys(part)
    for key in part:
        if key not in known:
            guess = closest(key, known)
            hint = f"did you mean {where}.{guess}? " if guess else ""
            raise ConfigError(f"{where}.{key}: not a setting of the {part.evaluator} evaluator"
                              f"{' (probe ' + str(part.probe) + ')' if part.get('probe') else ''}; {hint}"
                              f"valid: {', '.join(sorted(known))}")


# ---- the run --------------------------------------------------------------------------------------------
def validate_run(cfg: DictConfig) -> None:
    """Check a composed run config before any model loads; raise the first mistake as one line. Tasks
    that cannot run here (no data) are announced in one line and skipped by their evaluator."""
    from rwkvbench.run import model_configs

    _resolve(cfg)
    _check_top_level(cfg)
    models = [(mcfg, check_model(mcfg)) for mcfg in model_configs(cfg)]
    check_kernel(cfg.get("wkv_kernel") or "auto", models)
    check_parts(cfg.task)
