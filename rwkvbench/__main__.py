"""python -m rwkvbench task=lambada model=rwkv4_1b5  (Hydra; `--help` lists the keys, conf/config.yaml).

Errors. A mistake in what the user gave is one line on stderr, `rwkvbench: error: ...`, and exit status
2: our own (rwkvbench.errors.UserError, found by validate_run before any model loads) and Hydra's (an
unknown config option, a key that is not in the config, bad override syntax). Hydra formats errors
itself inside `hydra.main` (a traceback with its own frames stripped, or a block of lines) and exits;
with HYDRA_FULL_ERROR=1 set it raises them instead (hydra._internal.utils.run_and_report). So `cli()` sets
that variable for the call, catches what comes out and prints one line; anything that is not a user
error is a bug and keeps its full traceback (exit 1). A user who sets HYDRA_FULL_ERROR=1 gets every
traceback, ours included.
"""

from __future__ import annotations

import os
import re
import sys
import traceback

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from rwkvbench.config import conf_dir
from rwkvbench.errors import FULL_ERROR_ENV, UserError, exit_with, full_error_requested

PROG = "rwkvbench"
_one_line = False  # set by cli(): report user errors as one line (else: Hydra's own reporting)


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def main(cfg: DictConfig) -> None:
    from hydra.types import RunMode

    try:
        _run(cfg)
    except UserError as e:
        # A single run says it here, before Hydra adds "Error executing job with overrides: [...]". In a
        # multirun Hydra finishes the other jobs first, then cli() reports the first failure.
        if not _one_line or HydraConfig.get().mode == RunMode.MULTIRUN:
            raise
        exit_with(PROG, e)


def job_device(cfg: DictConfig) -> None:
    """A multirun whose launcher runs jobs side by side on one machine (hydra/launcher=local_gpus, joblib):
    a job whose device is auto or cuda takes cuda:(job number mod GPUs), one GPU per concurrent job."""
    import torch
    from hydra.types import RunMode

    hc = HydraConfig.get()
    parallel = "joblib" in str(hc.launcher.get("_target_", ""))
    if hc.mode != RunMode.MULTIRUN or not parallel or not torch.cuda.is_available():
        return
    if cfg.get("device") in (None, "auto", "cuda"):
        cfg.device = f"cuda:{hc.job.num % torch.cuda.device_count()}"


def _run(cfg: DictConfig) -> None:
    from rwkvbench import distributed
    from rwkvbench.run import report, run

    job_device(cfg)
    place = distributed.init()  # under torchrun: one process per GPU, all writing into rank 0's folder
    out_dir = distributed.broadcast_object(HydraConfig.get().runtime.output_dir)
    try:
        run(cfg, out_dir)
    except KeyboardInterrupt:  # what finished is on disk: show it, then stop
        print("\n[rwkvbench] interrupted: results of the finished units follow", file=sys.stderr)
        if place.is_main:
            report(out_dir)
        sys.exit(130)
    if place.is_main:
        report(out_dir)
    distributed.shutdown()


# Lines of Hydra's and OmegaConf's messages that say nothing to someone at the command line.
_NOISE = re.compile(r"^(full_key|object_type|reference_type|key)[:=]|^See https://hydra\.cc|^Set the environment")
_TAIL = "Config search path"  # where Hydra looked for configs: from here on, nothing for the user


def hydra_one_line(e: BaseException) -> str:
    """A Hydra or OmegaConf error message (several lines: the error, its cause, a list of options) as one
    line: "Could not find 'model/rwkv9'. Available options in 'model': hf, neox_tiny, ..."."""
    text = str(e).split(_TAIL)[0]
    if getattr(e, "override", None):  # OverrideParseException: which override did not parse
        text = f"cannot parse override {e.override!r}: {text}"
    lines = [ln.strip() for ln in text.splitlines()]
    cause = e.__cause__ and str(e.__cause__).strip().splitlines()
    if cause and cause[0].strip() not in lines:
        lines.append(cause[0].strip())
    parts: list[str] = []
    listing: list[str] | None = None
    for line in lines:
        if not line or _NOISE.match(line):
            continue
        if listing is not None and " " not in line:  # an option of the list being read
            listing.append(line)
            continue
        if line.endswith(":"):  # "Available options in 'model':" starts a list of options
            listing = []
            parts.append((line, listing))
            continue
        listing = None
        parts.append(line)
    text = []
    for part in parts:
        if isinstance(part, tuple):
            text.append(f"{part[0]} {', '.join(part[1])}" if part[1] else part[0][:-1])
        else:
            text.append(part if part.endswith((".", ":")) else part + ".")
    return " ".join(text).rstrip(".")


def cli() -> None:
    """The command line (python -m rwkvbench, and the `rwkvbench` console script)."""
    global _one_line
    if full_error_requested():
        main()
        return
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    _one_line = True
    os.environ[FULL_ERROR_ENV] = "1"  # Hydra raises instead of printing; we print (see the docstring)
    try:
        main()
    except UserError as e:
        exit_with(PROG, e)
    except (HydraException, OmegaConfBaseException) as e:
        exit_with(PROG, hydra_one_line(e))
    except Exception:  # a bug: the whole traceback
        traceback.print_exc()
        print(f"{PROG}: internal error (the traceback above); please report it", file=sys.stderr)
        sys.exit(1)
    finally:
        os.environ.pop(FULL_ERROR_ENV, None)


if __name__ == "__main__":
    cli()
