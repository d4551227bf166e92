"""Every model config is loadable, matched pairs are matched, and the one door gives clear errors."""

import pytest
import torch
from omegaconf import OmegaConf

from rwkvbench import load_model
from rwkvbench.config import load_option, options
from rwkvbench.models.checkpoints import RWKV4Shape

SIZES = {"rwkv4_169m": 169e6, "rwkv4_430m": 430e6, "rwkv4_1b5": 1.5e9, "rwkv4_3b": 3.0e9, "rwkv4_7b": 7.4e9,
         "rwkv4_14b": 14.2e9, "pythia_160m": 162e6, "pythia_410m": 405e6, "pythia_1b4": 1.41e9,
         "pythia_2b8": 2.78e9, "pythia_6b9": 6.86e9, "pythia_12b": 11.85e9}


def param_count(name: str) -> int:
    cfg = load_option("model", name)
    if cfg.family == "rwkv4":
        return RWKV4Shape(**OmegaConf.to_container(cfg.arch)).n_params()
    from transformers import AutoConfig, AutoModelForCausalLM

    arch = OmegaConf.to_container(cfg.arch)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch.pop("model_type"), **arch))
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_real_shapes_have_the_published_sizes(name):
    assert abs(param_count(name) / SIZES[name] - 1) < 0.05


@pytest.mark.parametrize("name", [n for n in options("model") if load_option("model", n).get("matched")])
def test_matched_pairs_point_at_each_other_and_match_in_size(name):
    cfg = load_option("model", name)
    other = load_option("model", cfg.matched)
    assert other.matched == name and other.family != cfg.family
    # DESIGN.md's pairs; the widest is RWKV-4 14B <-> Pythia-12B (14.2B vs 11.85B params).
    assert abs(param_count(name) / param_count(cfg.matched) - 1) < 0.25


def test_tiny_models_are_seeded_and_matched():
    a, b = load_model("rwkv4_tiny", device="cpu"), load_model("rwkv4_tiny", device="cpu")
    ids = torch.arange(20).view(1, 20)
    assert torch.equal(a.prefill(ids)[0], b.prefill(ids)[0])
    n = load_model("neox_tiny", device="cpu")
    assert abs(a.n_params / n.n_params - 1) < 0.01
    assert a.family == "rwkv" and n.family == "transformer"


def test_random_init_at_real_shape_override():
    m = load_model("rwkv4_tiny", init="random", dtype="bf16", device="cpu")
    assert m.dtype == torch.bfloat16


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="unknown model 'rwkv9'; valid: .*rwkv4_1b5"):
        load_model("rwkv9")


def test_unknown_dtype():
    with pytest.raises(ValueError, match="unknown dtype 'fp8'"):
        load_model("rwkv4_tiny", dtype="fp8")


def test_neox_tokenizer_from_the_real_file(neox_tokenizer_path):
    from rwkvbench.models.tokenizer import load_tokenizer

    tok = load_tokenizer("neox20b", str(neox_tokenizer_path))
    assert tok.encode("\nIn a shocking finding") == [187, 688, 247, 29103, 4560]
    assert tok.vocab_size == 50277 and tok.eos_token_id == 0
    # chat tokens appended to some copies of the file must not split plain words out of text
    assert max(tok.encode("the assistant said RWKV <|im_start|>")) < 50277
