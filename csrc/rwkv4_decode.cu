// RWKV-4 decode stages (see rwkv4_decode.h). Decode is a matrix-vector product per weight matrix, so
// it is bound by reading the weights once; the kernel streams them with 16-byte loads, several in
// flight per lane, and folds the elementwise work around each product into the same stage. One
// persistent launch runs every stage of a token, with a grid-wide barrier between stages: a launch per
// stage cost ~5 us at each of the ~97 boundaries (ramp-up and drain), and a warp can request its next
// stage's weights (which nothing writes) while it waits at the barrier, keeping the memory busy across it.
// Each boundary still costs a prologue and a barrier (~7 us against ~9 us of weights per stage), so a
// layer is two stages, not four: the output projection and the ffn value are split products (split-K)
// over the channels a block owns, added into fp32 accumulators with atomics, and completed by the
// next stage's prologue. Atomics make the summation order, not the rounding points, vary run to run.
//
// Activations are written and read by different blocks within the launch, so they are read through
// L2 (__ldcg), never through the non-coherent read-only path or L1; __ldg is for parameters.
#include "rwkv4_decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <type_traits>

namespace {

// Threads per block; blocks per multiprocessor follow (the kernel is built for 512 threads per SM).
// One block of 512 per SM: half as many blocks repeat each prologue and arrive at each barrier as with
// two of 256 (1.82 against 1.90 ms per token, both at 4 vectors per chunk).
#ifndef RWKV4_DECODE_THREADS
#define RWKV4_DECODE_THREADS 512
#endif
constexpr int kThreads = RWKV4_DECODE_THREADS;
constexpr int kWarps = kThreads / 32;
constexpr int kBlocksPerSm = 512 / kThreads;
constexpr int kRows = 2;  // rows per warp: two weight streams in flight per loop
constexpr int kSplitCopies = RWKV4_DECODE_SPLIT_COPIES;
constexpr unsigned kFull = 0xffffffffu;

__host__ __device__ inline int padded(int K) { return (K + 7) / 8 * 8; }  // each input vector starts 16-byte aligned

// Weights are read once per token: loaded evict-first (ld.global.cs), they pass through L2 without
// evicting what the prologues and the WKV step read (activations, state, layer-norm and mix vectors).
#ifndef RWKV4_DECODE_STREAM_WEIGHTS
#define RWKV4_DECODE_STREAM_WEIGHTS 1
#endif
template <typename T> __device__ __forceinline__ T load_weight(const T* p) {
#if RWKV4_DECODE_STREAM_WEIGHTS
  return __ldcs(p);
#else
  return __ldg(p);
#endif
}

// ---- the weight dtype: 16-byte vectors of it, and rounding to it ---------------------------------
template <typename W> struct Dtype;
template <> struct Dtype<float> {
  static constexpr int N = 4;
  __device__ static float to_float(float x) { return x; }
  __device__ static float from_float(float x) { return x; }
  __device__ static void unpack(const uint4& q, float* f) {
    f[0] = __uint_as_float(q.x), f[1] = __uint_as_float(q.y), f[2] = __uint_as_float(q.z), f[3] = __uint_as_float(q.w);
  }
};
template <> struct Dtype<__half> {
  static constexpr int N = 8;
  __device__ static float to_float(__half x) { return __half2float(x); }
  __device__ static __half from_float(float x) { return __float2half_rn(x); }
  __device__ static void unpack(const uint4& q, float* f) {
    const __half2* h = reinterpret_cast<const __half2*>(&q);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 t = __half22float2(h[i]);
      f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
  }
};
template <> struct Dtype<__nv_bfloat16> {
  static constexpr int N = 8;
  __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  __device__ static __nv_bfloat16 from_float(float x) { return __float2bfloat16_rn(x); }
  __device__ static void unpack(const uint4& q, float* f) {
    const __nv_bfloat162* h = reinterpret_cast<const __nv_bfloat162*>(&q);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const float2 t = __bfloat1622float2(h[i]);
      f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
  }
};

// What the PyTorch model holds in the weight dtype is rounded to it here too.
template <typename W> __device__ float round_to(float x) { return Dtype<W>::to_float(Dtype<W>::from_float(x)); }

// ---- prologue: the GEMV inputs in shared memory, layout [input][b][padded(K)] in the weight dtype --
__device__ float block_sum(float v) {
  __shared__ float partial[kWarps];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  __syncthreads();  // the previous call's readers are done with `partial`
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = v;
  __syncthreads();
  float total = 0.f;
#pragma unroll
  for (int w = 0; w < kWarps; ++w) total += partial[w];
  return total;
}

// Each thread takes kTile elements per pass and loads them all before using any, so a pass costs one
// memory round trip (the prologue runs in every block, ahead of the GEMV: its latency is the cost).
constexpr int kTile = 4;

// Elements row + k0 + j * kThreads of the residual stream, completed by the previous stage's split
// product as the PyTorch model adds it: x + round(acc), or x + round(gate * round(acc)). All loads are
// issued before any is used (one round trip); past the end: 0.
template <typename W>
__device__ void load_residual(const Rwkv4DecodeStage& s, size_t row, int k0, float (&v)[kTile]) {
  const bool add = s.residual_acc != nullptr, gated = s.residual_gate != nullptr;
  float acc[kTile], gate[kTile];
#pragma unroll
  for (int j = 0; j < kTile; ++j) {
    const size_t i = row + min(k0 + j * kThreads, s.K - 1);  // a valid address, the value unused
    v[j] = __ldcg(s.x + i);
    acc[j] = 0.f;
#pragma unroll
    for (int c = 0; c < kSplitCopies; ++c)
      if (add) acc[j] += __ldcg(s.residual_acc + (size_t)c * s.B * s.K + i);
    gate[j] = gated ? __ldcg(s.residual_gate + i) : 1.f;
  }
#pragma unroll
  for (int j = 0; j < kTile; ++j) {
    float t = round_to<W>(acc[j]);
    if (gated) t = round_to<W>(gate[j] * t);
    v[j] = k0 + j * kThreads < s.K ? v[j] + (add ? t : 0.f) : 0.f;
  }
}

// What the layer norm and token shift need besides x, for elements k0 + j * kThreads: independent of
// the previous stage, so loaded alongside x (one round trip).
struct NormParams {
  float w[kTile], b[kTile], prev[kTile], mix[RWKV4_DECODE_MAX_GEMV][kTile];

