"""Construct each family's model from a resolved config: pretrained weights or random at the real shape."""

from __future__ import annotations

import torch
from omegaconf import DictConfig, OmegaConf

from rwkvbench.models import checkpoints as ckpt
from rwkvbench.models.rwkv4 import RWKV4Model, build_rwkv4
from rwkvbench.models.transformer import HFCausalLM


def build_rwkv4_model(cfg: DictConfig, tokenizer, dtype, device) -> RWKV4Model:
    if cfg.init == "random":
        shape = ckpt.RWKV4Shape(**OmegaConf.to_container(cfg.arch))
        sd = ckpt.random_rwkv4(shape, seed=cfg.seed)
        identity = f"random:seed={cfg.seed}"
    elif cfg.init == "pretrained":
        src = cfg.get("source") or {}
        path = ckpt.resolve_rwkv4(cfg.get("path"), src.get("hub_repo"), src.get("hub_file"))
        sd, shape = ckpt.read_rwkv4(path)
        identity = ckpt.checkpoint_id(path)
    else:
        raise ValueError(f"model {cfg.name!r}: init must be 'pretrained' or 'random', got {cfg.init!r}")
    model = RWKV4Model(build_rwkv4(sd, shape, dtype, device), tokenizer, name=cfg.name)
    model.checkpoint = identity
    return model


def build_hf_model(cfg: DictConfig, tokenizer, dtype, device) -> HFCausalLM:
    from transformers import AutoConfig, AutoModelForCausalLM

    if cfg.init == "random":
        arch = OmegaConf.to_container(cfg.arch)
        hf_cfg = AutoConfig.for_model(arch.pop("model_type"), **arch)
        torch.manual_seed(cfg.seed)
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=dtype, attn_implementation="sdpa")
        identity = f"random:seed={cfg.seed}"
    elif cfg.init == "pretrained":
        where = cfg.get("path") or cfg.get("hub_id")
        if not where:
            raise ValueError(f"model {cfg.name!r}: give path= (a local folder) or hub_id=")
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, attn_implementation="sdpa")
        ckpt.check_finite(model.named_parameters(), where)
        identity = (ckpt.checkpoint_id(where) if cfg.get("path")
                    else f"hub:{where}@{getattr(model.config, '_commit_hash', None) or 'unknown'}")
    else:
        raise ValueError(f"model {cfg.name!r}: init must be 'pretrained' or 'random', got {cfg.init!r}")
    wrapped = HFCausalLM(model.to(device), tokenizer, name=cfg.name)
    wrapped.checkpoint = identity
    return wrapped
