// RWKV-4 decode stages (see rwkv4_decode.h). Decode is a matrix-vector product per weight matrix, so
// it is bound by reading the weights once; these kernels stream them with 16-byte loads, several in
// flight per lane, and fold the elementwise work around each product into the same launch.
#include "rwkv4_decode.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>

namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
constexpr int kRows = 2;  // rows per warp: two weight streams in flight per loop
constexpr unsigned kFull = 0xffffffffu;

__host__ __device__ inline int padded(int K) { return (K + 7) / 8 * 8; }  // each input vector starts 16-byte aligned

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

template <typename W>
__device__ void layer_norm_prologue(const Rwkv4DecodeStage& s, W* xs) {
  const int K = s.K, Kp = padded(K);
  for (int b = 0; b < s.B; ++b) {
    const float* x = s.x + (size_t)b * K;
    float sum = 0.f, sq = 0.f;
    for (int k0 = threadIdx.x; k0 < K; k0 += kTile * kThreads) {
      float v[kTile];
#pragma unroll
      for (int j = 0; j < kTile; ++j) v[j] = k0 + j * kThreads < K ? __ldg(x + k0 + j * kThreads) : 0.f;
#pragma unroll
      for (int j = 0; j < kTile; ++j) sum += v[j];
    }
    const float mean = block_sum(sum) / K;
    for (int k0 = threadIdx.x; k0 < K; k0 += kTile * kThreads) {
      float d[kTile];
#pragma unroll
      for (int j = 0; j < kTile; ++j) d[j] = k0 + j * kThreads < K ? __ldg(x + k0 + j * kThreads) - mean : 0.f;
#pragma unroll
      for (int j = 0; j < kTile; ++j) sq += d[j] * d[j];
    }
    const float rstd = rsqrtf(block_sum(sq) / K + 1e-5f);
    for (int k0 = threadIdx.x; k0 < K; k0 += kTile * kThreads) {
      float y[kTile], prev[kTile], mix[RWKV4_DECODE_MAX_GEMV][kTile];
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        const int k = min(k0 + j * kThreads, K - 1);  // past the end: a valid address, never stored
        y[j] = (__ldg(x + k) - mean) * rstd * __ldg(s.ln_w + k) + __ldg(s.ln_b + k);
        if (s.shift_prev == nullptr) continue;
        prev[j] = __ldg(s.shift_prev + (size_t)b * K + k);
#pragma unroll
        for (int i = 0; i < RWKV4_DECODE_MAX_GEMV; ++i)
          if (i < s.n_inputs) mix[i][j] = __ldg(s.mix[i] + k);
      }
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        const int k = k0 + j * kThreads;
        if (k >= K) break;
        if (s.ln_out != nullptr && blockIdx.x == 0) s.ln_out[(size_t)b * K + k] = y[j];
        if (s.shift_prev == nullptr) {
          xs[(size_t)b * Kp + k] = Dtype<W>::from_float(y[j]);
          continue;
        }
#pragma unroll
        for (int i = 0; i < RWKV4_DECODE_MAX_GEMV; ++i) {  // torch.lerp(prev, y, m), as the PyTorch model mixes
          if (i >= s.n_inputs) break;
          const float m = mix[i][j], p = prev[j];
          const float mixed = m < 0.5f ? p + m * (y[j] - p) : y[j] - (y[j] - p) * (1.f - m);
          xs[((size_t)i * s.B + b) * Kp + k] = Dtype<W>::from_float(mixed);
        }
      }
    }
  }
}

// One WKV step per channel (the recurrence of kernels/wkv_reference.py), times the receptance. Every
// block computes the outputs it needs; block 0 alone writes the new state.
template <typename W>
__device__ void wkv_prologue(const Rwkv4DecodeStage& s, W* xs) {
  const int K = s.K, Kp = padded(K), n = s.B * K;
  for (int i0 = threadIdx.x; i0 < n; i0 += kTile * kThreads) {
    float k[kTile], v[kTile], r[kTile], aa[kTile], bb[kTile], pp[kTile], u[kTile], w[kTile];
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      const int i = min(i0 + j * kThreads, n - 1), c = i % K;
      k[j] = __ldg(s.k + i), v[j] = __ldg(s.v + i), r[j] = __ldg(s.x + i);
      aa[j] = __ldg(s.aa + i), bb[j] = __ldg(s.bb + i), pp[j] = __ldg(s.pp + i);
      u[j] = __ldg(s.u + c), w[j] = __ldg(s.w + c);
    }
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      const int i = i0 + j * kThreads;
      if (i >= n) break;
      float ww = u[j] + k[j];
      float p = fmaxf(pp[j], ww);
      float e1 = expf(pp[j] - p), e2 = expf(ww - p);
      const float y = round_to<W>((e1 * aa[j] + e2 * v[j]) / (e1 * bb[j] + e2));
      xs[(size_t)(i / K) * Kp + i % K] = Dtype<W>::from_float(r[j] * y);
      if (blockIdx.x == 0) {
        ww = pp[j] + w[j];
        p = fmaxf(ww, k[j]);
        e1 = expf(ww - p), e2 = expf(k[j] - p);
        s.aa_out[i] = e1 * aa[j] + e2 * v[j];
        s.bb_out[i] = e1 * bb[j] + e2;
        s.pp_out[i] = p;
      }
    }
  }
}

