"""Where the Hydra config tree lives, and reading single config files from it by name."""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from rwkvbench.errors import ConfigError


def conf_dir() -> Path:
    """conf/ ships as the package `rwkvbench.conf`; in a source checkout it is the top-level folder, and the
    checkout's own wins (a second worktree on PYTHONPATH must not read the installed one's configs)."""
    checkout = Path(__file__).resolve().parents[1] / "conf"
    if (checkout / "config.yaml").is_file():
        return checkout
    import rwkvbench.conf as pkg

    return Path(pkg.__file__).parent


def cache_root() -> Path:
    """Where rwkvbench keeps what it builds or writes once (kernel builds, lm-eval task files):
    $RWKVBENCH_CACHE, else ~/.cache/rwkvbench."""
    return Path(os.environ.get("RWKVBENCH_CACHE", Path.home() / ".cache" / "rwkvbench"))


def options(group: str) -> list[str]:
    """Config names available in a group (conf/<group>/*.yaml)."""
    return sorted(p.stem for p in (conf_dir() / group).glob("*.yaml"))


def load_option(group: str, name: str) -> DictConfig:
    """conf/<group>/<name>.yaml, or `name` itself when it is a path to a .yaml file (a config written
    elsewhere, e.g. the trainer's model configs, whose `matched` names its partner this way)."""
    path = Path(name).expanduser() if str(name).endswith(".yaml") else conf_dir() / group / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown {group} {name!r}; valid: {', '.join(options(group))}")
    return OmegaConf.load(path)
