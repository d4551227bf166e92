// RWKV-4 decode (one token per sequence) as a program of fused stages, four per layer, all run by one
// persistent kernel launch with a grid-wide barrier between stages: host API. Free of torch headers so
// it compiles on its own (nvcc -c).
//
// A "stage": a prologue builds up to three GEMV input vectors in shared memory (from
// the residual stream through a layer norm and the token shift, or from a plain input, or from the
// WKV step), then up to three weight matrices are multiplied by them (fp32 accumulation, one warp per
// two rows, 16-byte weight loads) and each product goes through its epilogue. A layer is
//   1. ln1, shift        -> key, value, receptance (sigmoid)
//   2. WKV step, r * wkv -> output projection added to the residual
//   3. ln2, shift        -> ffn key (relu^2), ffn receptance (sigmoid)
//   4. ffn key           -> ffn value, gated and added to the residual
// Rounding follows the plain PyTorch model: every GEMV result, sigmoid, relu^2 and r * wkv is rounded
// to the weight dtype where the PyTorch model holds it in that dtype.
//
// Layouts: activations (B, n) float32 contiguous; weights (rows, K) row-major (nn.Linear's layout) in
// dtype 0 = float32, 1 = bfloat16, 2 = float16.
#pragma once
#include <cuda_runtime.h>
#include <cstddef>

enum Rwkv4Prologue { RWKV4_PRO_INPUT = 0, RWKV4_PRO_LAYER_NORM = 1, RWKV4_PRO_WKV = 2 };
enum Rwkv4Epilogue {
  RWKV4_OP_STORE = 0,        // out = y
  RWKV4_OP_ADD = 1,          // out += y
  RWKV4_OP_SIGMOID = 2,      // out = sigmoid(y)
  RWKV4_OP_RELU_SQUARE = 3,  // out = relu(y)^2
  RWKV4_OP_GATED_ADD = 4,    // out += gate * y
};

#define RWKV4_DECODE_MAX_GEMV 3
#define RWKV4_DECODE_MAX_COPIES 4
#define RWKV4_DECODE_MAX_BATCH 8
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
  float* out;          // (B, rows)
  const float* gate;   // (B, rows), RWKV4_OP_GATED_ADD only
};

struct Rwkv4Copy {  // done by the stage on the side: dst[i] = src[i] (state updates)
  const float* src;
  float* dst;
  int n;
};

struct Rwkv4DecodeStage {
  int dtype, B, K;
  int prologue;
  // INPUT: the GEMV input (B, K). LAYER_NORM: the residual stream (B, K). WKV: the receptance (B, K),
  // sigmoid already applied.
  const float* x;
  // LAYER_NORM: weight and bias (K); ln_out (B, K, may be null) receives the normed vector.
  // shift_prev (B, K, may be null): the previous token's normed vector; with it, input i is
  // ln * mix[i] + prev * (1 - mix[i]) (token shift), without it the single input is ln itself.
  const float *ln_w, *ln_b;
  float* ln_out;
  const float* shift_prev;
  const float* mix[RWKV4_DECODE_MAX_GEMV];
  int n_inputs;
  // WKV: key, value (B, K), log-decay w = -exp(time_decay) and bonus u (K), the state in and (written
  // once, by block 0) the state out, all (B, K).
  const float *k, *v, *w, *u, *aa, *bb, *pp;
  float *aa_out, *bb_out, *pp_out;
  Rwkv4Gemv gemv[RWKV4_DECODE_MAX_GEMV];
  int n_gemv;
  Rwkv4Copy copy[RWKV4_DECODE_MAX_COPIES];
  int n_copies;
};

// Dynamic shared memory the stage needs per block (its prologue vectors).
size_t rwkv4_decode_smem_bytes(const Rwkv4DecodeStage& s);

// Runs stages[0 .. n) in order, in one cooperative launch (every block resident), each stage's results
// visible to the next. `host` and `device` hold the same stages, in host memory (for the launch
// configuration) and in device memory (read by the kernel); every stage has the same dtype and B.
// `barrier`: RWKV4_DECODE_BARRIER_WORDS unsigned ints in device memory, zero before the first run, used
// by this program only (each run leaves them zero).
cudaError_t rwkv4_decode_run(const Rwkv4DecodeStage* host, const Rwkv4DecodeStage* device, int n,
                             unsigned* barrier, cudaStream_t stream);
