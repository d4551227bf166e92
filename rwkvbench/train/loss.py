"""The output head and cross-entropy, fused and in chunks of tokens, so the (tokens x vocabulary) logits
never exist whole: at 64K tokens and GPT-NeoX-20B's 50K vocabulary they would be 6.6 GB in bf16 and
twice that in float32 for the softmax.

The forward computes each chunk's logits, loss and logit gradient (softmax minus one-hot) at once and
keeps only the gradients of the features and the head weight (the backward just scales them), so the
head costs its three matrix products and no recomputation. Both families train through it.
"""

from __future__ import annotations

import torch


def _wide(dtype: torch.dtype) -> torch.dtype:
    """float32, or float64 for float64 inputs (references)."""
    return torch.promote_types(dtype, torch.float32)


def _chunk(x, weight, targets, n_total: int, l2wrap: float):
    """One chunk: summed loss, d(mean loss)/d logits in the matmul dtype.

    Written as two reductions over each row (max, log-sum-exp) and one pointwise expression for the
    gradient, with the one-hot terms as comparisons against the column index rather than scatters into
    a float32 copy: compiled, that is one pass that reads the logits and one that writes the gradient
    (on an H200 the scatter version spent 18 of 83 ms of a 34M-parameter training step here)."""
    logits = (x @ weight.t()).to(_wide(x.dtype))
    lse = torch.logsumexp(logits, dim=-1)
    loss = (lse - logits.gather(1, targets[:, None]).squeeze(1)).sum()
    cols = torch.arange(logits.shape[1], device=x.device)
    grad = torch.exp(logits - lse[:, None])
    grad -= (cols == targets[:, None]).to(grad.dtype)  # in place: eager runs hold one (rows x V) float buffer
    if l2wrap:  # RWKV-LM's L2Wrap: a gradient pulling each position's largest logit towards zero
        top, where = logits.max(dim=-1)
        grad += (l2wrap * top)[:, None] * (cols == where[:, None]).to(grad.dtype)
    return loss, (grad / n_total).to(x.dtype)


def chunk_fn_for(device: torch.device, compile: bool):
    """The chunk function training runs on `device`: on CUDA our Triton kernel
    (kernels/cross_entropy_triton.py, tested against `_chunk`), or where Triton is missing the compiled
    `_chunk` (compile on) or `_chunk` itself; elsewhere `_chunk`."""
    if device.type != "cuda":
        return _chunk
    try:
        from rwkvbench.kernels.cross_entropy_triton import chunk_triton
    except ImportError:
        return torch.compile(_chunk, dynamic=True) if compile else _chunk
    return chunk_triton


class LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, targets, chunk: int, l2wrap: float, dtype, chunk_fn):
        flat, targets = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
        n = len(targets)
        w = weight.to(dtype)
        grad_x = torch.empty(flat.shape, dtype=x.dtype, device=x.device)
        grad_w = torch.zeros(weight.shape, dtype=_wide(dtype), device=x.device)
        loss = torch.zeros((), dtype=_wide(dtype), device=x.device)
        for lo in range(0, n, chunk):
            xs = flat[lo : lo + chunk].to(dtype)
            part, g = chunk_fn(xs, w, targets[lo : lo + chunk], n, l2wrap)
            loss += part
            grad_x[lo : lo + chunk] = g @ w
            grad_w += g.t() @ xs
        ctx.save_for_backward(grad_x.view(x.shape), grad_w)
        ctx.weight_dtype = weight.dtype
        return loss / n

    @staticmethod
    def backward(ctx, grad_loss):
        grad_x, grad_w = ctx.saved_tensors
        return grad_x * grad_loss, (grad_w * grad_loss).to(ctx.weight_dtype), None, None, None, None, None


def linear_cross_entropy(x, weight, targets, *, chunk: int = 8192, l2wrap: float = 0.0, dtype=None,
                         chunk_fn=_chunk) -> torch.Tensor:
    """mean_i CE(x_i @ weight.T, targets_i) for features x (..., C), weight (V, C), targets (...).
    Products run in `dtype` (default the weight's), the softmax in float32 (float64 for float64). `chunk_fn` may be a compiled
    `_chunk`. Without autograd (evaluation) no gradients are computed."""
    dtype = dtype or weight.dtype
    if not (torch.is_grad_enabled() and (x.requires_grad or weight.requires_grad)):
        return token_nll(x, weight, targets, chunk=chunk, dtype=dtype).mean()
    with torch.autocast(x.device.type, enabled=False):
        return LinearCrossEntropy.apply(x, weight, targets, chunk, l2wrap, dtype, chunk_fn)


@torch.no_grad()
def token_nll(x, weight, targets, *, chunk: int = 8192, dtype=None) -> torch.Tensor:
    """Per-token negative log-likelihood (float32 or wider, targets' shape) of targets under x @ weight.T."""
    dtype = dtype or weight.dtype
    flat, t = x.reshape(-1, x.shape[-1]), targets.reshape(-1)
    w = weight.to(dtype)
    out = []
    with torch.autocast(x.device.type, enabled=False):
        for lo in range(0, len(t), chunk):
            logits = (flat[lo : lo + chunk].to(dtype) @ w.t()).to(_wide(dtype))
            out.append(torch.logsumexp(logits, -1) - logits.gather(1, t[lo : lo + chunk, None]).squeeze(1))
    return torch.cat(out).view(targets.shape)


def plain_cross_entropy(x, weight, targets, *, dtype=None, **_) -> torch.Tensor:
    """The unfused reference: all logits at once, then torch's cross-entropy (benchmarks compare)."""
    dtype = dtype or weight.dtype
    logits = x.to(dtype) @ weight.to(dtype).t()
    return torch.nn.functional.cross_entropy(logits.to(_wide(dtype)).flatten(0, -2), targets.reshape(-1))
