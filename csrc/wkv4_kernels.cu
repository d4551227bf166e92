// WKV-4 forward and backward as a single-pass, chunked-parallel scan with decoupled look-back.
//
// The recurrence per (batch, channel) is linear with a constant decay e^w:
//     S_{t+1} = e^w S_t + e^{k_t} (v_t, 1),      y_t = (S_t.a + e^{u+k_t} v_t) / (S_t.b + e^{u+k_t})
// A state is kept as (a, b, p) meaning (a e^p, b e^p) so nothing overflows. Two summaries compose:
// decay(x, n w) then add. One block owns a tile of WKV4_TILE steps x 32 channels; each thread holds
// L consecutive steps in registers. A block (1) summarises its steps, (2) publishes its tile aggregate,
// (3) looks back over earlier tiles' aggregates until it meets an inclusive prefix (or the initial
// state), each published as one 16-byte (a, b, p, status) word per channel, (4) publishes its own inclusive prefix, (5) finishes its steps from the carry. Blocks take
// tiles in order from an atomic ticket, so every tile they wait on is already running: no deadlock.
// k and v are read from memory once. The backward runs the same scan in reverse time over the
// gradient state, starting each thread from the forward's saved segment-start states. How far a block looks back depends on
// timing, so carries are summed in a run-dependent order: results agree to rounding, not bit for bit.
#include "wkv4.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace {

constexpr float NEG = -1e38f;  // exponent of an empty state: exp(NEG - finite) == 0

struct St {
  float a, b, p;
};

__device__ __forceinline__ St empty_state() { return {0.f, 0.f, NEG}; }

__device__ __forceinline__ St decayed(St s, float d) {
  s.p += d;
  return s;
}

// (exp(x - m), exp(y - m)) with m = max(x, y): one of the two is exp(0) = 1, so one exp suffices.
__device__ __forceinline__ float exp_pair(float x, float y, float& ex, float& ey) {
  const float d = x - y;
  const float e = __expf(-fabsf(d));
  ex = d >= 0.f ? 1.f : e;
  ey = d >= 0.f ? e : 1.f;
  return fmaxf(x, y);
}

__device__ __forceinline__ St combine(St x, St y) {
  float ex, ey;
  const float p = exp_pair(x.p, y.p, ex, ey);
  return {x.a * ex + y.a * ey, x.b * ex + y.b * ey, p};
}

// One step of "state = e^w state + e^x (alpha, beta)".
__device__ __forceinline__ void push(St& s, float w, float x, float alpha, float beta) {
  float e1, e2;
  const float p = exp_pair(s.p + w, x, e1, e2);
  s.a = e1 * s.a + e2 * alpha;
  s.b = e1 * s.b + e2 * beta;
  s.p = p;
}

// The output at one step from the state before it: (a + e^{u+k} v) / (b + e^{u+k}) in the state's scale.
// Returns y; e2 (the weight of the current token) and p (the common exponent) for the backward.
__device__ __forceinline__ float wkv_out(St s, float uk, float v, float& e1, float& e2, float& iden) {
  exp_pair(s.p, uk, e1, e2);
  iden = 1.f / (e1 * s.b + e2);
  return (e1 * s.a + e2 * v) * iden;
}

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
template <typename TI>
__device__ __forceinline__ TI from_f(float x);
template <>
__device__ __forceinline__ float from_f<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }

// Look-back slots: one 16-byte word per (bg, tile, lane) holding (a, b, p, status), written and read
// with single 16-byte accesses, so one load both polls the status and fetches the values.
// status: 0 nothing yet, 1 the tile's aggregate, 2 its inclusive prefix (a slot is upgraded 1 -> 2).
struct Workspace {
  float4* slots;  // BG x J x 32
  int* ticket;    // next tile to hand out
};

__host__ __device__ inline size_t align_up(size_t x) { return (x + 255) / 256 * 256; }

inline size_t slots_bytes(size_t BG, size_t J) { return align_up(BG * J * 32 * sizeof(float4)); }