  __device__ void load(const Rwkv4DecodeStage& s, int b_idx, int k0) {
    const int K = s.K;
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      const int k = min(k0 + j * kThreads, K - 1);  // past the end: a valid address, never stored
      w[j] = __ldg(s.ln_w + k), b[j] = __ldg(s.ln_b + k);
      if (s.shift_prev == nullptr) continue;
      prev[j] = __ldcg(s.shift_prev + (size_t)b_idx * K + k);
#pragma unroll
      for (int i = 0; i < RWKV4_DECODE_MAX_GEMV; ++i)
        if (i < s.n_inputs) mix[i][j] = __ldg(s.mix[i] + k);
    }
  }
};

// The residual's elements k0 + j * kThreads (x values given) -> residual_out, their normed values ->
// ln_out, and each input's mix with the previous token's normed row into shared memory.
template <typename W>
__device__ void store_normed(const Rwkv4DecodeStage& s, W* xs, int b, int k0, const float (&xv)[kTile],
                             const NormParams& p, float mean, float rstd) {
  const int K = s.K, Kp = padded(K);
#pragma unroll
  for (int j = 0; j < kTile; ++j) {
    const int k = k0 + j * kThreads;
    if (k >= K) break;
    const float y = (xv[j] - mean) * rstd * p.w[j] + p.b[j];
    if (blockIdx.x == 0) {
      if (s.residual_out != nullptr) s.residual_out[(size_t)b * K + k] = xv[j];
      if (s.ln_out != nullptr) s.ln_out[(size_t)b * K + k] = y;
    }
    if (s.shift_prev == nullptr) {
      xs[(size_t)b * Kp + k] = Dtype<W>::from_float(y);
      continue;
    }
#pragma unroll
    for (int i = 0; i < RWKV4_DECODE_MAX_GEMV; ++i) {  // torch.lerp(prev, y, m), as the PyTorch model mixes
      if (i >= s.n_inputs) break;
      const float m = p.mix[i][j], q = p.prev[j];
      const float mixed = m < 0.5f ? q + m * (y - q) : y - (y - q) * (1.f - m);
      xs[((size_t)i * s.B + b) * Kp + k] = Dtype<W>::from_float(mixed);
    }
  }
}

