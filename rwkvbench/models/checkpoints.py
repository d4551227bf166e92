"""RWKV-4 checkpoint formats: BlinkDL's RWKV-4-Pile `.pth` and Hugging Face `RWKV/rwkv-4-*-pile`.

Weights are held internally under BlinkDL's names (they are also our module names). Hugging Face names
map onto them through one table. Every load checks every key and shape against the architecture
inferred from the weights, and a bad file ends in one `CheckpointError` line naming the file and key.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from rwkvbench.errors import UserError


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be used; the message is one line naming the file and what was wrong."""


@dataclass(frozen=True)
class RWKV4Shape:
    n_layer: int
    n_embd: int
    vocab_size: int
    dim_ffn: int

    def expected(self) -> dict[str, tuple[int, ...]]:
        """Every key of a BlinkDL RWKV-4 state dict with its shape."""
        C, F, V = self.n_embd, self.dim_ffn, self.vocab_size
        keys = {"emb.weight": (V, C), "blocks.0.ln0.weight": (C,), "blocks.0.ln0.bias": (C,)}
        for i in range(self.n_layer):
            b = f"blocks.{i}."
            for ln in ("ln1", "ln2"):
                keys[b + ln + ".weight"] = (C,)
                keys[b + ln + ".bias"] = (C,)
            keys[b + "att.time_decay"] = (C,)
            keys[b + "att.time_first"] = (C,)
            for m in ("k", "v", "r"):
                keys[b + f"att.time_mix_{m}"] = (1, 1, C)
            for lin in ("key", "value", "receptance", "output"):
                keys[b + f"att.{lin}.weight"] = (C, C)
            keys[b + "ffn.time_mix_k"] = (1, 1, C)
            keys[b + "ffn.time_mix_r"] = (1, 1, C)
            keys[b + "ffn.key.weight"] = (F, C)
            keys[b + "ffn.receptance.weight"] = (C, C)
            keys[b + "ffn.value.weight"] = (C, F)
        keys.update({"ln_out.weight": (C,), "ln_out.bias": (C,), "head.weight": (V, C)})
        return keys

    def n_params(self) -> int:
        return sum(math.prod(s) for s in self.expected().values())


# ---- names: Hugging Face (transformers' RwkvForCausalLM) <-> BlinkDL --------------------------------
# (Hugging Face, BlinkDL) name templates; {i} is a layer number, a trailing "." maps a whole prefix.
# The first match wins, so specific names come before the prefixes that contain them.
_NAMES = [
    ("rwkv.embeddings.weight", "emb.weight"),
    ("rwkv.blocks.0.pre_ln.", "blocks.0.ln0."),
    ("rwkv.blocks.{i}.attention.time_mix_key", "blocks.{i}.att.time_mix_k"),
    ("rwkv.blocks.{i}.attention.time_mix_value", "blocks.{i}.att.time_mix_v"),
    ("rwkv.blocks.{i}.attention.time_mix_receptance", "blocks.{i}.att.time_mix_r"),
    ("rwkv.blocks.{i}.attention.", "blocks.{i}.att."),
    ("rwkv.blocks.{i}.feed_forward.time_mix_key", "blocks.{i}.ffn.time_mix_k"),
    ("rwkv.blocks.{i}.feed_forward.time_mix_receptance", "blocks.{i}.ffn.time_mix_r"),
    ("rwkv.blocks.{i}.feed_forward.", "blocks.{i}.ffn."),
    ("rwkv.blocks.{i}.ln1.", "blocks.{i}.ln1."),
    ("rwkv.blocks.{i}.ln2.", "blocks.{i}.ln2."),
    ("rwkv.ln_out.", "ln_out."),
]


def _rules(forward: bool):
    """(regex, replacement) per template pair, in the chosen direction."""
    rules = []
    for hf, blinkdl in _NAMES:
        src, dst = (hf, blinkdl) if forward else (blinkdl, hf)
        pattern = "^" + re.escape(src).replace(r"\{i\}", r"(\d+)") + ("" if src.endswith(".") else "$")
        rules.append((re.compile(pattern), dst.replace("{i}", r"\1")))
    return rules


_HF_TO_BLINKDL, _BLINKDL_TO_HF = _rules(True), _rules(False)


def _rename(name: str, rules) -> str:
    for pattern, repl in rules:
        new, n = pattern.subn(repl, name)
        if n:
            return new
    return name  # head.weight is the same in both


def hf_to_blinkdl(sd: dict) -> dict:
    return {_rename(k, _HF_TO_BLINKDL): v for k, v in sd.items()}


def blinkdl_to_hf(sd: dict) -> dict:
    return {_rename(k, _BLINKDL_TO_HF): v for k, v in sd.items()}