Workspace carve(void* base, int BG, int J) {
  char* p = static_cast<char*>(base);
  return {reinterpret_cast<float4*>(p), reinterpret_cast<int*>(p + slots_bytes(BG, J))};
}

__device__ __forceinline__ void publish(float4* slot, St s, float status) {
  const float4 word = make_float4(s.a, s.b, s.p, status);
  asm volatile("st.relaxed.gpu.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(slot), "f"(word.x), "f"(word.y),
               "f"(word.z), "f"(word.w)
               : "memory");
}

// Spin until the slot holds something; returns the state and sets `inclusive`.
__device__ __forceinline__ St wait_slot(const float4* slot, bool& inclusive) {
  float4 word;
  do {
    asm volatile("ld.relaxed.gpu.global.v4.f32 {%0, %1, %2, %3}, [%4];"
                 : "=f"(word.x), "=f"(word.y), "=f"(word.z), "=f"(word.w)
                 : "l"(slot)
                 : "memory");
  } while (word.w == 0.f);
  inclusive = word.w == 2.f;
  return {word.x, word.y, word.z};
}

// Valid steps of segment q (L steps each) in tile j.
template <int L>
__device__ __forceinline__ int seg_len(int T, int j, int q) {
  return max(0, min(L, T - (j * WKV4_TILE + q * L)));
}

// ------------------------------------------------------------------------------------------------
// The block's tile, claimed through the ticket in launch order (so tiles are handed out in the order
// their look-back needs; the backward's last to first), and this thread's channel and segment in it:
// tile j of (batch row, channel group) bg, batch row b, channel c (cc: clamped to a valid one for loads), the segment's first step
// t0 and length n, the channel's w and u, and the offset of element (b, 0, cc).
struct TileSlot {
  int j, bg, b, c, cc, t0, n;
  bool valid;
  float w, u;
  size_t base;
};

template <int L>
__device__ TileSlot claim_tile(int B, int T, int C, int G, int J, bool reverse, const float* __restrict__ w_,
                               const float* __restrict__ u_, Workspace ws) {
  __shared__ int s_tile;
  if (threadIdx.x == 0) s_tile = atomicAdd(ws.ticket, 1);
  __syncthreads();
  const int BG = B * G, s = threadIdx.x >> 5;
  TileSlot t;
  t.j = reverse ? J - 1 - s_tile / BG : s_tile / BG;
  t.bg = s_tile % BG;
  t.b = t.bg / G, t.c = (t.bg % G) * 32 + (threadIdx.x & 31);
  t.valid = t.c < C, t.cc = t.valid ? t.c : C - 1;
  t.w = w_[t.cc], t.u = u_[t.cc];
  t.t0 = t.j * WKV4_TILE + s * L, t.n = seg_len<L>(T, t.j, s);
  t.base = (size_t)t.b * T * C + t.cc;
  return t;
}

// Blocks per SM each kernel's registers must allow (__launch_bounds__'s second argument): 64 registers a
// thread, a few spilled: with all the registers they asked for, too few warps ran at once.
// benchmarks/tune_wkv.py on an H200 (bf16, fwd/bwd ms), against tile 64 with the compiler's choice (136
// and 109 registers):
//   64 x 1024 x 640 (s7 training)  0.228/0.514 against 0.342/0.864
//   32 x 1024 x 128 (s1 training)  0.039/0.080 against 0.056/0.125
//   1 x 65536 x 2048 (fp32 prefill) 0.655/1.555 against 0.964/1.699
#ifndef WKV4_FWD_MIN_BLOCKS
#define WKV4_FWD_MIN_BLOCKS 16
#endif
#ifndef WKV4_BWD_MIN_BLOCKS
#define WKV4_BWD_MIN_BLOCKS 8
#endif