template <typename W>
__device__ void layer_norm_prologue(const Rwkv4DecodeStage& s, W* xs) {
  const int K = s.K;
  NormParams p;
  for (int b = 0; b < s.B; ++b) {
    const size_t row = (size_t)b * K;
    float v[kTile];
    if (K <= kTile * kThreads) {  // the row fits one pass: read it and the parameters once, keep them in registers
      load_residual<W>(s, row, threadIdx.x, v);
      p.load(s, b, threadIdx.x);
      float sum = 0.f, sq = 0.f;
#pragma unroll
      for (int j = 0; j < kTile; ++j) sum += v[j];
      const float mean = block_sum(sum) / K;
#pragma unroll
      for (int j = 0; j < kTile; ++j) sq += threadIdx.x + j * kThreads < K ? (v[j] - mean) * (v[j] - mean) : 0.f;
      store_normed(s, xs, b, threadIdx.x, v, p, mean, rsqrtf(block_sum(sq) / K + 1e-5f));
      continue;
    }
    float sum = 0.f, sq = 0.f;
    for (int k0 = threadIdx.x; k0 < K; k0 += kTile * kThreads) {
      load_residual<W>(s, row, k0, v);
#pragma unroll
      for (int j = 0; j < kTile; ++j) sum += v[j];
    }
    const float mean = block_sum(sum) / K;
    for (int k0 = threadIdx.x; k0 < K; k0 += kTile * kThreads) {
      load_residual<W>(s, row, k0, v);
#pragma unroll
      for (int j = 0; j < kTile; ++j) sq += k0 + j * kThreads < K ? (v[j] - mean) * (v[j] - mean) : 0.f;
    }
    const float rstd = rsqrtf(block_sum(sq) / K + 1e-5f);
    for (int k0 = threadIdx.x; k0 < K; k0 += kTile * kThreads) {
      load_residual<W>(s, row, k0, v);
      p.load(s, b, k0);
      store_normed(s, xs, b, k0, v, p, mean, rstd);
    }
  }
}

// ---- the products ----------------------------------------------------------------------------------
// Each block owns a contiguous share of every matrix's rows (shares differ by one row at most, and
// block 0 always has one). Its warps take kRows of those rows at a time (a "group"), numbered across
// the stage's matrices.
struct Share {
  int begin, count;
};

__device__ Share share(int rows) {
  const int G = gridDim.x, q = rows / G, r = rows % G, b = blockIdx.x;
  return {b * q + min(b, r), q + (b < r ? 1 : 0)};
}

__host__ __device__ inline int max_share(int rows, int blocks) { return (rows + blocks - 1) / blocks; }

struct Group {
  int m, row0, nrows;
};

__device__ int group_count(const Rwkv4DecodeStage& s) {
  int total = 0;
  for (int m = 0; m < s.n_gemv; ++m) total += (share(s.gemv[m].rows).count + kRows - 1) / kRows;
  return total;
}

__device__ Group locate(const Rwkv4DecodeStage& s, int g) {
  for (int m = 0;; ++m) {
    const Share own = share(s.gemv[m].rows);
    const int n = (own.count + kRows - 1) / kRows;
    if (g < n) return {m, own.begin + g * kRows, min(kRows, own.count - g * kRows)};
    g -= n;
  }
}

// Kept products (RWKV4_OP_KEEP) sit in shared memory after the prologue's vectors: per kept matrix,
// [b][max_share] floats, indexed by row - share begin.
__host__ __device__ inline size_t input_bytes(const Rwkv4DecodeStage& s) {
  return (size_t)s.n_inputs * s.B * padded(s.K) * (s.dtype == 0 ? 4 : 2);
}

__device__ float* kept(const Rwkv4DecodeStage& s, unsigned char* smem, int m) {
  float* at = reinterpret_cast<float*>(smem + input_bytes(s));
  for (int i = 0; i < m; ++i)
    if (s.gemv[i].op == RWKV4_OP_KEEP) at += s.B * max_share(s.gemv[i].rows, gridDim.x);
  return at;
}

// Vector path (K a multiple of the 16-byte vector width, aligned rows): a lane holds U vectors of
// each of the group's rows per chunk, and two chunks in flight.
template <typename W, int U>
struct Chunk {
  uint4 q[U][kRows];

  __device__ void load(const Rwkv4DecodeStage& s, const Group& g, int i0) {
    const int nvec = s.K / Dtype<W>::N;
    const uint4* w = static_cast<const uint4*>(s.gemv[g.m].weight) + (size_t)g.row0 * nvec;
#pragma unroll
    for (int u = 0; u < U; ++u)
#pragma unroll
      for (int r = 0; r < kRows; ++r) {
        const int i = i0 + 32 * u;
        q[u][r] = (i < nvec && r < g.nrows) ? load_weight(w + (size_t)r * nvec + i) : make_uint4(0, 0, 0, 0);
      }
  }

  template <int NB>
  __device__ void fma(const W* xs, int K, int B, int i0, float (&acc)[kRows][NB]) const {
    constexpr int N = Dtype<W>::N;
    const int nvec = K / N, Kp = padded(K);
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int i = i0 + 32 * u;
      if (i >= nvec) break;
      float wf[kRows][N];
#pragma unroll
      for (int r = 0; r < kRows; ++r) Dtype<W>::unpack(q[u][r], wf[r]);
#pragma unroll
      for (int b = 0; b < NB; ++b) {
        if (b >= B) break;
        float xf[N];
        Dtype<W>::unpack(*reinterpret_cast<const uint4*>(xs + (size_t)b * Kp + i * N), xf);
#pragma unroll
        for (int r = 0; r < kRows; ++r)
#pragma unroll
          for (int e = 0; e < N; ++e) acc[r][b] = fmaf(wf[r][e], xf[e], acc[r][b]);
      }
    }
  }
};

