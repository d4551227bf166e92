// RWKV-4 decode (one token per sequence) as a program of fused stages, two per layer, all run by one
// persistent kernel launch with a grid-wide barrier between stages: host API. Free of torch headers so
// it compiles on its own (nvcc -c).
//
// A "stage": a prologue completes the residual stream (adding the previous stage's split product),
// layer-norms it and builds up to three token-shifted GEMV input vectors in shared memory; then up to
// three weight matrices are multiplied by them (fp32 accumulation, one warp per two rows, 16-byte
// weight loads) and each product goes through its epilogue. Every block owns a contiguous share of
// each matrix's rows. A stage may then run a channel step on the channels whose rows it owns (the WKV
// step, or relu^2) and multiply the result by the same rows of a second, transposed matrix: a split
// product (split-K), each block adding its partial sums into an fp32 accumulator that the next stage's
// prologue completes. So a layer is two stages, two barriers:
//   1. ln1, shift -> key, value, receptance -> WKV step, r * wkv -> output projection (split)
//   2. residual += output; ln2, shift -> ffn key (relu^2 -> ffn value, split), ffn receptance (sigmoid)
// and the next stage's prologue adds sigmoid(ffn receptance) * ffn value to the residual.
// Rounding follows the plain PyTorch model: every GEMV result, sigmoid, relu^2 and r * wkv is rounded
// to the weight dtype where the PyTorch model holds it in that dtype (a split product once complete).
//
// Layouts: activations (B, n) float32 contiguous; weights (rows, K) row-major (nn.Linear's layout) in
// dtype 0 = float32, 1 = bfloat16, 2 = float16; a split weight (rows of gemv 0, K): the transposed
// matrix, so a block's share of it is contiguous.
#pragma once
#include <cuda_runtime.h>
#include <cstddef>

enum Rwkv4Epilogue {
  RWKV4_OP_STORE = 0,    // out = y
  RWKV4_OP_SIGMOID = 1,  // out = sigmoid(y)
  RWKV4_OP_KEEP = 2,     // y kept in the block's shared memory for the channel step (out unused)
};
enum Rwkv4ChannelStep {
  RWKV4_CHANNEL_NONE = 0,
  RWKV4_CHANNEL_WKV = 1,          // gemv 0, 1, 2 (kept): key, value, receptance -> sigmoid(r) * wkv
  RWKV4_CHANNEL_RELU_SQUARE = 2,  // gemv 0 (kept) -> relu(y)^2
};

#define RWKV4_DECODE_MAX_GEMV 3
#define RWKV4_DECODE_MAX_COPIES 4
#define RWKV4_DECODE_MAX_BATCH 8
// A split accumulator is SPLIT_COPIES copies of (B, K), block b adding into copy b % SPLIT_COPIES, so
// fewer blocks' atomics queue on each address; the next prologue sums the copies.
#ifndef RWKV4_DECODE_SPLIT_COPIES
#define RWKV4_DECODE_SPLIT_COPIES 4
#endif
#define RWKV4_DECODE_COUNTER_WORDS 64  // the barrier's two counters, a cache line apart
// Trace builds (RWKV4_DECODE_TRACE) keep per-block cycle stamps after the counters: 4 int64 per stage
// and block, for up to TRACE_STAGES stages and TRACE_BLOCKS blocks (a larger grid records nothing).
#define RWKV4_DECODE_TRACE_STAGES 128
#define RWKV4_DECODE_TRACE_BLOCKS 264
#ifdef RWKV4_DECODE_TRACE
#define RWKV4_DECODE_BARRIER_WORDS \
  (RWKV4_DECODE_COUNTER_WORDS + 2 * 4 * RWKV4_DECODE_TRACE_STAGES * RWKV4_DECODE_TRACE_BLOCKS)
#else
#define RWKV4_DECODE_BARRIER_WORDS RWKV4_DECODE_COUNTER_WORDS
#endif

struct Rwkv4Gemv {
  const void* weight;  // (rows, K)
  int rows;
  int input;           // which prologue vector (0 .. n_inputs-1)
  int op;              // Rwkv4Epilogue
  float* out;          // (B, rows); null for RWKV4_OP_KEEP
};

struct Rwkv4Copy {  // done by the stage on the side: dst[i] = src[i] (state updates), or 0 if src is null
  const float* src;
  float* dst;
  int n;
};

struct Rwkv4DecodeStage {
  int dtype, B, K;
  // The residual stream x (B, K). With residual_acc (SPLIT_COPIES, B, K), the previous stage's split
  // product, the stage first completes it: x + round(acc), or x + round(gate * round(acc)) with residual_gate;
  // block 0 writes the completed stream to residual_out (may be null).
  const float *x, *residual_acc, *residual_gate;
  float* residual_out;
  // Layer norm weight and bias (K); ln_out (B, K, may be null) receives the normed vector (block 0).
  // shift_prev (B, K, may be null): the previous token's normed vector; with it, input i is
  // ln * mix[i] + prev * (1 - mix[i]) (token shift), without it the single input is ln itself.
  const float *ln_w, *ln_b;
  float* ln_out;
  const float* shift_prev;
  const float* mix[RWKV4_DECODE_MAX_GEMV];
  int n_inputs;
  Rwkv4Gemv gemv[RWKV4_DECODE_MAX_GEMV];
  int n_gemv;
  // The channel step on this block's share of gemv 0's rows (Rwkv4ChannelStep). WKV: log-decay
  // w = -exp(time_decay) and bonus u (K), the state aa, bb, pp (B, K), updated in place by the owner.
  int channel_step;
  const float *w, *u;
  float *aa, *bb, *pp;
  // With a channel step: split_acc (SPLIT_COPIES, B, K) += split_weight[owned rows]^T . step result,
  // where split_weight is (rows of gemv 0, K). split_acc must be zero before the stage.
  const void* split_weight;
  float* split_acc;
  Rwkv4Copy copy[RWKV4_DECODE_MAX_COPIES];
  int n_copies;
};

// Dynamic shared memory the stage needs per block when `blocks` blocks share its rows: its prologue
// vectors and the kept products of its share.
size_t rwkv4_decode_smem_bytes(const Rwkv4DecodeStage& s, int blocks);

// Dynamic shared memory a block may use on the current device (the opt-in maximum less the kernel's
// static shared memory).
size_t rwkv4_decode_smem_available();

// Runs stages[0 .. n) in order, in one cooperative launch (every block resident), each stage's results
// visible to the next. `host` and `device` hold the same stages, in host memory (for the launch
// configuration) and in device memory (read by the kernel); every stage has the same dtype and B.
// `barrier`: RWKV4_DECODE_BARRIER_WORDS unsigned ints in device memory, zero before the first run, used
// by this program only (each run leaves them zero).
cudaError_t rwkv4_decode_run(const Rwkv4DecodeStage* host, const Rwkv4DecodeStage* device, int n,
                             unsigned* barrier, cudaStream_t stream);