template <typename TI, int L>
__global__ void __launch_bounds__(32 * (WKV4_TILE / L), WKV4_FWD_MIN_BLOCKS)
    wkv4_fwd_kernel(int B, int T, int C, int G, int J, const float* __restrict__ w_, const float* __restrict__ u_,
                    const TI* __restrict__ k_, const TI* __restrict__ v_, const float* __restrict__ aa_in,
                    const float* __restrict__ bb_in, const float* __restrict__ pp_in, TI* __restrict__ y_,
                    float* __restrict__ aa_out, float* __restrict__ bb_out, float* __restrict__ pp_out,
                    float* __restrict__ seg_states, Workspace ws) {
  static_assert(L % WKV4_BWD_L == 0, "forward segments must hold whole backward segments");
  constexpr int S = WKV4_TILE / L;
  __shared__ St seg[S][32];
  __shared__ St carry[32];
  const int lane = threadIdx.x & 31, s = threadIdx.x >> 5;
  const auto [j, bg, b, c, cc, t0, n, valid, w, u, base] = claim_tile<L>(B, T, C, G, J, false, w_, u_, ws);

  float kr[L], vr[L];
#pragma unroll
  for (int i = 0; i < L; i++) {
    if (i < n) {
      const size_t o = base + (size_t)(t0 + i) * C;
      kr[i] = to_f(k_[o]);
      vr[i] = to_f(v_[o]);
    }
  }
  St local = empty_state();
#pragma unroll
  for (int i = 0; i < L; i++)
    if (i < n) push(local, w, kr[i], vr[i], 1.f);
  seg[s][lane] = local;
  __syncthreads();

  if (s == 0) {
    St agg = empty_state();
    for (int q = 0; q < S; q++) agg = combine(decayed(agg, seg_len<L>(T, j, q) * w), seg[q][lane]);
    float4* slots = ws.slots + (size_t)bg * J * 32 + lane;  // this (b, channel)'s slot of tile 0
    if (j > 0) publish(slots + (size_t)j * 32, agg, 1.f);
    St run = empty_state();  // everything before this tile, as seen at its start
    float dist = 0.f;        // steps between the predecessor's end and this tile's start
    for (int pred = j - 1;; pred--) {
      if (pred < 0) {
        if (aa_in != nullptr) {
          const size_t sc = (size_t)b * C + cc;
          run = combine(run, decayed({aa_in[sc], bb_in[sc], pp_in[sc]}, dist * w));
        }
        break;
      }
      bool inclusive;
      const St x = wait_slot(slots + (size_t)pred * 32, inclusive);
      run = combine(run, decayed(x, dist * w));
      if (inclusive) break;
      dist += (float)WKV4_TILE;
    }
    const int tile_len = min(WKV4_TILE, T - j * WKV4_TILE);
    const St incl = combine(decayed(run, tile_len * w), agg);
    publish(slots + (size_t)j * 32, incl, 2.f);
    carry[lane] = run;
    if (valid) {
      if (j == J - 1) {
        aa_out[(size_t)b * C + c] = incl.a;
        bb_out[(size_t)b * C + c] = incl.b;
        pp_out[(size_t)b * C + c] = incl.p;
      }
    }
  }
  __syncthreads();

  St st = carry[lane];
  for (int q = 0; q < s; q++) st = combine(decayed(st, seg_len<L>(T, j, q) * w), seg[q][lane]);
  const int NS = wkv4_num_segments(T);
#pragma unroll
  for (int i = 0; i < L; i++) {
    if (i < n) {
      if (seg_states != nullptr && valid && i % WKV4_BWD_L == 0) {
        const size_t so = ((size_t)b * NS + (t0 + i) / WKV4_BWD_L) * C + c, splane = (size_t)B * NS * C;
        seg_states[so] = st.a;
        seg_states[so + splane] = st.b;
        seg_states[so + 2 * splane] = st.p;
      }
      float e1, e2, iden;
      const float y = wkv_out(st, u + kr[i], vr[i], e1, e2, iden);
      if (valid) y_[base + (size_t)(t0 + i) * C] = from_f<TI>(y);
      push(st, w, kr[i], vr[i], 1.f);
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Backward. The gradient state G_t = (dL/dA_t, dL/dB_t) obeys G_t = e^w G_{t+1} + (g_t / D_t)(1, -y_t),
// a linear scan in reverse time with the same decay, kept as (a, b, p) meaning (a e^p, b e^p).
template <typename TI, int L>
__global__ void __launch_bounds__(32 * (WKV4_TILE / L), WKV4_BWD_MIN_BLOCKS)
    wkv4_bwd_kernel(int B, int T, int C, int G, int J, const float* __restrict__ w_, const float* __restrict__ u_,
                    const TI* __restrict__ k_, const TI* __restrict__ v_, const TI* __restrict__ gy_,
                    const float* __restrict__ seg_states, const float* __restrict__ pp_out,
                    const float* __restrict__ g_aa_out, const float* __restrict__ g_bb_out, TI* __restrict__ gk_,
                    TI* __restrict__ gv_, float* __restrict__ gw_sum, float* __restrict__ gu_sum,
                    float* __restrict__ g_aa_in, float* __restrict__ g_bb_in, float* __restrict__ g_pp_in,
                    Workspace ws) {
  constexpr int S = WKV4_TILE / L;
  __shared__ St seg[S][32];
  __shared__ St carry[32];
  __shared__ float red_w[S][32], red_u[S][32];
  const int lane = threadIdx.x & 31, s = threadIdx.x >> 5;
  const auto [j, bg, b, c, cc, t0, n, valid, w, u, base] = claim_tile<L>(B, T, C, G, J, true, w_, u_, ws);

  float kr[L], vr[L], gr[L];
#pragma unroll
  for (int i = 0; i < L; i++) {
    if (i < n) {
      const size_t o = base + (size_t)(t0 + i) * C;
      kr[i] = to_f(k_[o]);
      vr[i] = to_f(v_[o]);
      gr[i] = to_f(gy_[o]);
    }
  }
  // The forward state at this segment's start, saved by the forward.
  const int NS = wkv4_num_segments(T);
  const size_t so = ((size_t)b * NS + min(t0, T - 1) / L) * C + cc, splane = (size_t)B * NS * C;
  St st = {seg_states[so], seg_states[so + splane], seg_states[so + 2 * splane]};
  const St start = st;
  float aa[L], bb[L], pp[L];  // state before each step
#pragma unroll
  for (int i = 0; i < L; i++) {
    if (i < n) {
      aa[i] = st.a;
      bb[i] = st.b;
      pp[i] = st.p;
      push(st, w, kr[i], vr[i], 1.f);
    }
  }
  // This segment's reverse summary from an empty gradient state.
  St rlocal = empty_state();
#pragma unroll
  for (int i = L - 1; i >= 0; i--) {
    if (i < n) {
      float e1, e2, iden;
      const float y = wkv_out({aa[i], bb[i], pp[i]}, u + kr[i], vr[i], e1, e2, iden);
      push(rlocal, w, -fmaxf(pp[i], u + kr[i]), gr[i] * iden, -gr[i] * iden * y);
    }
  }
  seg[s][lane] = rlocal;
  __syncthreads();

  if (s == 0) {
    St agg = empty_state();
    for (int q = S - 1; q >= 0; q--) agg = combine(decayed(agg, seg_len<L>(T, j, q) * w), seg[q][lane]);
    float4* slots = ws.slots + (size_t)bg * J * 32 + lane;
    if (j < J - 1) publish(slots + (size_t)j * 32, agg, 1.f);
    St run = empty_state();  // everything after this tile, as seen at its end
    float dist = 0.f;
    for (int pred = j + 1;; pred++) {
      if (pred >= J) {
        if (g_aa_out != nullptr) {
          const size_t sc = (size_t)b * C + cc;
          run = combine(run, decayed({g_aa_out[sc], g_bb_out[sc], -pp_out[sc]}, dist * w));
        }
        break;
      }
      bool inclusive;
      const St x = wait_slot(slots + (size_t)pred * 32, inclusive);
      run = combine(run, decayed(x, dist * w));
      if (inclusive) break;
      dist += (float)min(WKV4_TILE, T - pred * WKV4_TILE);
    }
    const int tile_len = min(WKV4_TILE, T - j * WKV4_TILE);
    publish(slots + (size_t)j * 32, combine(decayed(run, tile_len * w), agg), 2.f);
    carry[lane] = run;
  }
  __syncthreads();

  St gs = carry[lane];
  for (int q = S - 1; q > s; q--) gs = combine(decayed(gs, seg_len<L>(T, j, q) * w), seg[q][lane]);
  float gw = 0.f, gu = 0.f;
#pragma unroll
  for (int i = L - 1; i >= 0; i--) {
    if (i < n) {
      float e1, e2, iden;
      const float y = wkv_out({aa[i], bb[i], pp[i]}, u + kr[i], vr[i], e1, e2, iden);
      const float p = fmaxf(pp[i], u + kr[i]);
      const float direct = gr[i] * iden * e2;  // dL/dy * e^{u+k} / D
      const float ek = __expf(kr[i] + gs.p);    // e^k times the gradient state's scale
      if (valid) {
        const size_t o = base + (size_t)(t0 + i) * C;
        gk_[o] = from_f<TI>(direct * (vr[i] - y) + ek * (gs.a * vr[i] + gs.b));
        gv_[o] = from_f<TI>(direct + ek * gs.a);
      }
      gu += direct * (vr[i] - y);
      gw += __expf(w + pp[i] + gs.p) * (aa[i] * gs.a + bb[i] * gs.b);
      push(gs, w, -p, gr[i] * iden, -gr[i] * iden * y);
    }
  }
  if (j == 0 && s == 0 && valid) {  // gs is now the gradient of the initial state (= start)
    const float scale = __expf(gs.p + start.p);
    g_aa_in[(size_t)b * C + c] = gs.a * scale;
    g_bb_in[(size_t)b * C + c] = gs.b * scale;
    g_pp_in[(size_t)b * C + c] = scale * (gs.a * start.a + gs.b * start.b);
  }
  red_w[s][lane] = gw;
  red_u[s][lane] = gu;
  __syncthreads();
  if (s == 0 && valid) {
    float sw = 0.f, su = 0.f;
    for (int q = 0; q < S; q++) {
      sw += red_w[q][lane];
      su += red_u[q][lane];
    }
    atomicAdd(gw_sum + c, sw);  // B x J blocks add into each channel: no separate reduction launch
    atomicAdd(gu_sum + c, su);
  }
}

// Steps per thread (tuning knobs; -D overrides them for sweeps).
#ifndef WKV4_FWD_L
#define WKV4_FWD_L 16  // with the default tile: 2 warps per block
#endif
constexpr int FWD_L = WKV4_FWD_L;
constexpr int BWD_L = WKV4_BWD_L;  // (wkv4.h) the backward keeps 6 values per step in registers

template <typename TI>
cudaError_t launch_forward(int B, int T, int C, const float* w, const float* u, const void* k, const void* v,
                           const float* aa_in, const float* bb_in, const float* pp_in, void* y, float* aa_out,
                           float* bb_out, float* pp_out, float* seg_states, void* workspace, cudaStream_t stream) {
  const int G = (C + 31) / 32, J = wkv4_num_tiles(T);
  Workspace ws = carve(workspace, B * G, J);
  cudaError_t err = cudaMemsetAsync(workspace, 0, wkv4_workspace_bytes(B, T, C), stream);
  if (err != cudaSuccess) return err;
  wkv4_fwd_kernel<TI, FWD_L><<<(unsigned)((size_t)B * G * J), 32 * (WKV4_TILE / FWD_L), 0, stream>>>(
      B, T, C, G, J, w, u, static_cast<const TI*>(k), static_cast<const TI*>(v), aa_in, bb_in, pp_in,
      static_cast<TI*>(y), aa_out, bb_out, pp_out, seg_states, ws);
  return cudaGetLastError();
}

template <typename TI>
cudaError_t launch_backward(int B, int T, int C, const float* w, const float* u, const void* k, const void* v,
                            const void* gy, const float* seg_states, const float* pp_out, const float* g_aa_out,
                            const float* g_bb_out, void* gk, void* gv, float* gw_sum, float* gu_sum,
                            float* g_aa_in, float* g_bb_in, float* g_pp_in, void* workspace, cudaStream_t stream) {
  const int G = (C + 31) / 32, J = wkv4_num_tiles(T);
  Workspace ws = carve(workspace, B * G, J);
  cudaError_t err = cudaMemsetAsync(workspace, 0, wkv4_workspace_bytes(B, T, C), stream);
  if (err != cudaSuccess) return err;
  wkv4_bwd_kernel<TI, BWD_L><<<(unsigned)((size_t)B * G * J), 32 * (WKV4_TILE / BWD_L), 0, stream>>>(
      B, T, C, G, J, w, u, static_cast<const TI*>(k), static_cast<const TI*>(v), static_cast<const TI*>(gy),
      seg_states, pp_out, g_aa_out, g_bb_out, static_cast<TI*>(gk), static_cast<TI*>(gv), gw_sum, gu_sum,
      g_aa_in, g_bb_in, g_pp_in, ws);
  return cudaGetLastError();
}

}  // namespace

size_t wkv4_workspace_bytes(int B, int T, int C) {
  const size_t BG = (size_t)B * ((C + 31) / 32), J = wkv4_num_tiles(T);
  return slots_bytes(BG, J) + align_up(sizeof(int));
}

cudaError_t wkv4_forward(int dtype, int B, int T, int C, const float* w, const float* u, const void* k,
                         const void* v, const float* aa_in, const float* bb_in, const float* pp_in, void* y,
                         float* aa_out, float* bb_out, float* pp_out, float* seg_states, void* workspace,
                         cudaStream_t stream) {
  switch (dtype) {
    case 0:
      return launch_forward<float>(B, T, C, w, u, k, v, aa_in, bb_in, pp_in, y, aa_out, bb_out, pp_out,
                                   seg_states, workspace, stream);
    case 1:
      return launch_forward<__nv_bfloat16>(B, T, C, w, u, k, v, aa_in, bb_in, pp_in, y, aa_out, bb_out, pp_out,
                                           seg_states, workspace, stream);
    case 2:
      return launch_forward<__half>(B, T, C, w, u, k, v, aa_in, bb_in, pp_in, y, aa_out, bb_out, pp_out,
                                    seg_states, workspace, stream);
  }
  return cudaErrorInvalidValue;
}

cudaError_t wkv4_backward(int dtype, int B, int T, int C, const float* w, const float* u, const void* k,
                          const void* v, const void* gy, const float* seg_states, const float* pp_out,
                          const float* g_aa_out, const float* g_bb_out, void* gk, void* gv, float* gw_sum,
                          float* gu_sum, float* g_aa_in, float* g_bb_in, float* g_pp_in, void* workspace,
                          cudaStream_t stream) {
  switch (dtype) {
    case 0:
      return launch_backward<float>(B, T, C, w, u, k, v, gy, seg_states, pp_out, g_aa_out, g_bb_out, gk, gv,
                                    gw_sum, gu_sum, g_aa_in, g_bb_in, g_pp_in, workspace, stream);
    case 1:
      return launch_backward<__nv_bfloat16>(B, T, C, w, u, k, v, gy, seg_states, pp_out, g_aa_out, g_bb_out, gk,
                                            gv, gw_sum, gu_sum, g_aa_in, g_bb_in, g_pp_in, workspace, stream);
    case 2:
      return launch_backward<__half>(B, T, C, w, u, k, v, gy, seg_states, pp_out, g_aa_out, g_bb_out, gk, gv,
                                     gw_sum, gu_sum, g_aa_in, g_bb_in, g_pp_in, workspace, stream);
  }
  return cudaErrorInvalidValue;
}