# ---- validation ---------------------------------------------------------------------------------------
def infer_shape(sd: dict, path) -> RWKV4Shape:
    for key in ("emb.weight", "blocks.0.ffn.key.weight"):
        if key not in sd:
            raise CheckpointError(f"{path}: missing key '{key}' (not an RWKV-4 checkpoint?)")
    layers = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    V, C = sd["emb.weight"].shape
    return RWKV4Shape(n_layer=max(layers) + 1, n_embd=C, vocab_size=V, dim_ffn=sd["blocks.0.ffn.key.weight"].shape[0])


def validate(sd: dict, path) -> RWKV4Shape:
    """Check every key and shape; return the architecture."""
    shape = infer_shape(sd, path)
    expected = shape.expected()
    for key, want in expected.items():
        if key not in sd:
            raise CheckpointError(f"{path}: missing key '{key}' (expected shape {tuple(want)})")
        got = tuple(sd[key].shape)
        if got != want:
            raise CheckpointError(f"{path}: key '{key}' has shape {got}, expected {want} for {shape}")
        if not sd[key].is_floating_point():
            raise CheckpointError(f"{path}: key '{key}' has dtype {sd[key].dtype}, expected a float tensor")
    extra = sorted(set(sd) - set(expected))
    if extra:
        raise CheckpointError(f"{path}: unexpected key '{extra[0]}' ({len(extra)} in all; not an RWKV-4 weight)")
    return shape


def check_finite(tensors, path) -> None:
    """Every weight finite: a NaN or inf would otherwise flow silently into every number of a run."""
    for key, t in tensors:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{path}: tensor '{key}' has {bad} non-finite values (NaN or inf) of {t.numel()}; "
                                  f"the checkpoint is damaged")


# ---- identity -----------------------------------------------------------------------------------------
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")


def content_hash(path, samples: int = 16, sample_bytes: int = 1 << 16) -> str:
    """A short content hash of a checkpoint file or folder (its weight files): per file, its size and
    `samples` evenly spaced blocks. Reading a whole multi-GB file would cost seconds to minutes per run;
    any retraining, conversion or truncation changes these blocks."""
    path = Path(path)
    files = sorted(f for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        digest.update(f"{f.name}:{size}".encode())
        with open(f, "rb") as fh:
            for i in range(samples):
                fh.seek(max(0, (size - sample_bytes) * i // max(samples - 1, 1)))
                digest.update(fh.read(sample_bytes))
    return digest.hexdigest()[:12]


def checkpoint_id(path) -> str:
    """How results name a local checkpoint: its path and content hash."""
    return f"{Path(path).expanduser().resolve()}#{content_hash(path)}"


# ---- reading files ------------------------------------------------------------------------------------
def _show(head: bytes) -> str:
    """The first bytes of a file as a reader would describe them: text if they decode, else hex."""
    try:
        text = head.decode("utf-8")
        if all(c.isprintable() or c in "\n\r\t" for c in text):
            return f"text {text[:48]!r}"
    except UnicodeDecodeError:
        pass
    return f"bytes {head[:16].hex(' ')}"


def _not_a_checkpoint(path: Path) -> str | None:
    """Why the file's first bytes rule out a PyTorch checkpoint, or None when they may be one: torch.save
    writes a zip archive (PK..) or, before PyTorch 1.6, a pickle stream (0x80 = pickle PROTO)."""
    with path.open("rb") as f:
        head = f.read(64)
    if not head:
        return "empty file (0 bytes), not a PyTorch checkpoint"
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    return f"not a PyTorch checkpoint (neither a zip archive nor a pickle); it starts with {_show(head)}"


def _load_failure(path: Path, e: Exception) -> str:
    """torch.load's exception as one line: what is wrong with the file, never torch's advice to turn
    weights_only off (that would execute whatever the file contains)."""
    text = str(e)
    if "Weights only load failed" in text:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        what = f" (e.g. {found.group(1)})" if found else ""
        return (f"contains pickled Python objects beyond tensors{what}; rwkvbench loads weights only and refuses to "
                f"execute them (re-save just the tensors, as a state dict or safetensors, where you trust the file)")
    if isinstance(e, EOFError) or "central directory" in text or "truncated" in text.lower():
        return "not a readable PyTorch checkpoint: truncated or corrupt (the file ends early)"
    reason = text.strip().splitlines()[0] if text.strip() else type(e).__name__
    return f"not a readable PyTorch checkpoint (truncated or not a checkpoint): {reason}"


def _torch_load(path: Path) -> dict:
    why = _not_a_checkpoint(path)
    if why:
        raise CheckpointError(f"{path}: {why}")
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):  # legacy (non-zip) files cannot be memory-mapped
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path}: {_load_failure(path, e)}") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a state dict of tensors, found a {type(obj).__name__}")
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"{path}: expected a state dict of tensors, but key {key!r} holds a "
                                  f"{type(value).__name__}")
    return obj


def _safetensors_load(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt): {e}") from None