template <typename W, int NB>
__device__ void dot_scalar(const W* w, int nrows, int K, const W* xs, int B, float (&acc)[kRows][NB]) {
  const int Kp = padded(K);
  for (int k = threadIdx.x % 32; k < K; k += 32) {
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      if (r >= nrows) break;
      const float wk = Dtype<W>::to_float(w[(size_t)r * K + k]);
#pragma unroll
      for (int b = 0; b < NB; ++b)
        if (b < B) acc[r][b] = fmaf(wk, Dtype<W>::to_float(xs[(size_t)b * Kp + k]), acc[r][b]);
    }
  }
}

template <typename W>
__device__ void epilogue(const Rwkv4DecodeStage& s, unsigned char* smem, const Group& g, int row, int b, float acc) {
  const Rwkv4Gemv& gemv = s.gemv[g.m];
  const float y = round_to<W>(acc);
  switch (gemv.op) {
    case RWKV4_OP_STORE: gemv.out[(size_t)b * gemv.rows + row] = y; break;
    case RWKV4_OP_SIGMOID: gemv.out[(size_t)b * gemv.rows + row] = round_to<W>(1.f / (1.f + expf(-y))); break;
    case RWKV4_OP_KEEP:
      kept(s, smem, g.m)[b * max_share(gemv.rows, gridDim.x) + row - share(gemv.rows).begin] = y;
      break;
  }
}

template <typename W, int NB>
__device__ void reduce_and_store(const Rwkv4DecodeStage& s, unsigned char* smem, const Group& g,
                                 float (&acc)[kRows][NB]) {
#pragma unroll
  for (int r = 0; r < kRows; ++r)
#pragma unroll
    for (int b = 0; b < NB; ++b)
      for (int o = 16; o > 0; o >>= 1) acc[r][b] += __shfl_xor_sync(kFull, acc[r][b], o);
  if (threadIdx.x % 32 == 0) {
#pragma unroll
    for (int r = 0; r < kRows; ++r)
#pragma unroll
      for (int b = 0; b < NB; ++b)
        if (r < g.nrows && b < s.B) epilogue<W>(s, smem, g, g.row0 + r, b, acc[r][b]);
  }
}

// ---- channel step and split product, on the channels this block owns (its share of gemv 0) ---------
// A WKV channel's state and parameters. Only the owner reads and writes them, so each thread loads
// those of its first channel when the stage starts and parks them in shared memory after the prologue
// (registers are short during the products): the step does not wait for them.
struct WkvState {
  float aa, bb, pp, w, u;

  __device__ void load(const Rwkv4DecodeStage& s, const Share& own, int t) {  // t: b * own.count + channel
    const int c = own.begin + t % own.count;
    const size_t i = (size_t)(t / own.count) * s.K + c;
    aa = __ldcg(s.aa + i), bb = __ldcg(s.bb + i), pp = __ldcg(s.pp + i), w = __ldg(s.w + c), u = __ldg(s.u + c);
  }

  __device__ static bool first_wanted(const Rwkv4DecodeStage& s) {
    return s.channel_step == RWKV4_CHANNEL_WKV && threadIdx.x < s.B * share(s.gemv[0].rows).count;
  }
};

// The step's result replaces gemv 0's kept values. WKV: one step of the recurrence of
// kernels/wkv_reference.py per channel, times sigmoid(receptance); the owner updates the state in place.
template <typename W>
__device__ void channel_step(const Rwkv4DecodeStage& s, unsigned char* smem, const WkvState* first) {
  const Share own = share(s.gemv[0].rows);
  const int stride = max_share(s.gemv[0].rows, gridDim.x);
  float* z = kept(s, smem, 0);
  for (int t = threadIdx.x; t < s.B * own.count; t += kThreads) {
    const int b = t / own.count, j = t % own.count, at = b * stride + j;
    if (s.channel_step == RWKV4_CHANNEL_RELU_SQUARE) {
      const float y = fmaxf(z[at], 0.f);
      z[at] = round_to<W>(y * y);
      continue;
    }
    WkvState st;
    if (t == threadIdx.x) st = first[t];
    else st.load(s, own, t);
    const float k = z[at], v = kept(s, smem, 1)[at];
    const float r = round_to<W>(1.f / (1.f + expf(-kept(s, smem, 2)[at])));
    float ww = st.u + k, p = fmaxf(st.pp, ww), e1 = expf(st.pp - p), e2 = expf(ww - p);
    z[at] = round_to<W>(r * round_to<W>((e1 * st.aa + e2 * v) / (e1 * st.bb + e2)));
    ww = st.pp + st.w, p = fmaxf(ww, k), e1 = expf(ww - p), e2 = expf(k - p);
    const size_t i = (size_t)b * s.K + own.begin + j;
    s.aa[i] = e1 * st.aa + e2 * v, s.bb[i] = e1 * st.bb + e2, s.pp[i] = p;
  }
}