template <typename W>
__device__ void input_prologue(const Rwkv4DecodeStage& s, W* xs) {
  const int K = s.K, Kp = padded(K), n = s.B * K;
  for (int i0 = threadIdx.x; i0 < n; i0 += kTile * kThreads) {
    float v[kTile];
#pragma unroll
    for (int j = 0; j < kTile; ++j) v[j] = __ldg(s.x + min(i0 + j * kThreads, n - 1));
#pragma unroll
    for (int j = 0; j < kTile; ++j) {
      const int i = i0 + j * kThreads;
      if (i >= n) break;
      xs[(size_t)(i / K) * Kp + i % K] = Dtype<W>::from_float(v[j]);
    }
  }
}

// ---- the products ----------------------------------------------------------------------------------
// A warp computes kRows rows at a time (a "group"); groups are numbered across the stage's matrices.
struct Group {
  int m, row0, nrows;
};

__device__ int group_count(const Rwkv4DecodeStage& s) {
  int total = 0;
  for (int m = 0; m < s.n_gemv; ++m) total += (s.gemv[m].rows + kRows - 1) / kRows;
  return total;
}

__device__ Group locate(const Rwkv4DecodeStage& s, int g) {
  int m = 0;
  while (g >= (s.gemv[m].rows + kRows - 1) / kRows) g -= (s.gemv[m].rows + kRows - 1) / kRows, ++m;
  return {m, g * kRows, min(kRows, s.gemv[m].rows - g * kRows)};
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
        q[u][r] = (i < nvec && r < g.nrows) ? __ldg(w + (size_t)r * nvec + i) : make_uint4(0, 0, 0, 0);
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
__device__ void epilogue(const Rwkv4Gemv& g, int row, int b, float acc) {
  const size_t at = (size_t)b * g.rows + row;
  const float y = round_to<W>(acc);
  switch (g.op) {
    case RWKV4_OP_STORE: g.out[at] = y; break;
    case RWKV4_OP_ADD: g.out[at] += y; break;
    case RWKV4_OP_SIGMOID: g.out[at] = round_to<W>(1.f / (1.f + expf(-y))); break;
    case RWKV4_OP_RELU_SQUARE: g.out[at] = round_to<W>(fmaxf(y, 0.f) * fmaxf(y, 0.f)); break;
    case RWKV4_OP_GATED_ADD: g.out[at] += round_to<W>(g.gate[at] * y); break;
  }
}

template <typename W, int NB>
__device__ void reduce_and_store(const Rwkv4DecodeStage& s, const Group& g, float (&acc)[kRows][NB]) {
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
        if (r < g.nrows && b < s.B) epilogue<W>(s.gemv[g.m], g.row0 + r, b, acc[r][b]);
  }
}

// Programmatic dependent launch (Hopper): a stage launches while the previous one drains, requests
// its weights (which no stage writes), then waits for the previous stage's results before touching
// anything else. Before sm_90 both are no-ops and launches are ordered as usual.
__device__ __forceinline__ void wait_for_previous_stage() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void let_next_stage_launch() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

template <typename W>
__device__ void prologue_and_copies(const Rwkv4DecodeStage& s, W* xs) {
  wait_for_previous_stage();
  let_next_stage_launch();
  for (int c = 0; c < s.n_copies; ++c)
    for (int i = blockIdx.x * kThreads + threadIdx.x; i < s.copy[c].n; i += gridDim.x * kThreads)
      s.copy[c].dst[i] = s.copy[c].src[i];
  if (s.prologue == RWKV4_PRO_LAYER_NORM) layer_norm_prologue(s, xs);
  else if (s.prologue == RWKV4_PRO_WKV) wkv_prologue(s, xs);
  else input_prologue(s, xs);
  __syncthreads();
}

