"""Cross-entropy's loss and logit gradient over a chunk of logits, overwriting the logits (Triton).

The plain reference is `rwkvbench.train.loss._chunk` (same contract, tested against it on CUDA). The
target's logit is read first; then two passes over each row: a running max and sum of exponentials (and,
for RWKV-LM's L2Wrap, the block where the max last rose, searched once for its first column), then the
gradient (softmax - one-hot [+ L2Wrap's term]) / n written over the logits in their dtype. A few
programs per SM each walk rows (PROGRAMS_PER_SM, chosen by measurement below).
Compiled by inductor, the same expression re-read each row from memory once per pass (13 of 78 ms of a
34M-parameter training step on an H200, against about 3.5 ms for these bytes).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _cross_entropy_rows(logits_ptr, targets_ptr, loss_ptr, n_rows, V, stride, inv_n, l2wrap,
                        BLOCK: tl.constexpr, L2WRAP: tl.constexpr):
    for row in range(tl.program_id(0), n_rows, tl.num_programs(0)):
        base = logits_ptr + row.to(tl.int64) * stride
        target = tl.load(targets_ptr + row)
        x_target = tl.load(base + target).to(tl.float32)  # before the second pass overwrites the row
        m = tl.full((), float("-inf"), tl.float32)
        s = tl.zeros((), tl.float32)
        top_block = tl.zeros((), tl.int32)  # L2Wrap: the first block holding the row's max (it last rose there)
        for lo in range(0, V, BLOCK):
            cols = lo + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            block_max = tl.max(x, 0)
            if L2WRAP:
                top_block = tl.where(block_max > m, lo, top_block)
            new_m = tl.maximum(m, block_max)
            s = s * tl.exp(m - new_m) + tl.sum(tl.exp(x - new_m), 0)
            m = new_m
        top_at = tl.zeros((), tl.int32)
        if L2WRAP:  # one search per row, in that block: the first column of equal maxima
            cols = top_block + tl.arange(0, BLOCK)
            x = tl.load(base + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            top_at = tl.min(tl.where(x == m, cols, V), 0)
        lse = m + tl.log(s)
        tl.store(loss_ptr + row, lse - x_target)
        for lo in range(0, V, BLOCK):
            cols = lo + tl.arange(0, BLOCK)
            mask = cols < V
            x = tl.load(base + cols, mask=mask, other=0.0).to(tl.float32)
            g = tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)
            if L2WRAP:
                g += tl.where(cols == top_at, l2wrap * m, 0.0)
            tl.store(base + cols, (g * inv_n).to(logits_ptr.dtype.element_ty), mask=mask)


# Measured on an H200 (benchmarks/cross_entropy_kernel.py, 8192 x 50304 bf16 logits, real-text targets,
# 72 launches): 0.705 ms with L2Wrap, 0.653 ms without (2.1x and 1.9x the read + write floor). Blocks of
# 8192 and 8 warps: 0.775 / 0.648 ms. Other ways to find L2Wrap's column: searched in every block where the
# max rose: 0.780 ms; kept per lane (no search until the row's end): 0.899 ms; searched in the second pass:
# 1.31 ms, or there only in the block the first pass found (a branch in the loop): 1.20 ms; each block read
# as 16 parts of 256 and the part kept, so the search reads 256 columns: 0.876 ms (2026-11-24: the 2-D
# reductions cost more than the bytes saved). A row held in one program's registers (64K floats: an SM's
# whole register file) spilled: at s7 its step spent 42.8 ms (RWKV-4) / 20.0 ms (GPT-NeoX) in it.
BLOCK, WARPS, PROGRAMS_PER_SM = 4096, 4, 8


def cross_entropy_rows_(logits: torch.Tensor, targets: torch.Tensor, n_total: int, l2wrap: float,
                        block: int = BLOCK, warps: int = WARPS, programs_per_sm: int = PROGRAMS_PER_SM):
    """Each row's loss (float32), with the logits overwritten by d(mean loss)/d logits. The last three
    arguments are the launch (benchmarks/cross_entropy_kernel.py compares them)."""
    rows, V = logits.shape
    loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    programs = min(rows, programs_per_sm * torch.cuda.get_device_properties(logits.device).multi_processor_count)
    _cross_entropy_rows[(programs,)](logits, targets.contiguous(), loss, rows, V, logits.stride(0), 1.0 / n_total,
                                     float(l2wrap), BLOCK=block, L2WRAP=bool(l2wrap), num_warps=warps)
    return loss


def chunk_triton(x: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, n_total: int, l2wrap: float):
    """`train.loss._chunk` on CUDA: (summed loss float32, d(mean loss)/d logits in x's dtype)."""
    logits = x @ weight.t()  # the gradient overwrites it
    return cross_entropy_rows_(logits, targets, n_total, l2wrap).sum(), logits
