"""`load_model`: the one door from a config name (or a family plus a path) to a SequenceModel."""

from __future__ import annotations

import functools

import torch
from omegaconf import DictConfig, OmegaConf

from rwkvbench.config import load_option
from rwkvbench.errors import ConfigError, closest
from rwkvbench.models.base import SequenceModel
from rwkvbench.models.tokenizer import load_tokenizer

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}
# family -> the function of rwkvbench.models.build that makes its SequenceModel from a config. Each family
# also has a template, conf/model/<family>.yaml, whose keys are the ones its configs may have.
BUILDERS = {"rwkv4": "build_rwkv4_model", "hf": "build_hf_model"}
INITS = ("pretrained", "random")


@functools.cache
def model_keys(family: str) -> tuple[str, ...]:
    """The keys a model config of this family (and load_model's keywords) may have: its template's."""
    return tuple(load_option("model", family).keys())


def check_model_keys(keys, family: str, where: str, also_valid=(), noun: str = "keyword") -> None:
    """Each key must be one the family's configs know; `where` names the culprit (a config, a call)."""
    if family not in BUILDERS:
        raise ConfigError(f"{where}: unknown family {family!r}; valid: {', '.join(BUILDERS)}")
    valid = model_keys(family) + tuple(also_valid)
    for key in keys:
        if key not in valid:
            close = closest(key, valid)
            hint = f" (did you mean {close!r}?)" if close else ""
            raise ConfigError(f"{where}: unknown {noun} {key!r}{hint}; valid for family {family!r}: "
                              f"{', '.join(sorted(valid))}")


def _no_cuda_reason() -> str:
    if torch.version.cuda is None:
        return f"this torch ({torch.__version__}) is built without CUDA"
    return "torch sees no CUDA device (driver, CUDA_VISIBLE_DEVICES?)"


def resolve_device(device: str | None) -> torch.device:
    """auto: CUDA where there is a device, else CPU. An explicit device must exist here."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device={device!r}: not a device; expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"device={device}: no CUDA here ({_no_cuda_reason()}); use device=cpu or device=auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device={device}: only {torch.cuda.device_count()} CUDA device(s) here "
                              f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError(f"device={device}: MPS is not available here; use device=cpu or device=auto")
    elif dev.type != "cpu":
        raise ConfigError(f"device={device!r}: unsupported device type; expected auto, cpu, cuda, cuda:N or mps")
    return dev


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r}: unknown dtype; valid: auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def model_config(name_or_cfg, **overrides) -> DictConfig:
    """A model config from conf/model/<name>.yaml (or a given config) with overrides merged in."""
    cfg = load_option("model", name_or_cfg) if isinstance(name_or_cfg, str) else OmegaConf.create(name_or_cfg)
    cfg = OmegaConf.merge(cfg, {k: v for k, v in overrides.items() if v is not None})
    return cfg


def check_settings(cfg, where: str):
    """A model config's init, device and dtype, checked as the run's validation and load_model both need
    them: (torch device, torch dtype)."""
    if cfg.get("init") not in INITS:
        raise ConfigError(f"init={cfg.get('init')!r} ({where}): expected {' or '.join(INITS)}")
    device = resolve_device(cfg.get("device"))
    return device, resolve_dtype(cfg.get("dtype"), device)


def load_model(name, **overrides) -> SequenceModel:
    """Load a model by config name ("rwkv4_1b5", "pythia_1b4", "rwkv4_tiny"), or by family ("rwkv4", "hf")
    with path= a local checkpoint or hub id. Overrides: any key of the family's template (model_keys): path,
    device, dtype, init ("pretrained"|"random"), seed, tokenizer_path, ..."""
    base = model_config(name)
    where = f"load_model({name!r})" if isinstance(name, str) else f"model {base.get('name')!r}"
    check_model_keys(overrides, base.get("family"), where)
    cfg = model_config(base, **overrides)
    device, dtype = check_settings(cfg, f"model {cfg.name!r}")
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.get("tokenizer_path"))
    from rwkvbench.models import build  # on use: it imports the model code (transformers among it)

    model = getattr(build, BUILDERS[cfg.family])(cfg, tokenizer, dtype, device)  # family checked with the keys
    if model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"model {cfg.name!r}: tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens but the "
                         f"model's head has only {model.vocab_size} rows")
    return model
