"""`rwkvbench-lm-eval`: lm-eval's own command line, with our model registered as `rwkvbench`.

lm-eval finds models only in its own registry and has no plugin hook for them, so its `lm_eval` command
cannot load ours. This command imports our adapter (which registers `rwkvbench`) and hands the command
line to lm-eval's entry point (`lm_eval.__main__.cli_evaluate`), so every lm-eval flag works as lm-eval
documents it (`rwkvbench-lm-eval run --help`):

    rwkvbench-lm-eval --model rwkvbench --model_args model=rwkv4_tiny,device=cpu --tasks piqa \\
        --data_dir ../shared/data/eval --output_path out/ --log_samples --limit 5

One flag is ours: --data_dir DIR (default $RWKVBENCH_EVAL_DATA), a folder of local task files in the
shared layout (lm_eval_tasks.BUILTIN). Each task of --tasks with a file there runs from that file, through
the same lm-eval task config our own CLI uses: the config is written as a task YAML
(~/.cache/rwkvbench/lm_eval_tasks/, or $RWKVBENCH_CACHE) and handed to lm-eval by path, lm-eval's own
`--tasks path/to/task.yaml` form. Those YAMLs work with plain `lm_eval` and its other models as well. A
task without a local file goes to lm-eval as named (its hub dataset).
"""

from __future__ import annotations

import hashlib
import os
import sys
import types
from pathlib import Path

from rwkvbench.config import cache_root
from rwkvbench.errors import UserError, exit_with, full_error_requested
from rwkvbench.results import atomic_write

PROG = "rwkvbench-lm-eval"
DATA_DIR_FLAG = "--data_dir"
EVAL_DATA_ENV = "RWKVBENCH_EVAL_DATA"
TASK_FLAGS = ("--tasks", "-t")


def task_yaml(config: dict) -> str:
    """An lm-eval task config (lm_eval_tasks.local_task) as YAML; its functions as `!function module.name`,
    which lm-eval imports when it loads the file."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    Dumper.add_representer(types.FunctionType, lambda dumper, fn: dumper.represent_scalar(
        "!function", f"{fn.__module__}.{fn.__qualname__}"))
    return yaml.dump(config, Dumper=Dumper, sort_keys=False, allow_unicode=True)


def _task_dir(data_file: Path) -> Path:
    return cache_root() / "lm_eval_tasks" / hashlib.sha256(str(data_file).encode()).hexdigest()[:12]


def write_local_task(name: str, data_dir) -> Path | None:
    """The task YAML of a built-in task over data_dir's file (checked row by row), or None without one."""
    from rwkvbench.evals.lm_eval_tasks import BUILTIN, resolve_task

    if name not in BUILTIN or not (Path(data_dir) / BUILTIN[name][0]).is_file():
        return None
    config = resolve_task(name, str(data_dir))
    path = _task_dir(Path(config["dataset_kwargs"]["data_files"]["test"])) / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda tmp: tmp.write_text(task_yaml(config), encoding="utf-8"))
    return path


def pop_option(argv: list[str], flag: str) -> tuple[str | None, list[str]]:
    """Take `flag VALUE` or `flag=VALUE` out of argv."""
    rest, value, i = [], None, 0
    while i < len(argv):
        arg = argv[i]
        if arg == flag:
            if i + 1 >= len(argv) or argv[i + 1].startswith("-"):
                from rwkvbench.errors import ConfigError

                raise ConfigError(f"{flag}: needs a folder (of <task>.jsonl files in the shared layout)")
            value, i = argv[i + 1], i + 2
            continue
        if arg.startswith(flag + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
        i += 1
    return value, rest


def local_tasks(argv: list[str], data_dir) -> list[str]:
    """argv with each task of --tasks/-t that has a file in data_dir replaced by its task YAML's path."""
    out, i = [], 0
    while i < len(argv):
        arg = argv[i]
        flag, _, inline = arg.partition("=")
        if flag not in TASK_FLAGS:
            out.append(arg)
            i += 1
            continue
        values = [inline] if inline else []
        i += 1
        while not inline and i < len(argv) and not argv[i].startswith("-"):
            values.append(argv[i])
            i += 1
        names = [n for v in values for n in v.split(",") if n]
        resolved = []
        for name in names:
            path = write_local_task(name, data_dir)
            if path is not None:
                print(f"[rwkvbench] {name}: local data from {data_dir} (task config {path})", file=sys.stderr)
            resolved.append(str(path) if path else name)
        out += [flag, ",".join(resolved)]
    return out


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        data_dir, argv = pop_option(argv, DATA_DIR_FLAG)
        data_dir = data_dir or os.environ.get(EVAL_DATA_ENV)
        if data_dir:
            if not Path(data_dir).expanduser().is_dir():
                from rwkvbench.errors import ConfigError

                raise ConfigError(f"{DATA_DIR_FLAG} {data_dir}: no such folder")
            argv = local_tasks(argv, Path(data_dir).expanduser())
        if any(a in ("-h", "--help") for a in argv):
            print(f"{PROG}: lm-eval's command line with rwkvbench's model (--model rwkvbench). Ours: "
                  f"{DATA_DIR_FLAG} DIR (default ${EVAL_DATA_ENV}) runs each task of --tasks that has a "
                  f"<task>.jsonl there from that file.\n")
        from lm_eval.__main__ import cli_evaluate

        from rwkvbench.evals.lm_eval_adapter import quiet_git_probe  # importing it registers "rwkvbench"

        quiet_git_probe()

        sys.argv = [PROG, *argv]
        cli_evaluate()
    except UserError as e:
        if full_error_requested():
            raise
        exit_with(PROG, e)


if __name__ == "__main__":
    main()
