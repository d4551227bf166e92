"""`load_model`: the one door from a config name (or a family plus a path) to a SequenceModel."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from rwkvbench.config import load_option
from rwkvbench.models.base import SequenceModel
from rwkvbench.models.tokenizer import load_tokenizer

DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
          "fp16": torch.float16, "float16": torch.float16}


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")
    return DTYPES[dtype]


def model_config(name_or_cfg, **overrides) -> DictConfig:
    """A model config from conf/model/<name>.yaml (or a given config) with overrides merged in."""
    cfg = load_option("model", name_or_cfg) if isinstance(name_or_cfg, str) else OmegaConf.create(name_or_cfg)
    cfg = OmegaConf.merge(cfg, {k: v for k, v in overrides.items() if v is not None})
    return cfg


def load_model(name, **overrides) -> SequenceModel:
    """Load a model by config name ("rwkv4_1b5", "pythia_1b4", "rwkv4_tiny"), or by family ("rwkv4", "hf")
    with path= a local checkpoint or hub id. Overrides: path, device, dtype, init ("pretrained"|"random"),
    seed, tokenizer_path."""
    cfg = model_config(name, **overrides)
    device = resolve_device(cfg.get("device"))
    dtype = resolve_dtype(cfg.get("dtype"), device)
    tokenizer = load_tokenizer(cfg.tokenizer, cfg.get("tokenizer_path"))
    if cfg.family == "rwkv4":
        from rwkvbench.models.build import build_rwkv4_model

        model = build_rwkv4_model(cfg, tokenizer, dtype, device)
    elif cfg.family == "hf":
        from rwkvbench.models.build import build_hf_model

        model = build_hf_model(cfg, tokenizer, dtype, device)
    else:
        raise ValueError(f"model {cfg.name!r}: unknown family {cfg.family!r}; expected 'rwkv4' or 'hf'")
    if model.vocab_size < tokenizer.vocab_size:
        raise ValueError(f"model {cfg.name!r}: tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens but the "
                         f"model's head has only {model.vocab_size} rows")
    return model
