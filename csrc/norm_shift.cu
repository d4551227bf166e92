// Residual add + layer norm + token shift + mixes in one kernel (see norm_shift.h). One block per
// token: it normalizes its own row and the previous one (read again, from L2: cheaper than a second
// kernel or a grid-wide wait), both kept in shared memory.
#include "norm_shift.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace {

constexpr int kThreads = 256;

template <typename T> __device__ T from_float(float x);
template <> __device__ float from_float<float>(float x) { return x; }
template <> __device__ __half from_float<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// V consecutive elements of the row per access: 4 (16-byte float loads) when C allows, else 1.
template <typename T, int V> struct Io;
template <typename T> struct Io<T, 1> {
  __device__ static void load(const void* p, size_t i, float* v) { v[0] = to_float(static_cast<const T*>(p)[i]); }
  __device__ static void store(void* p, size_t i, const float* v) { static_cast<T*>(p)[i] = from_float<T>(v[0]); }
  __device__ static float to_float(float x) { return x; }
  __device__ static float to_float(__half x) { return __half2float(x); }
  __device__ static float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
};
template <typename T> struct Io<T, 4> {
  struct alignas(4 * sizeof(T)) Vec { T e[4]; };
  __device__ static void load(const void* p, size_t i, float* v) {
    const Vec q = static_cast<const Vec*>(p)[i / 4];
#pragma unroll
    for (int j = 0; j < 4; ++j) v[j] = Io<T, 1>::to_float(q.e[j]);
  }
  __device__ static void store(void* p, size_t i, const float* v) {
    Vec q;
#pragma unroll
    for (int j = 0; j < 4; ++j) q.e[j] = from_float<T>(v[j]);
    static_cast<Vec*>(p)[i / 4] = q;
  }
};

// Sums of two values over the block, returned to every thread.
__device__ float2 block_sum2(float a, float b) {
  __shared__ float2 partial[kThreads / 32];
  for (int o = 16; o > 0; o >>= 1) a += __shfl_xor_sync(0xffffffffu, a, o), b += __shfl_xor_sync(0xffffffffu, b, o);
  __syncthreads();  // the previous call's readers are done with `partial`
  if (threadIdx.x % 32 == 0) partial[threadIdx.x / 32] = make_float2(a, b);
  __syncthreads();
  float2 total = make_float2(0.f, 0.f);
#pragma unroll
  for (int w = 0; w < kThreads / 32; ++w) total.x += partial[w].x, total.y += partial[w].y;
  return total;
}

// Loops over a row take V elements per thread per pass and are unrolled kUnroll deep, so that a
// pass's loads are all in flight at once (C = 2048, V = 4: two passes; the block's latency is the cost).
constexpr int kUnroll = 4;

template <typename W, int V>
__global__ void __launch_bounds__(kThreads) norm_shift_kernel(const __grid_constant__ Rwkv4NormShift a) {
  extern __shared__ float rows[];  // [0, C): this token after the add; [C, 2C): the previous token
  const int C = a.C, row = blockIdx.x, b = row / a.T, t = row % a.T, step = kThreads * V;
  const bool has_prev = t > 0;
  float* cur = rows;
  float* prev = rows + C;
  const size_t at = (size_t)row * C;
  float sum_cur = 0.f, sum_prev = 0.f;
#pragma unroll kUnroll
  for (int k = threadIdx.x * V; k < C; k += step) {
    float v[V], u[V], d[V];
    Io<float, V>::load(a.x, at + k, v);
    if (has_prev) Io<float, V>::load(a.x, at - C + k, u);
    if (a.add != nullptr) {
      Io<W, V>::load(a.add, at + k, d);
#pragma unroll
      for (int j = 0; j < V; ++j) v[j] += d[j];
      if (has_prev) {
        Io<W, V>::load(a.add, at - C + k, d);
#pragma unroll
        for (int j = 0; j < V; ++j) u[j] += d[j];
      }
    }
    if (a.x_out != nullptr) Io<float, V>::store(a.x_out, at + k, v);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      cur[k + j] = v[j], sum_cur += v[j];
      if (has_prev) prev[k + j] = u[j], sum_prev += u[j];
    }
  }
  const float2 sums = block_sum2(sum_cur, sum_prev);  // also makes the rows visible to the block
  const float mean_cur = sums.x / C, mean_prev = sums.y / C;
  float sq_cur = 0.f, sq_prev = 0.f;
  for (int k = threadIdx.x; k < C; k += kThreads) {
    sq_cur += (cur[k] - mean_cur) * (cur[k] - mean_cur);
    if (has_prev) sq_prev += (prev[k] - mean_prev) * (prev[k] - mean_prev);
  }
  const float2 sq = block_sum2(sq_cur, sq_prev);
  const float rstd_cur = rsqrtf(sq.x / C + 1e-5f), rstd_prev = rsqrtf(sq.y / C + 1e-5f);
  const size_t plane = (size_t)a.B * a.T * C;  // one mix's output
