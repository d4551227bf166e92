"""Every bad checkpoint ends in one clear line naming the file and the key."""

import pytest
import torch

from rwkvbench import load_model
from rwkvbench.models import checkpoints as ck
from rwkvbench.models.checkpoints import CheckpointError

SHAPE = ck.RWKV4Shape(2, 16, 40, 64)


@pytest.fixture
def sd():
    return ck.random_rwkv4(SHAPE, seed=0)


def one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, msg


def test_missing_key(tmp_path, sd):
    del sd["blocks.1.att.time_first"]
    ck.save_blinkdl(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "m.pth")
    one_line(e, "m.pth", "missing key 'blocks.1.att.time_first'", "(16,)")


def test_wrong_shape(tmp_path, sd):
    sd["blocks.0.ffn.value.weight"] = torch.zeros(16, 63)
    ck.save_blinkdl(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "m.pth")
    one_line(e, "m.pth", "'blocks.0.ffn.value.weight'", "(16, 63)", "expected (16, 64)")


def test_unexpected_key(tmp_path, sd):
    sd["blocks.0.att.time_faaaa"] = torch.zeros(16)  # an RWKV-5 weight
    ck.save_blinkdl(sd, tmp_path / "m.pth")
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "m.pth")
    one_line(e, "m.pth", "unexpected key 'blocks.0.att.time_faaaa'")


def test_truncated_file(tmp_path, sd):
    ck.save_blinkdl(sd, tmp_path / "m.pth")
    data = (tmp_path / "m.pth").read_bytes()
    (tmp_path / "t.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "t.pth")
    one_line(e, "t.pth", "not a readable PyTorch checkpoint")


def test_not_a_checkpoint(tmp_path):
    (tmp_path / "notes.pth").write_text("101\nthese are my notes, not weights\n")
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "notes.pth")
    one_line(e, "notes.pth", "not a PyTorch checkpoint (neither a zip archive nor a pickle)",
             "it starts with text '101\\nthese are my notes")
    (tmp_path / "blob.pth").write_bytes(bytes(range(7, 40)))
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "blob.pth")
    one_line(e, "blob.pth", "it starts with bytes 07 08 09")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "empty.pth")
    one_line(e, "empty.pth", "empty file (0 bytes)")


class Exploit:
    def __reduce__(self):
        return (print, ("this would run on load",))


@pytest.mark.parametrize("zipped", [True, False], ids=["zip", "legacy"])
def test_pickled_objects_beyond_tensors_are_refused_with_the_real_reason(tmp_path, sd, zipped, capsys):
    sd["payload"] = Exploit()
    torch.save(sd, tmp_path / "unsafe.pth", _use_new_zipfile_serialization=zipped)
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "unsafe.pth")
    one_line(e, "unsafe.pth", "contains pickled Python objects beyond tensors", "refuses to execute them")
    assert "weights_only" not in str(e.value)  # not torch's advice to turn the protection off
    assert "this would run" not in capsys.readouterr().out


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(3)], tmp_path / "list.pth")
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "list.pth")
    one_line(e, "list.pth", "expected a state dict")


def test_missing_file_and_empty_hf_folder(tmp_path):
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "nope.pth")
    one_line(e, "nope.pth", "no such file")
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path)
    one_line(e, str(tmp_path), "no model.safetensors or pytorch_model.bin")


def test_truncated_safetensors(tmp_path, sd):
    ck.save_hf(sd, tmp_path / "hf", SHAPE)
    f = tmp_path / "hf" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(CheckpointError) as e:
        ck.read_rwkv4(tmp_path / "hf")
    one_line(e, "model.safetensors", "not a readable safetensors file")


def test_hf_bin_and_sharded_folders_load(tmp_path, sd):
    hf = ck.blinkdl_to_hf(sd)
    (tmp_path / "bin").mkdir()
    torch.save(hf, tmp_path / "bin" / "pytorch_model.bin")
    names = sorted(hf)
    half = len(names) // 2
    (tmp_path / "shards").mkdir()
    from safetensors.torch import save_file
    import json
    save_file({k: hf[k] for k in names[:half]}, str(tmp_path / "shards" / "a.safetensors"))
    save_file({k: hf[k] for k in names[half:]}, str(tmp_path / "shards" / "b.safetensors"))
    index = {"weight_map": {k: ("a" if i < half else "b") + ".safetensors" for i, k in enumerate(names)}}
    (tmp_path / "shards" / "model.safetensors.index.json").write_text(json.dumps(index))
    for folder in ("bin", "shards"):
        got, shape = ck.read_rwkv4(tmp_path / folder)
        assert shape == SHAPE and all(torch.equal(got[k], sd[k]) for k in sd)


def test_load_model_from_local_pth_never_touches_the_hub(tmp_path, sd, monkeypatch):
    import huggingface_hub

    def no_network(*a, **k):
        raise AssertionError("tried to reach the hub")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", no_network)
    shape = ck.RWKV4Shape(2, 16, 257, 64)  # the byte tokenizer's 257 tokens
    ck.save_blinkdl(ck.random_rwkv4(shape), tmp_path / "m.pth")
    model = load_model("rwkv4", path=str(tmp_path / "m.pth"), tokenizer="bytes", device="cpu")
    assert model.n_params == shape.n_params() and model.vocab_size == 257


def test_tokenizer_larger_than_the_head_is_refused(tmp_path, sd):
    ck.save_blinkdl(sd, tmp_path / "m.pth")  # vocab 40 < the byte tokenizer's 257
    with pytest.raises(ValueError, match="tokenizer 'bytes' has 257 tokens but the model's head has only 40 rows"):
        load_model("rwkv4", path=str(tmp_path / "m.pth"), tokenizer="bytes", device="cpu")


def test_random_checkpoint_is_deterministic():
    a, b = ck.random_rwkv4(SHAPE, seed=3), ck.random_rwkv4(SHAPE, seed=3)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(a) == set(SHAPE.expected())
