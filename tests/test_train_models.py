"""The families as the trainer builds them: gradients against float64, parameter counts and FLOP formulas,
each recipe's initialisation and optimizer groups, and saved weights that load back through
`load_model` with the same logits."""

import math

import pytest
import torch
from omegaconf import OmegaConf

from conftest import rel_err
from rwkvbench import load_model
from rwkvbench.config import load_option
from rwkvbench.models import checkpoints as ck
from rwkvbench.train.families import get_family, padded_vocab
from rwkvbench.train.loss import linear_cross_entropy

pytestmark = pytest.mark.usefixtures("one_thread")


def build(family, n_layer=2, n_embd=32, vocab=64, seed=0):
    return get_family(family)(load_option("train/family", family), {"n_layer": n_layer, "n_embd": n_embd}, vocab, seed)


def grads(model, ids, targets):
    model.module.zero_grad(set_to_none=True)
    loss = linear_cross_entropy(model.features(ids), model.head_weight, targets, chunk=17)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.module.named_parameters()}


def test_rwkv_gradients_through_the_model_fp32_equal_float64_reference():
    model = build("rwkv4")
    shape = model.net.shape
    model.net.load_state_dict(ck.random_rwkv4(shape, seed=1))  # random matrices: every gradient is nonzero
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, shape.vocab_size, (2, 24), generator=g)
    targets = torch.randint(0, shape.vocab_size, (2, 24), generator=g)
    loss, got = grads(model, ids, targets)
    model.module.double()
    ref_loss, ref = grads(model, ids, targets)
    assert abs(loss.item() - ref_loss.item()) <= 1e-6 * ref_loss.item()
    for name, g32 in got.items():
        assert ref[name].abs().max() > 0, name
        assert rel_err(g32, ref[name]) <= 1e-5, name


def test_counts_and_flop_formulas_of_a_matched_pair():
    L, D, V, T = 3, 64, 320, 1024
    rwkv, neox = build("rwkv4", L, D, V), build("neox", L, D, V)
    assert rwkv.n_params_nonembedding() == 13 * D * D * L + D * (11 * L + 4)  # the paper's count
    assert rwkv.n_params() == 2 * V * D + 13 * D * D * L + D * (11 * L + 4)
    assert rwkv.compute_per_token(T) == 6 * (2 * V * D + 13 * D * D * L)  # the paper's training compute
    assert rwkv.compute_nonembedding_per_token(T) == 6 * 13 * D * D * L
    assert rwkv.matmul_flops_per_token(T) == 6 * (V * D + 13 * D * D * L)  # the embedding is a lookup
    # GPT-NeoX of the same shape: the same matrix weights, plus causal attention over T
    attention = 6 * L * D * T
    assert neox.compute_per_token(T) == rwkv.compute_per_token(T) + attention
    assert neox.matmul_flops_per_token(T) == rwkv.matmul_flops_per_token(T) + attention
    biases_and_norms = L * (3 * D + D + int(4.5 * D) + D + 4 * D) + 2 * D
    assert neox.n_params_nonembedding() == 13 * D * D * L + biases_and_norms
    assert abs(neox.n_params() / rwkv.n_params() - 1) < 0.01
    assert padded_vocab(50277) == 50304 and padded_vocab(257) == 320


def test_rwkv_lm_initialisation():
    model = build("rwkv4", n_layer=3, n_embd=32, vocab=64)
    net = model.net
    assert net.emb.weight.abs().max() <= 1e-4 and net.emb.weight.abs().max() > 0
    for b in net.blocks:
        for w in (b.att.key, b.att.receptance, b.att.output, b.ffn.value, b.ffn.receptance):
            assert (w.weight == 0).all()
        W = b.att.value.weight
        assert torch.allclose(W @ W.t(), torch.eye(32), atol=1e-5)  # orthogonal
        K = b.ffn.key.weight  # (4C, C): columns orthonormal, gain sqrt(4)
        assert torch.allclose(K.t() @ K, 4 * torch.eye(32), atol=1e-4)
    H = net.head.weight  # (V, C), gain 0.5 sqrt(V / C)
    assert torch.allclose(H.t() @ H, 0.25 * (64 / 32) * torch.eye(32), atol=1e-4)
    first, last = net.blocks[0].att, net.blocks[-1].att
    assert first.time_decay[0] == -5 and torch.isclose(first.time_decay[-1], torch.tensor(3.0))
    assert (last.time_decay <= first.time_decay + 1e-6).all()  # later layers: sharper decay ramps
    assert torch.allclose(first.time_first[:3], math.log(0.3) + torch.tensor([0.0, 0.5, -0.5]))  # zigzag
    assert (first.time_mix_k[0, 0] == torch.arange(32) / 32).all()


def test_pythia_initialisation():
    model = build("neox", n_layer=4, n_embd=256, vocab=640)
    D, L = 256, 4
    for name, p in model.module.named_parameters():
        if name.endswith(".bias"):
            assert (p == 0).all(), name
        elif name.endswith(("attention.dense.weight", "dense_4h_to_h.weight")):
            assert abs(p.std().item() / (2 / (L * math.sqrt(D))) - 1) < 0.05, name
        elif p.dim() == 2:
            assert abs(p.std().item() / math.sqrt(2 / (5 * D)) - 1) < 0.05, name
    c = model.module.config
    assert (c.num_attention_heads, c.intermediate_size, c.use_parallel_residual, c.tie_word_embeddings) == (4, 1152, True, False)


def test_optimizer_groups_follow_each_recipe():
    rwkv = build("rwkv4")
    groups = rwkv.param_groups(0.1, {"time_decay": 2.0, "time_first": 3.0})
    names = {id(p): n for n, p in rwkv.module.named_parameters()}
    for g in groups:
        for p in g["params"]:
            n = names[id(p)]
            assert g["lr_scale"] == (2.0 if "time_decay" in n else 3.0 if "time_first" in n else 1.0), n
            assert g["weight_decay"] == (0.1 if p.squeeze().dim() >= 2 else 0.0), n
    assert sum(len(g["params"]) for g in groups) == len(names)


@pytest.mark.parametrize("family", ["rwkv4", "neox"])
def test_saved_weights_load_back_through_load_model_with_identical_logits(tmp_path, family):
    model = build(family, vocab=padded_vocab(257))
    if family == "rwkv4":  # RWKV-LM's zero matrices would leave most of the network untested
        model.net.load_state_dict(ck.random_rwkv4(model.net.shape, seed=2))
    weights = model.save(tmp_path, torch.float32)
    cfg = model.model_config(f"{family}_tiny_trained", weights, "bytes", None)
    OmegaConf.save(OmegaConf.create(cfg), tmp_path / "model.yaml")
    loaded = load_model(OmegaConf.load(tmp_path / "model.yaml"), device="cpu", dtype="fp32")
    ids = torch.randint(0, 257, (2, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = model.features(ids) @ model.head_weight.t()
    got, _ = loaded.prefill(ids)
    assert loaded.name == f"{family}_tiny_trained" and loaded.vocab_size == 320
    assert rel_err(got, want) <= 1e-6
