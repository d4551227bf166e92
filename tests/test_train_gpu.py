"""Training on the GPU, the way the ladder runs it: bf16 autocast, RWKV-4 through the CUDA WKV kernel,
compiled blocks / layers and loss, the trainer end to end. (The kernels' gradients against float64 are
in test_train_kernels.py.)"""

import pytest
import torch

from conftest import rel_err
from rwkvbench.config import load_option
from rwkvbench.results import ResultsWriter
from rwkvbench.train.families import get_family
from rwkvbench.train.loss import _chunk, chunk_fn_for
from rwkvbench.train.optim import make_optimizer
from rwkvbench.train.rows import training_table
from rwkvbench.train.trainer import train_step

pytestmark = pytest.mark.gpu
FAMILIES = ["rwkv4", "neox"]


def steps(family, compiled, amp_dtype, n=4, seed=0, mode=None):
    recipe = load_option("train/family", family)
    model = get_family(family)(recipe, {"n_layer": 2, "n_embd": 128}, 512, seed, torch.device("cuda"))
    chunk_fn = chunk_fn_for(torch.device("cuda"), compiled)
    if compiled:
        model.compile(mode)
    opt = make_optimizer(model, recipe, 2e-3, torch.device("cuda"))
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(n):
        batch = torch.randint(0, 500, (4, 257), generator=g)
        losses.append(train_step(model, opt, batch, torch.device("cuda"), micro_batch_size=2, amp_dtype=amp_dtype,
                                 loss_chunk=300, l2wrap=1e-4, grad_clip=1.0, chunk_fn=chunk_fn).item())
    return losses, {n: p.detach().float().cpu() for n, p in model.module.named_parameters()}


@pytest.mark.parametrize("family", FAMILIES)
def test_bf16_steps_follow_fp32_steps(family):
    bf16, _ = steps(family, False, torch.bfloat16)
    fp32, _ = steps(family, False, torch.float32)
    assert all(abs(a - b) <= 2e-2 * b for a, b in zip(bf16, fp32)), (bf16, fp32)


@pytest.mark.parametrize("mode", [None, "reduce-overhead"], ids=["default", "cuda_graphs"])
@pytest.mark.parametrize("family", FAMILIES)
def test_compiled_steps_equal_eager_steps(family, mode):
    torch._dynamo.reset()
    compiled, w_compiled = steps(family, True, torch.float32, mode=mode)
    eager, w_eager = steps(family, False, torch.float32)
    assert all(abs(a - b) <= 1e-4 * b for a, b in zip(compiled, eager)), (compiled, eager)
    lr, n = 2e-3, len(eager)
    for name in w_eager:
        # Adam divides by sqrt(v): rounding in a near-zero gradient moves that one weight by up to lr a step, so
        # the weights are compared as whole tensors (max-element error reached 1.0004e-2 on an H200). A wrong
        # gradient moves every element by ~lr a step; rounding flips a few. Zero-initialised biases have too
        # small a norm for a relative bound (2.1e-3 on an H200), so the RMS difference is held to 1% of lr*steps.
        a, b = w_compiled[name].double(), w_eager[name].double()
        rel = ((a - b).norm() / b.norm()).item()
        rms = (a - b).pow(2).mean().sqrt().item()
        assert rel <= 2e-3 or rms <= 0.01 * lr * n, (name, rel, rms)


@pytest.mark.parametrize("family", FAMILIES)
def test_trainer_end_to_end_compiled_bf16(tmp_path, family):
    from test_train_run import corpus_documents  # the same slice of text as the CPU runs
    import json
    from omegaconf import OmegaConf
    from rwkvbench import load_model
    from rwkvbench.train.data import load_corpus
    from rwkvbench.train.trainer import RunSpec, train_run

    docs = corpus_documents()
    for name, part in [("train-00.jsonl", docs[4:]), ("valid.jsonl", docs[:4])]:
        (tmp_path / name).write_text("".join(json.dumps({"text": d}) + "\n" for d in part))
    corpus = load_corpus(OmegaConf.create({"name": "slice", "train": str(tmp_path / "train-*.jsonl"), "shards": None,
                                           "valid": str(tmp_path / "valid.jsonl"), "tokenizer": "bytes",
                                           "tokenizer_path": None, "cache_dir": str(tmp_path / "cache"), "workers": 1}),
                         256, 0)
    recipe = OmegaConf.to_container(load_option("train/family", family), resolve=True)
    spec = RunSpec(family=family, size="gpu", n_layer=2, n_embd=128, tokens=40 * 8 * 256, batch_size=8, lr=2e-3,
                   recipe=recipe, context_len=256, eval_points=3, eval_tokens=4096, compile_mode="reduce-overhead",
                   max_epochs=3.0)  # 40 steps are 2.5 passes over this slice: the test is about the trainer
    writer = ResultsWriter(tmp_path / "out")
    assert train_run(spec, corpus, tmp_path / "out", writer, torch.device("cuda"))
    table = training_table(writer.read())
    final = table[table.step == spec.steps].iloc[0]
    assert final.finished == 1.0 and final.val_loss < 4.0 and 0 < final.mfu < 1 and final.tokens_per_s > 0  # ln 320 = 5.8
    model = load_model(OmegaConf.load(tmp_path / "out" / "runs" / spec.run_dir_name / "model.yaml"), device="cuda",
                       dtype="fp32")
    logits, _ = model.prefill(torch.randint(0, 256, (2, 64)))
    assert torch.isfinite(logits).all()


def test_compiled_loss_chunk_matches_float64_reference():
    """The compiled `_chunk` (the trainer's loss where Triton is missing: bf16 products, float32 softmax),
    against the float64 loss and its gradients. (L2Wrap's term is below this bound; the fp32 cases of
    test_cross_entropy_triton.py hold it to 1e-5.)"""
    from rwkvbench.train.loss import linear_cross_entropy

    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 700, 64, generator=g)).cuda().requires_grad_()
    w = (torch.randn(5000, 64, generator=g) * 0.2).cuda().requires_grad_()
    t = torch.randint(0, 5000, (3, 700), generator=g).cuda()
    factor = 1e-4
    torch._dynamo.reset()
    loss = linear_cross_entropy(x, w, t, chunk=512, l2wrap=factor, dtype=torch.bfloat16,
                                chunk_fn=torch.compile(_chunk, dynamic=True))
    gx, gw = torch.autograd.grad(loss, [x, w])
    # float64 through the same fused loss, which test_train_loss.py holds to torch's cross-entropy + L2Wrap
    x64, w64 = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    ref = linear_cross_entropy(x64, w64, t, chunk=512, l2wrap=factor)
    rx, rw = torch.autograd.grad(ref, [x64, w64])
    assert abs(loss.item() - ref.item()) <= 1e-2 * ref.item()
    assert rel_err(gx.double(), rx) <= 2e-2 and rel_err(gw.double(), rw) <= 2e-2, (rel_err(gx.double(), rx),
                                                                                    rel_err(gw.double(), rw))