template <typename W, int NB>
__global__ void __launch_bounds__(kThreads, 2) decode_stage_vector(const __grid_constant__ Rwkv4DecodeStage s) {
  constexpr int U = NB <= 2 ? 4 : 2, kStep = 32 * U;
  extern __shared__ __align__(16) unsigned char smem[];
  W* xs = reinterpret_cast<W*>(smem);
  const int total = group_count(s), lane = threadIdx.x % 32, nvec = s.K / Dtype<W>::N;
  int g = blockIdx.x * kWarps + threadIdx.x / 32;
  // The first two chunks of this warp's first group are requested before the prologue (and before
  // waiting for the previous stage): the weights depend on neither.
  Chunk<W, U> c0, c1;
  if (g < total) {
    const Group grp = locate(s, g);
    c0.load(s, grp, lane), c1.load(s, grp, lane + kStep);
  }
  prologue_and_copies(s, xs);
  for (bool first = true; g < total; g += gridDim.x * kWarps, first = false) {
    const Group grp = locate(s, g);
    if (!first) c0.load(s, grp, lane), c1.load(s, grp, lane + kStep);
    const W* x = xs + (size_t)s.gemv[grp.m].input * s.B * padded(s.K);
    float acc[kRows][NB] = {};
    for (int i0 = lane; i0 < nvec; i0 += 2 * kStep) {  // use one chunk while the other loads
      c0.fma(x, s.K, s.B, i0, acc);
      c0.load(s, grp, i0 + 2 * kStep);
      c1.fma(x, s.K, s.B, i0 + kStep, acc);
      c1.load(s, grp, i0 + 3 * kStep);
    }
    reduce_and_store<W, NB>(s, grp, acc);
  }
}

template <typename W, int NB>
__global__ void __launch_bounds__(kThreads) decode_stage_scalar(const __grid_constant__ Rwkv4DecodeStage s) {
  extern __shared__ __align__(16) unsigned char smem[];
  W* xs = reinterpret_cast<W*>(smem);
  prologue_and_copies(s, xs);
  const int total = group_count(s);
  for (int g = blockIdx.x * kWarps + threadIdx.x / 32; g < total; g += gridDim.x * kWarps) {
    const Group grp = locate(s, g);
    const W* w = static_cast<const W*>(s.gemv[grp.m].weight) + (size_t)grp.row0 * s.K;
    float acc[kRows][NB] = {};
    dot_scalar<W, NB>(w, grp.nrows, s.K, xs + (size_t)s.gemv[grp.m].input * s.B * padded(s.K), s.B, acc);
    reduce_and_store<W, NB>(s, grp, acc);
  }
}

template <typename W, int NB, bool kVector>
cudaError_t launch(const Rwkv4DecodeStage& s, size_t smem, cudaStream_t stream) {
  auto kernel = kVector ? decode_stage_vector<W, NB> : decode_stage_scalar<W, NB>;
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
  int groups = 0;
  for (int m = 0; m < s.n_gemv; ++m) groups += (s.gemv[m].rows + kRows - 1) / kRows;  // as group_count
  // One wave at most: every block pays the prologue once, so extra blocks only repeat it.
  const int blocks = std::max(1, std::min((groups + kWarps - 1) / kWarps, per_sm * sms));
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(blocks), config.blockDim = dim3(kThreads), config.dynamicSmemBytes = smem;
  config.stream = stream;
  cudaLaunchAttribute overlap[1];
  overlap[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  overlap[0].val.programmaticStreamSerializationAllowed = 1;
  int major = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  config.attrs = overlap, config.numAttrs = major >= 9 ? 1 : 0;
  return cudaLaunchKernelEx(&config, kernel, s);
}

template <typename W, bool kVector>
cudaError_t launch_batch(const Rwkv4DecodeStage& s, size_t smem, cudaStream_t stream) {
  if (s.B <= 1) return launch<W, 1, kVector>(s, smem, stream);
  if (s.B <= 2) return launch<W, 2, kVector>(s, smem, stream);
  if (s.B <= 4) return launch<W, 4, kVector>(s, smem, stream);
  return launch<W, 8, kVector>(s, smem, stream);
}

template <typename W>
cudaError_t launch_dtype(const Rwkv4DecodeStage& s, size_t smem, cudaStream_t stream) {
  bool vector = s.K % Dtype<W>::N == 0;
  for (int m = 0; m < s.n_gemv; ++m) vector = vector && reinterpret_cast<size_t>(s.gemv[m].weight) % 16 == 0;
  return vector ? launch_batch<W, true>(s, smem, stream) : launch_batch<W, false>(s, smem, stream);
}

}  // namespace

size_t rwkv4_decode_smem_bytes(const Rwkv4DecodeStage& s) {
  const size_t item = s.dtype == 0 ? 4 : 2;
  return (size_t)s.n_inputs * s.B * padded(s.K) * item;
}

cudaError_t rwkv4_decode_stage(const Rwkv4DecodeStage& s, cudaStream_t stream) {
  if (s.B < 1 || s.B > RWKV4_DECODE_MAX_BATCH || s.n_gemv < 1 || s.n_gemv > RWKV4_DECODE_MAX_GEMV ||
      s.n_inputs < 1 || s.n_inputs > RWKV4_DECODE_MAX_GEMV || s.n_copies > RWKV4_DECODE_MAX_COPIES)
    return cudaErrorInvalidValue;
  const size_t smem = rwkv4_decode_smem_bytes(s);
  if (s.dtype == 0) return launch_dtype<float>(s, smem, stream);
  if (s.dtype == 1) return launch_dtype<__nv_bfloat16>(s, smem, stream);
  if (s.dtype == 2) return launch_dtype<__half>(s, smem, stream);
  return cudaErrorInvalidValue;
}