// V adjacent elements of a split weight row: one 8- or 16-byte load for V = 4, held packed until used
// (kSplitDepth rows of them are in flight per thread).
template <typename W, int V>
struct SplitVec {
  using Raw = std::conditional_t<V == 1, W, std::conditional_t<sizeof(W) == 4, uint4, uint2>>;
  Raw q;

  __device__ void load(const W* w) { q = load_weight(reinterpret_cast<const Raw*>(w)); }

  __device__ void unpack(float (&f)[V]) const {
    if constexpr (V == 1) {
      f[0] = Dtype<W>::to_float(q);
    } else if constexpr (sizeof(W) == 4) {
      Dtype<W>::unpack(q, f);
    } else {
      float g[8];
      Dtype<W>::unpack(make_uint4(q.x, q.y, 0, 0), g);
#pragma unroll
      for (int e = 0; e < 4; ++e) f[e] = g[e];
    }
  }
};

template <int V>
__device__ void atomic_add(float* p, const float (&v)[V]) {
#if __CUDA_ARCH__ >= 900
  if constexpr (V == 4) {
    atomicAdd(reinterpret_cast<float4*>(p), make_float4(v[0], v[1], v[2], v[3]));
  } else
#endif
  {
#pragma unroll
    for (int e = 0; e < V; ++e) atomicAdd(p + e, v[e]);
  }
}

// split_acc (B, K) += split_weight[own rows]^T . z (into this block's copy). A thread takes V adjacent
// outputs and kSplitDepth rows per round trip, and adds its partial sums with one atomic per output
// (per 4 on sm_90).
constexpr int kSplitDepth = 8;

template <typename W, int NB, int V>
__device__ void split_product(const Rwkv4DecodeStage& s, unsigned char* smem) {
  const Share own = share(s.gemv[0].rows);
  const int stride = max_share(s.gemv[0].rows, gridDim.x), K = s.K;
  const float* z = kept(s, smem, 0);
  const W* wt = static_cast<const W*>(s.split_weight) + (size_t)own.begin * K;
  for (int i0 = threadIdx.x * V; i0 < K; i0 += V * kThreads) {
    float acc[NB][V] = {};
    for (int j0 = 0; j0 < own.count; j0 += kSplitDepth) {
      SplitVec<W, V> q[kSplitDepth];
#pragma unroll
      for (int d = 0; d < kSplitDepth; ++d)
        if (j0 + d < own.count) q[d].load(wt + (size_t)(j0 + d) * K + i0);
#pragma unroll
      for (int d = 0; d < kSplitDepth; ++d) {
        if (j0 + d >= own.count) break;
        float w[V];
        q[d].unpack(w);
#pragma unroll
        for (int b = 0; b < NB; ++b) {
          if (b >= s.B) break;
          const float zb = z[b * stride + j0 + d];
#pragma unroll
          for (int e = 0; e < V; ++e) acc[b][e] = fmaf(w[e], zb, acc[b][e]);
        }
      }
    }
#pragma unroll
    for (int b = 0; b < NB; ++b)
      if (b < s.B) atomic_add<V>(s.split_acc + ((size_t)(blockIdx.x % kSplitCopies) * s.B + b) * K + i0, acc[b]);
  }
}

template <typename W, int NB, int V>
__device__ void channel_step_and_split(const Rwkv4DecodeStage& s, unsigned char* smem, const WkvState* first) {
  if (s.channel_step == RWKV4_CHANNEL_NONE || share(s.gemv[0].rows).count == 0) return;
  __syncthreads();  // the block's kept products are in
  channel_step<W>(s, smem, first);
  __syncthreads();
  split_product<W, NB, V>(s, smem);
}

// ---- the grid-wide barrier ---------------------------------------------------------------------------
// barrier[0] counts arrivals over the whole launch: barrier j (from 1) is passed once it reaches
// j * gridDim.x. barrier[kDoneCounter] (another cache line) counts blocks done; the last one out zeroes both for
// the next launch, when no block can be reading them any more. As CUTLASS's generic barrier:
// __syncthreads, then one thread per block publishes the block's writes (release) and waits (acquire).
// Split in two so a warp can request its next weights between arriving and waiting.
constexpr int kDoneCounter = RWKV4_DECODE_COUNTER_WORDS / 2;

