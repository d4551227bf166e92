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
    with pytest.raises(ValueError, match="dtype='fp8': unknown dtype"):
        load_model("rwkv4_tiny", dtype="fp8")


def test_unknown_keyword_lists_the_valid_ones():
    from rwkvbench.errors import ConfigError

    with pytest.raises(ConfigError) as e:
        load_model("rwkv4_tiny", devic="cpu")
    msg = str(e.value)
    assert "load_model('rwkv4_tiny'): unknown keyword 'devic' (did you mean 'device'?)" in msg
    assert "device, dtype" in msg and "tokenizer_path" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="unknown keyword 'source'.*hub_id"):
        load_model("neox_tiny", source={"hub_repo": "x"})  # an RWKV key on a Transformer


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_fails_before_building(monkeypatch):
    from rwkvbench.errors import ConfigError
    from rwkvbench.models import build

    def never(*a, **k):
        raise AssertionError("built the model before checking the device")

    monkeypatch.setattr(build, "build_rwkv4_model", never)
    with pytest.raises(ConfigError, match="device=cuda: no CUDA here .*use device=cpu"):
        load_model("rwkv4_tiny", device="cuda")
    with pytest.raises(ConfigError, match="device='tpu': not a device"):
        load_model("rwkv4_tiny", device="tpu")


def test_tokenizer_path_for_a_byte_tokenizer_model_is_an_error(tmp_path):
    from rwkvbench.errors import ConfigError

    (tmp_path / "t.json").write_text("{}")
    with pytest.raises(ConfigError, match="tokenizer_path=.*t.json: this model uses the byte tokenizer"):
        load_model("rwkv4_tiny", tokenizer_path=str(tmp_path / "t.json"), device="cpu")


def test_offline_without_a_tokenizer_is_one_line_in_seconds(monkeypatch):
    import time

    import huggingface_hub

    from rwkvbench.errors import DataError
    from rwkvbench.models import hub, tokenizer

    monkeypatch.delenv(tokenizer.NEOX20B_ENV, raising=False)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda *a, **k: None)  # nothing cached
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("tried the hub"))
    tokenizer._hub_tokenizer_file.cache_clear()
    hub.hub_unreachable.cache_clear()
    start = time.perf_counter()
    for _ in range(2):  # found out once; the second time costs nothing
        with pytest.raises(DataError, match=r"GPT-NeoX-20B tokenizer: not in the local cache and the hub is "
                                            r"unreachable \(HF_HUB_OFFLINE is set\); give tokenizer_path="):
            tokenizer.load_tokenizer("neox20b")
    assert time.perf_counter() - start < 5
    tokenizer._hub_tokenizer_file.cache_clear()
    hub.hub_unreachable.cache_clear()


def test_hub_probe_answers_within_seconds(monkeypatch):
    """Without HF_HUB_OFFLINE the probe connects once, with a timeout; a refused port (on this machine,
    no network needed) is a reason, not 26 s of retries."""
    import socket
    import time

    from rwkvbench.models import hub

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    hub.hub_unreachable.cache_clear()
    start = time.perf_counter()
    why = hub.hub_unreachable()
    assert why and "127.0.0.1" in why and time.perf_counter() - start < hub.PROBE_SECONDS + 1
    with socket.socket() as server:  # a port that answers
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        hub.hub_unreachable.cache_clear()
        assert hub.hub_unreachable() is None
    hub.hub_unreachable.cache_clear()


def test_forced_cuda_kernel_never_falls_back_silently(monkeypatch):
    from rwkvbench.errors import ConfigError
    from rwkvbench.kernels import dispatch

    monkeypatch.setenv(dispatch.KERNEL_ENV, "cuda")
    k = torch.zeros(1, 4, 8)
    with pytest.raises(ConfigError, match="RWKVBENCH_WKV=cuda forces the CUDA kernel, but the model runs on cpu"):
        dispatch.wkv4(torch.zeros(8), torch.zeros(8), k, k)
    monkeypatch.setenv(dispatch.KERNEL_ENV, "auto")
    assert dispatch.wkv4(torch.zeros(8), torch.zeros(8), k, k)[0].shape == k.shape


def test_neox_tokenizer_from_the_real_file(neox_tokenizer_path):
    from rwkvbench.models.tokenizer import load_tokenizer

    tok = load_tokenizer("neox20b", str(neox_tokenizer_path))
    assert tok.encode("\nIn a shocking finding") == [187, 688, 247, 29103, 4560]
    assert tok.vocab_size == 50277 and tok.eos_token_id == 0
    # chat tokens appended to some copies of the file must not split plain words out of text
    assert max(tok.encode("the assistant said RWKV <|im_start|>")) < 50277
