"""RWKV-4 for training: our own modules (models/rwkv4_net.py), RWKV-LM's initialisation, the block
compiled once for every layer, weights saved as a BlinkDL `.pth`.

On CUDA the block runs through our WKV kernel, forward and backward (kernels/wkv_cuda.py); elsewhere
through the PyTorch reference. Initial values follow RWKV-LM's RWKV-v4neo (src/model.py):
* time_decay from -5 to 3 across channels, sharper in later layers; time_first log(0.3) with a zigzag;
  time_mix ramps across channels that flatten with depth;
* the embedding uniform in +-emb_init (small: the first layer norm then sees a near-constant input);
* the projections whose output starts a branch's update zero (attention key, receptance, output;
  channel-mix receptance, value), the rest orthogonal (gain sqrt(rows/cols)), the head 0.5 of that.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
from torch import nn

from rwkvbench.models import checkpoints as ckpt
from rwkvbench.models.checkpoints import RWKV4Shape
from rwkvbench.models.rwkv4_block import block_step
from rwkvbench.models.rwkv4_net import RWKV4
from rwkvbench.train.families import Trainable, compile_norm, register_family

ZERO_INIT = (".att.key.", ".att.receptance.", ".att.output.", ".ffn.value.", ".ffn.receptance.")


@torch.no_grad()
def init_rwkv_lm(net: RWKV4, emb_init: float, generator: torch.Generator) -> None:
    C, L = net.shape.n_embd, net.shape.n_layer
    h = torch.arange(C, dtype=torch.float64)
    ddd = h / C
    zigzag = ((h + 1) % 3 - 1) * 0.5
    for i, block in enumerate(net.blocks):
        r01 = i / (L - 1) if L > 1 else 0.0  # 0 at the first layer, 1 at the last
        r1a0 = 1.0 - i / L  # 1 at the first layer, towards 0 at the last
        att, ffn = block.att, block.ffn
        att.time_decay.copy_(-5 + 8 * (h / max(C - 1, 1)) ** (0.7 + 1.3 * r01))
        att.time_first.copy_(math.log(0.3) + zigzag)
        att.time_mix_k.copy_((ddd ** r1a0).view(1, 1, C))
        att.time_mix_v.copy_((ddd ** r1a0 + 0.3 * r01).view(1, 1, C))
        att.time_mix_r.copy_((ddd ** (0.5 * r1a0)).view(1, 1, C))
        ffn.time_mix_k.copy_((ddd ** r1a0).view(1, 1, C))
        ffn.time_mix_r.copy_((ddd ** r1a0).view(1, 1, C))
    for module in net.modules():
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    for name, p in net.named_parameters():
        if p.dim() < 2 or p.squeeze().dim() < 2:
            continue
        if name == "emb.weight":
            nn.init.uniform_(p, -emb_init, emb_init, generator=generator)
        elif any(key in f".{name}" for key in ZERO_INIT):
            nn.init.zeros_(p)
        else:
            gain = math.sqrt(p.shape[0] / p.shape[1]) if p.shape[0] > p.shape[1] else 1.0
            nn.init.orthogonal_(p, gain=gain * (0.5 if name == "head.weight" else 1.0), generator=generator)


class TrainableRWKV4(Trainable):
    family = "rwkv4"
    kind = "rwkv"

    def __init__(self, net: RWKV4):
        self.net = self.module = net
        self.n_layer, self.n_embd, self.vocab_size = net.shape.n_layer, net.shape.n_embd, net.shape.vocab_size
        self.step = block_step

    def features(self, ids):
        return self.net.features(ids, self.step)

    @property
    def head_weight(self):
        return self.net.head.weight

    def compile(self, mode: str | None = None) -> None:
        from rwkvbench.kernels.dispatch import use_cuda_kernel

        if not use_cuda_kernel(self.net.head.weight):  # compiling the reference would unroll its loop over time
            warnings.warn("rwkvbench.train: RWKV-4 runs the PyTorch WKV reference here (no CUDA kernel): not compiled, "
                          "and slow", stacklevel=2)
            return
        self.step = torch.compile(block_step, dynamic=False, mode=mode)
        for norm in (self.net.blocks[0].ln0, self.net.ln_out):
            compile_norm(norm, mode)

    def embedding_weights(self):
        return [self.net.emb.weight, self.net.head.weight]

    def save(self, folder: Path, dtype: torch.dtype) -> Path:
        path = Path(folder) / "rwkv4.pth"
        ckpt.save_blinkdl({k: v.detach().to("cpu", dtype) for k, v in self.net.state_dict().items()}, path)
        return path

    def model_config(self, name, weights, tokenizer, tokenizer_path) -> dict:
        s = self.net.shape
        return {"name": name, "family": "rwkv4", "matched": None, "init": "pretrained", "path": str(weights),
                "source": None,
                "arch": {"n_layer": s.n_layer, "n_embd": s.n_embd, "vocab_size": s.vocab_size, "dim_ffn": s.dim_ffn},
                "tokenizer": tokenizer, "tokenizer_path": tokenizer_path, "dtype": "auto", "device": "auto", "seed": 0}


@register_family("rwkv4", cuda_extension=True)
def build(recipe, shape: dict, vocab_size: int, seed: int, device="cpu", eos_token_id: int = 0) -> TrainableRWKV4:
    """RWKV-4 of shape {n_layer, n_embd} (dim_ffn = recipe.ffn_ratio x n_embd), fp32 weights (training
    runs them under autocast), initialised on CPU from `seed` (the same numbers on every device)."""
    C = int(shape["n_embd"])
    net = RWKV4(RWKV4Shape(n_layer=int(shape["n_layer"]), n_embd=C, vocab_size=vocab_size,
                           dim_ffn=int(recipe.get("ffn_ratio", 4) * C)))
    init_rwkv_lm(net, float(recipe.get("emb_init", 1e-4)), torch.Generator().manual_seed(seed))
    return TrainableRWKV4(net.to(device))