__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

__device__ __forceinline__ unsigned add_acq_rel(unsigned* p, unsigned v) {
  unsigned old;
  asm volatile("atom.acq_rel.gpu.global.add.u32 %0, [%1], %2;" : "=r"(old) : "l"(p), "r"(v) : "memory");
  return old;
}

__device__ void barrier_arrive(unsigned* barrier) {
  __syncthreads();  // the block's writes of this stage are done
  if (threadIdx.x == 0) add_acq_rel(barrier, 1u);
}

__device__ void barrier_wait(const unsigned* barrier, int j) {
  if (threadIdx.x == 0)
    while (load_acquire(barrier) < (unsigned)j * gridDim.x) {
    }
  __syncthreads();
}

__device__ void barrier_reset_on_exit(unsigned* barrier) {
  if (threadIdx.x == 0 && add_acq_rel(barrier + kDoneCounter, 1u) == gridDim.x - 1)
    barrier[0] = 0, barrier[kDoneCounter] = 0;
}

// ---- the program: the stages in order, one persistent launch ----------------------------------------
// Trace builds (RWKV4_DECODE_TRACE, benchmarks/decode_trace.py): thread 0 of each block stamps clock64()
// at four points of each stage (start, prologue done, products done, arrived) after the counters.
__device__ __forceinline__ void stamp(unsigned* barrier, int stage, int event) {
#ifdef RWKV4_DECODE_TRACE
  if (threadIdx.x == 0 && stage < RWKV4_DECODE_TRACE_STAGES && gridDim.x <= RWKV4_DECODE_TRACE_BLOCKS)
    reinterpret_cast<long long*>(barrier + RWKV4_DECODE_COUNTER_WORDS)[((size_t)stage * gridDim.x + blockIdx.x) * 4 + event] =
        clock64();
#endif
}

// Blocks that own no rows in the stage skip its prologue; block 0 always owns some, and it alone writes
// residual_out and ln_out.
template <typename W>
__device__ void prologue(const Rwkv4DecodeStage& s, W* xs) {
  if (group_count(s) == 0) return;
  layer_norm_prologue(s, xs);
  __syncthreads();
}

// The stage's copies (and zeroings, for copies with no source), after the block's products: every
// block takes the same small share, done by its last warp (the one with the fewest groups). Ahead of
// the prologue they cost its loads a round trip (a store waits for its copy's load, and no load after
// it may pass a store that could alias it), and in the blocks holding them that held up every barrier.
__device__ void side_copies(const Rwkv4DecodeStage& s) {
  if (threadIdx.x / 32 != kWarps - 1) return;
  for (int c = 0; c < s.n_copies; ++c)
    for (int i = (threadIdx.x % 32) * gridDim.x + blockIdx.x; i < s.copy[c].n; i += 32 * gridDim.x)
      s.copy[c].dst[i] = s.copy[c].src != nullptr ? __ldcg(s.copy[c].src + i) : 0.f;
}

// 16-byte vectors per lane and row in a chunk (two chunks in flight per warp). Every request in
// flight queues ahead of the next prologue's reads of x and of the barrier's polling, so the right
// amount is what covers the memory latency, not the most the registers hold: at 512 threads per SM,
// 2 (64 KiB per SM in flight) gave 1.71 ms per token, 4 gave 1.82 and 1 gave 1.79 (H100, 1.5B).
#ifndef RWKV4_DECODE_UNROLL
#define RWKV4_DECODE_UNROLL 2
#endif
constexpr int kUnroll = RWKV4_DECODE_UNROLL;