def _read_tensor_file(path: Path) -> dict:
    return _safetensors_load(path) if path.suffix == ".safetensors" else _torch_load(path)


def _read_hf_dir(path: Path) -> dict:
    """A Hugging Face model folder: one file or shards listed in an index."""
    for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        index = path / index_name
        if index.is_file():
            try:
                shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{index}: not a valid shard index ({e})") from None
            sd = {}
            for shard in shards:
                sd.update(_read_tensor_file(path / shard))
            return sd
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return _read_tensor_file(path / name)
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin in this folder")


def read_rwkv4(path) -> tuple[dict, RWKV4Shape]:
    """Load an RWKV-4 checkpoint from a local file or folder in either format, under BlinkDL names."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or folder")
    sd = _read_hf_dir(path) if path.is_dir() else _read_tensor_file(path)
    if any(k.startswith("rwkv.") for k in sd):
        sd = hf_to_blinkdl(sd)
    shape = validate(sd, path)
    check_finite(sd.items(), path)
    return sd, shape


def resolve_rwkv4(path: str | None, hub_repo: str | None, hub_file: str | None, download: bool = True) -> Path | None:
    """A local path wins; otherwise the hub's copy: from the local cache, else downloaded (and cached).
    download=False only checks that it can be had (None: not cached, the hub is reachable)."""
    if path:
        local = Path(path).expanduser()
        if not local.exists():
            raise CheckpointError(f"{path}: no such file or folder (path= a BlinkDL .pth file or a Hugging Face folder)")
        return local
    if not hub_repo:
        raise CheckpointError("no checkpoint: give path= (a local .pth file or Hugging Face folder) or a hub repo")
    from rwkvbench.models import hub

    return hub.hub_file(hub_repo, hub_file, ["*.json", "*.safetensors", "*.bin"], download=download,
                        what=f"{hub_repo}/{hub_file or ''}", advice="give path= a local checkpoint",
                        error=CheckpointError)


# ---- writing (tests, conversion) ----------------------------------------------------------------------
def save_blinkdl(sd: dict, path) -> None:
    torch.save({k: v.contiguous() for k, v in sd.items()}, path)


def save_hf(sd: dict, folder, shape: RWKV4Shape, context_length: int = 1024) -> None:
    """Write transformers' RWKV layout: config.json + model.safetensors."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in blinkdl_to_hf(sd).items()}, str(folder / "model.safetensors"))
    config = {
        "architectures": ["RwkvForCausalLM"],
        "model_type": "rwkv",
        "vocab_size": shape.vocab_size,
        "hidden_size": shape.n_embd,
        "num_hidden_layers": shape.n_layer,
        "attention_hidden_size": shape.n_embd,
        "intermediate_size": shape.dim_ffn,
        "context_length": context_length,
        "layer_norm_epsilon": 1e-5,
        "rescale_every": 6,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 0,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))


# ---- random weights at a real shape -------------------------------------------------------------------
def random_rwkv4(shape: RWKV4Shape, seed: int = 0, dtype=torch.float32) -> dict:
    """A BlinkDL-format state dict with RWKV-LM-style initial values (decay ramps, mix ramps), so that
    random models behave like RWKV (not like noise) for speed work and tests."""
    g = torch.Generator().manual_seed(seed)
    C, L = shape.n_embd, shape.n_layer
    ch = torch.arange(C, dtype=torch.float64) / max(C - 1, 1)
    sd = {}
    for key, s in shape.expected().items():
        layer = int(key.split(".")[1]) if key.startswith("blocks.") else 0
        r01 = layer / max(L - 1, 1)  # 0 at the first layer, 1 at the last
        r1a0 = 1.0 - layer / L  # 1 at the first layer, towards 0 at the last
        if key.endswith("time_decay"):
            t = -5 + 8 * ch ** (0.7 + 1.3 * r01)
        elif key.endswith("time_first"):
            zigzag = torch.tensor([((i + 1) % 3 - 1) * 0.5 for i in range(C)], dtype=torch.float64)
            t = math.log(0.3) + zigzag
        elif "time_mix_v" in key:
            t = (ch ** r1a0 + 0.3 * r01).clamp(max=1.0).view(s)
        elif "time_mix_r" in key:
            t = (ch ** (0.5 * r1a0)).view(s)
        elif "time_mix" in key:
            t = (ch ** r1a0).view(s)
        elif ".ln" in key or key.startswith("ln_out"):
            t = torch.ones(s, dtype=torch.float64) if key.endswith("weight") else torch.zeros(s, dtype=torch.float64)
        else:  # matrices: unit-variance outputs, so activations stay in a realistic range
            fan_in = s[1] if key != "emb.weight" else 1
            t = torch.randn(s, generator=g, dtype=torch.float64) / math.sqrt(fan_in)
        sd[key] = t.to(dtype)
    return sd
