"""GPT-NeoX for training: transformers' `GPTNeoXForCausalLM` in Pythia's architecture (rotary on a quarter
of each head, parallel attention and MLP residual, untied embeddings, GELU, SDPA attention, 64-wide
heads; rotary base 10000, transformers' default) and Pythia's initialisation, saved as a Hugging Face
folder.

Matched to RWKV-4 of the same width and depth: the MLP is `mlp_ratio` = 4.5 x wide (Pythia: 4), so a
layer holds RWKV-4's 13 D^2 matrix weights (4 D^2 attention + 9 D^2 MLP) and the embeddings are equal.
Initialisation as GPT-NeoX's "small_init" (normal, std sqrt(2 / 5D)) for the embedding, the QKV and
MLP-in projections and the head, and "wang_init" (std 2 / (L sqrt D)) for the two projections back
into the residual stream; biases zero, layer norms one and zero.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from rwkvbench.errors import ConfigError
from rwkvbench.train.families import Trainable, compile_norm, register_family

RESIDUAL_OUTPUTS = ("attention.dense.weight", "mlp.dense_4h_to_h.weight")


@torch.no_grad()
def init_pythia(model, generator: torch.Generator) -> None:
    D, L = model.config.hidden_size, model.config.num_hidden_layers
    small, wang = math.sqrt(2 / (5 * D)), 2 / (L * math.sqrt(D))
    for module in model.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            nn.init.zeros_(p)
        elif p.dim() == 2:
            nn.init.normal_(p, 0.0, wang if name.endswith(RESIDUAL_OUTPUTS) else small, generator=generator)


class TrainableNeoX(Trainable):
    family = "neox"
    kind = "transformer"

    def __init__(self, model, rotary_pct: float):
        self.model = self.module = model
        self.rotary_pct = rotary_pct
        c = model.config
        self.n_layer, self.n_embd, self.vocab_size = c.num_hidden_layers, c.hidden_size, c.vocab_size

    def features(self, ids):
        return self.model.gpt_neox(input_ids=ids, use_cache=False).last_hidden_state

    @property
    def head_weight(self):
        return self.model.get_output_embeddings().weight

    def compile(self, mode: str | None = None) -> None:
        for layer in self.model.gpt_neox.layers:  # one layer's code, compiled once for all of them
            layer.compile(mode=mode)
        compile_norm(self.model.gpt_neox.final_layer_norm, mode)

    def embedding_weights(self):
        return [self.model.get_input_embeddings().weight, self.model.get_output_embeddings().weight]

    def attention_flops_per_token(self, context_len: int) -> float:
        return 6.0 * self.n_layer * self.n_embd * context_len

    def save(self, folder: Path, dtype: torch.dtype) -> Path:
        path = Path(folder) / "hf"
        state = {k: v.detach().to("cpu", dtype) for k, v in self.model.state_dict().items()}
        self.model.save_pretrained(path, state_dict=state)  # safetensors
        return path

    def model_config(self, name, weights, tokenizer, tokenizer_path) -> dict:
        c = self.model.config
        arch = {"model_type": "gpt_neox", "num_hidden_layers": c.num_hidden_layers, "hidden_size": c.hidden_size,
                "num_attention_heads": c.num_attention_heads, "intermediate_size": c.intermediate_size,
                "vocab_size": c.vocab_size, "rotary_pct": self.rotary_pct, "max_position_embeddings": c.max_position_embeddings,
                "use_parallel_residual": True, "tie_word_embeddings": False,
                "bos_token_id": c.bos_token_id, "eos_token_id": c.eos_token_id}
        return {"name": name, "family": "hf", "matched": None, "init": "pretrained", "path": str(weights),
                "hub_id": None, "arch": arch, "tokenizer": tokenizer, "tokenizer_path": tokenizer_path,
                "dtype": "auto", "device": "auto", "seed": 0}


@register_family("neox")
def build(recipe, shape: dict, vocab_size: int, seed: int, device="cpu", eos_token_id: int = 0) -> TrainableNeoX:
    from transformers import AutoConfig, AutoModelForCausalLM

    D, L = int(shape["n_embd"]), int(shape["n_layer"])
    head_dim = int(recipe.get("head_dim", 64))
    heads = max(1, D // head_dim)
    intermediate = recipe.get("mlp_ratio", 4.5) * D
    if D % heads or intermediate != int(intermediate):
        raise ConfigError(f"neox: n_embd={D} must split into {head_dim}-wide heads and give a whole MLP width "
                          f"(mlp_ratio x n_embd = {intermediate})")
    rotary_pct = float(recipe.get("rotary_pct", 0.25))
    config = AutoConfig.for_model(
        "gpt_neox", vocab_size=vocab_size, hidden_size=D, num_hidden_layers=L, num_attention_heads=heads,
        intermediate_size=int(intermediate), hidden_act="gelu", rotary_pct=rotary_pct,
        max_position_embeddings=int(recipe.get("max_position_embeddings", 2048)), layer_norm_eps=1e-5,
        use_parallel_residual=True, tie_word_embeddings=False, attention_dropout=0.0, hidden_dropout=0.0,
        use_cache=False, bos_token_id=eos_token_id, eos_token_id=eos_token_id)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="sdpa")
    init_pythia(model, torch.Generator().manual_seed(seed))
    return TrainableNeoX(model.to(device), rotary_pct)