// Vector path. As soon as the products of one group have consumed its weights, the warp requests the
// first two chunks of its next group in the stage, then reduces and stores; once its block has arrived
// at the barrier, it requests the first chunks of its first group of the next stage, which arrive while
// it waits.
template <typename W, int NB>
__global__ void __launch_bounds__(kThreads, kBlocksPerSm)
    decode_program_vector(const Rwkv4DecodeStage* __restrict__ stages, int n_stages, unsigned* barrier) {
  constexpr int U = NB <= 2 ? kUnroll : (kUnroll + 1) / 2, kStep = 32 * U;
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ WkvState wkv_first[kThreads];
  W* xs = reinterpret_cast<W*>(smem);
  const int lane = threadIdx.x % 32, first = threadIdx.x / 32;
  Chunk<W, U> c0, c1;
  auto request = [&](const Rwkv4DecodeStage& s, int g) {
    const Group grp = locate(s, g);
    c0.load(s, grp, lane), c1.load(s, grp, lane + kStep);
  };
  if (first < group_count(stages[0])) request(stages[0], first);
  for (int i = 0; i < n_stages; ++i) {
    const Rwkv4DecodeStage& s = stages[i];
    const bool last_stage = i + 1 == n_stages;
    const bool next_has_group = !last_stage && first < group_count(stages[i + 1]);
    stamp(barrier, i, 0);
    WkvState wkv;
    const bool wkv_wanted = WkvState::first_wanted(s);
    if (wkv_wanted) wkv.load(s, share(s.gemv[0].rows), threadIdx.x);
    prologue(s, xs);
    if (wkv_wanted) wkv_first[threadIdx.x] = wkv;
    stamp(barrier, i, 1);
    const int total = group_count(s), nvec = s.K / Dtype<W>::N;
    for (int g = first; g < total; g += kWarps) {
      const Group grp = locate(s, g);
      const W* x = xs + (size_t)s.gemv[grp.m].input * s.B * padded(s.K);
      float acc[kRows][NB] = {};
      for (int i0 = lane; i0 < nvec; i0 += 2 * kStep) {  // use one chunk while the other loads
        c0.fma(x, s.K, s.B, i0, acc);
        c0.load(s, grp, i0 + 2 * kStep);
        c1.fma(x, s.K, s.B, i0 + kStep, acc);
        c1.load(s, grp, i0 + 3 * kStep);
      }
      if (g + kWarps < total) request(s, g + kWarps);
      reduce_and_store<W, NB>(s, smem, grp, acc);
    }
    side_copies(s);
    channel_step_and_split<W, NB, 4>(s, smem, wkv_first);
    if (last_stage) break;
#ifdef RWKV4_DECODE_TRACE
    __syncthreads();
#endif
    stamp(barrier, i, 2);
    barrier_arrive(barrier);
    stamp(barrier, i, 3);
    if (next_has_group) request(stages[i + 1], first);  // after arriving: a release waits for loads in flight
    barrier_wait(barrier, i + 1);
  }
  barrier_reset_on_exit(barrier);
}

template <typename W, int NB>
__global__ void __launch_bounds__(kThreads)
    decode_program_scalar(const Rwkv4DecodeStage* __restrict__ stages, int n_stages, unsigned* barrier) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ WkvState wkv_first[kThreads];
  W* xs = reinterpret_cast<W*>(smem);
  for (int i = 0; i < n_stages; ++i) {
    const Rwkv4DecodeStage& s = stages[i];
    WkvState wkv;
    const bool wkv_wanted = WkvState::first_wanted(s);
    if (wkv_wanted) wkv.load(s, share(s.gemv[0].rows), threadIdx.x);
    prologue(s, xs);
    if (wkv_wanted) wkv_first[threadIdx.x] = wkv;
    const int total = group_count(s);
    for (int g = threadIdx.x / 32; g < total; g += kWarps) {
      const Group grp = locate(s, g);
      const W* w = static_cast<const W*>(s.gemv[grp.m].weight) + (size_t)grp.row0 * s.K;
      float acc[kRows][NB] = {};
      dot_scalar<W, NB>(w, grp.nrows, s.K, xs + (size_t)s.gemv[grp.m].input * s.B * padded(s.K), s.B, acc);
      reduce_and_store<W, NB>(s, smem, grp, acc);
    }
    side_copies(s);
    channel_step_and_split<W, NB, 1>(s, smem, wkv_first);
    if (i + 1 < n_stages) barrier_arrive(barrier), barrier_wait(barrier, i + 1);
  }
  barrier_reset_on_exit(barrier);
}

template <typename W, int NB, bool kVector>
cudaError_t launch(const Rwkv4DecodeStage* stages, int n, unsigned* barrier, size_t smem, cudaStream_t stream) {
  auto kernel = kVector ? decode_program_vector<W, NB> : decode_program_scalar<W, NB>;
  int device = 0, sms = 0, per_sm = 0;
  cudaGetDevice(&device);
  // Raise the kernel's shared-memory cap once per device (and size), not on every launch.
  static size_t granted[64] = {};
  cudaError_t err = cudaSuccess;
  if (device >= 64 || smem > granted[device]) {
    err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
    if (device < 64) granted[device] = smem;
  }
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, kThreads, smem);
  if (err != cudaSuccess) return err;
  if (per_sm == 0) return cudaErrorInvalidConfiguration;
  // Every block resident (the barrier needs it; the cooperative launch guarantees it or fails).
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(per_sm * sms), config.blockDim = dim3(kThreads), config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute cooperative[1];
  cooperative[0].id = cudaLaunchAttributeCooperative;
  cooperative[0].val.cooperative = 1;
  config.attrs = cooperative, config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, stages, n, barrier);
}

