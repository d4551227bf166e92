// RWKV-4's token-mixing inputs in one pass: residual add, layer norm, token shift and the per-channel
// mixes, for a whole chunk (prefill). Free of torch headers so it compiles on its own (nvcc -c).
//
// For each token t of each sequence b (x, add and the outputs (B, T, C) contiguous):
//   x_out = x + add                       (add optional, in the weight dtype; x_out written if given)
//   ln_t  = layer_norm(x_out_t) * weight + bias
//   prev  = ln_{t-1}, or last[b] for t = 0 (the state: the token before the chunk)
//   out[i][b][t] = lerp(prev, ln_t, mix[i]) rounded to the weight dtype, i < n_mix
//   ln_last[b] = ln_{T-1}                 (the new state)
// which is what the PyTorch model computes with layer_norm, torch.cat, torch.lerp and .to(dtype),
// in up to eight kernels and three extra round trips of the chunk through memory.
#pragma once
#include <cuda_runtime.h>

#define RWKV4_NORM_SHIFT_MAX_MIX 3

struct Rwkv4NormShift {
  int dtype;  // of add and out: 0 = float32, 1 = bfloat16, 2 = float16
  int B, T, C, n_mix;
  const float* x;
  const void* add;   // may be null
  float* x_out;      // may be null (only with add)
  const float *weight, *bias, *last;
  const float* mix[RWKV4_NORM_SHIFT_MAX_MIX];
  void* out;         // (n_mix, B, T, C)
  float* ln_last;    // (B, C)
};

cudaError_t rwkv4_norm_shift(const Rwkv4NormShift& a, cudaStream_t stream);