#pragma unroll kUnroll
  for (int k = threadIdx.x * V; k < C; k += step) {
    float w[V], bias[V], y[V], p[V], m[V], out[V];
    Io<float, V>::load(a.weight, k, w);
    Io<float, V>::load(a.bias, k, bias);
    if (!has_prev) Io<float, V>::load(a.last, (size_t)b * C + k, p);
#pragma unroll
    for (int j = 0; j < V; ++j) {
      y[j] = (cur[k + j] - mean_cur) * rstd_cur * w[j] + bias[j];
      if (has_prev) p[j] = (prev[k + j] - mean_prev) * rstd_prev * w[j] + bias[j];
    }
    if (t == a.T - 1) Io<float, V>::store(a.ln_last, (size_t)b * C + k, y);
#pragma unroll
    for (int i = 0; i < RWKV4_NORM_SHIFT_MAX_MIX; ++i) {
      if (i >= a.n_mix) break;
      Io<float, V>::load(a.mix[i], k, m);
#pragma unroll
      for (int j = 0; j < V; ++j)  // torch.lerp(prev, y, m), as the PyTorch model mixes
        out[j] = m[j] < 0.5f ? p[j] + m[j] * (y[j] - p[j]) : y[j] - (y[j] - p[j]) * (1.f - m[j]);
      Io<W, V>::store(a.out, i * plane + at + k, out);
    }
  }
}

template <typename W>
cudaError_t launch(const Rwkv4NormShift& a, cudaStream_t stream) {
  // 16-byte accesses need C % 4 == 0 and every vector 16-byte aligned (the mixes and norm weights are
  // separate tensors: checked one by one).
  const void* vectors[] = {a.x, a.add, a.x_out, a.weight, a.bias, a.last, a.out, a.ln_last, a.mix[0], a.mix[1], a.mix[2]};
  bool vec = a.C % 4 == 0;
  for (const void* p : vectors) vec = vec && reinterpret_cast<size_t>(p) % 16 == 0;
  auto kernel = vec ? norm_shift_kernel<W, 4> : norm_shift_kernel<W, 1>;
  const size_t smem = 2 * (size_t)a.C * sizeof(float);
  if (smem > 48 * 1024) {
    const cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem);
    if (err != cudaSuccess) return err;
  }
  kernel<<<(unsigned)(a.B * a.T), kThreads, smem, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t rwkv4_norm_shift(const Rwkv4NormShift& a, cudaStream_t stream) {
  if (a.B < 1 || a.T < 1 || a.C < 1 || a.n_mix < 1 || a.n_mix > RWKV4_NORM_SHIFT_MAX_MIX) return cudaErrorInvalidValue;
  if (a.dtype == 0) return launch<float>(a, stream);
  if (a.dtype == 1) return launch<__nv_bfloat16>(a, stream);
  if (a.dtype == 2) return launch<__half>(a, stream);
  return cudaErrorInvalidValue;
}