template <typename W, bool kVector>
cudaError_t launch_batch(const Rwkv4DecodeStage* stages, int n, unsigned* barrier, int B, size_t smem, cudaStream_t stream) {
  if (B <= 1) return launch<W, 1, kVector>(stages, n, barrier, smem, stream);
  if (B <= 2) return launch<W, 2, kVector>(stages, n, barrier, smem, stream);
  if (B <= 4) return launch<W, 4, kVector>(stages, n, barrier, smem, stream);
  return launch<W, 8, kVector>(stages, n, barrier, smem, stream);
}

// The 16-byte path when every stage's rows are whole vectors and every matrix starts 16-byte aligned.
template <typename W>
cudaError_t launch_dtype(const Rwkv4DecodeStage* host, const Rwkv4DecodeStage* device, int n, unsigned* barrier,
                         size_t smem, cudaStream_t stream) {
  auto aligned = [](const void* p) { return reinterpret_cast<size_t>(p) % 16 == 0; };
  bool vector = true;
  for (int i = 0; i < n; ++i) {
    vector = vector && host[i].K % Dtype<W>::N == 0 && (host[i].split_weight == nullptr || aligned(host[i].split_weight));
    for (int m = 0; m < host[i].n_gemv; ++m) vector = vector && aligned(host[i].gemv[m].weight);
  }
  const int B = host[0].B;
  return vector ? launch_batch<W, true>(device, n, barrier, B, smem, stream)
                : launch_batch<W, false>(device, n, barrier, B, smem, stream);
}

bool valid(const Rwkv4DecodeStage& s, const Rwkv4DecodeStage& first) {
  bool ok = s.dtype == first.dtype && s.B == first.B && s.B >= 1 && s.B <= RWKV4_DECODE_MAX_BATCH &&
            s.n_gemv >= 1 && s.n_gemv <= RWKV4_DECODE_MAX_GEMV && s.n_inputs >= 1 &&
            s.n_inputs <= RWKV4_DECODE_MAX_GEMV && s.n_copies >= 0 && s.n_copies <= RWKV4_DECODE_MAX_COPIES;
  if (!ok || s.channel_step == RWKV4_CHANNEL_NONE) return ok && s.channel_step == RWKV4_CHANNEL_NONE;
  const int kept_needed = s.channel_step == RWKV4_CHANNEL_WKV ? 3 : 1;  // gemvs the step reads
  ok = s.n_gemv >= kept_needed && s.split_weight != nullptr && s.split_acc != nullptr;
  for (int m = 0; ok && m < kept_needed; ++m)
    ok = s.gemv[m].op == RWKV4_OP_KEEP && (kept_needed == 1 || s.gemv[m].rows == s.K);
  return ok && (s.channel_step == RWKV4_CHANNEL_RELU_SQUARE ||
                (s.channel_step == RWKV4_CHANNEL_WKV && s.w && s.u && s.aa && s.bb && s.pp));
}

}  // namespace

size_t rwkv4_decode_smem_available() {
  int device = 0, optin = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  cudaFuncAttributes attributes{};  // every instantiation has the same static shared memory
  if (cudaFuncGetAttributes(&attributes, decode_program_vector<__half, 1>) != cudaSuccess) return 0;
  return optin > (int)attributes.sharedSizeBytes ? optin - attributes.sharedSizeBytes : 0;
}

size_t rwkv4_decode_smem_bytes(const Rwkv4DecodeStage& s, int blocks) {
  size_t bytes = input_bytes(s);
  for (int m = 0; m < s.n_gemv; ++m)
    if (s.gemv[m].op == RWKV4_OP_KEEP) bytes += (size_t)s.B * max_share(s.gemv[m].rows, blocks) * sizeof(float);
  return bytes;
}

cudaError_t rwkv4_decode_run(const Rwkv4DecodeStage* host, const Rwkv4DecodeStage* device, int n,
                             unsigned* barrier, cudaStream_t stream) {
  if (n < 1) return cudaErrorInvalidValue;
  int dev = 0, sms = 0;
  cudaGetDevice(&dev);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  size_t smem = 0;
  for (int i = 0; i < n; ++i) {
    if (!valid(host[i], host[0])) return cudaErrorInvalidValue;
    smem = std::max(smem, rwkv4_decode_smem_bytes(host[i], sms));  // the grid has at least one block per SM
  }
  if (host[0].dtype == 0) return launch_dtype<float>(host, device, n, barrier, smem, stream);
  if (host[0].dtype == 1) return launch_dtype<__nv_bfloat16>(host, device, n, barrier, smem, stream);
  if (host[0].dtype == 2) return launch_dtype<__half>(host, device, n, barrier, smem, stream);
  return cudaErrorInvalidValue;
}
