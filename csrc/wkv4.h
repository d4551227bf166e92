// WKV-4 CUDA kernels: host API. Free of torch headers so it compiles on its own (nvcc -c).
//
// Layout: k, v, y, gy, gk, gv are (B, T, C) contiguous; w, u are (C,) float32; states are (B, C) float32.
// dtype: 0 = float32, 1 = bfloat16, 2 = float16 for k, v, y (and gy, gk, gv). Accumulation is float32.
#pragma once
#include <cuda_runtime.h>
#include <cstddef>

// Tile of time steps handled by one block; forward and backward share it (tile_states is per tile).
#ifndef WKV4_TILE
#define WKV4_TILE 32  // benchmarks/tune_wkv.py on an H200, with the blocks per SM in wkv4_kernels.cu
#endif

inline int wkv4_num_tiles(int T) { return (T + WKV4_TILE - 1) / WKV4_TILE; }

// Steps per backward thread. The forward saves the state at the start of every such segment (when
// gradients are needed), so the backward starts each thread without re-running the forward scan.
#ifndef WKV4_BWD_L
#define WKV4_BWD_L 8
#endif
#ifdef __CUDACC__
#define WKV4_HOST_DEVICE __host__ __device__
#else
#define WKV4_HOST_DEVICE
#endif
WKV4_HOST_DEVICE inline int wkv4_num_segments(int T) { return (T + WKV4_BWD_L - 1) / WKV4_BWD_L; }

// Scratch bytes for one call (look-back flags, ticket, per-tile aggregates and prefixes).
size_t wkv4_workspace_bytes(int B, int T, int C);

// y = WKV(w, u, k, v) from the state (aa_in, bb_in, pp_in; all null for the empty state); writes the final state to (aa_out, bb_out,
// pp_out). seg_states (3 planes of B x num_segments x C, may be null) receives the state at the start of
// every backward segment, which the backward needs.
cudaError_t wkv4_forward(int dtype, int B, int T, int C, const float* w, const float* u, const void* k,
                         const void* v, const float* aa_in, const float* bb_in, const float* pp_in, void* y,
                         float* aa_out, float* bb_out, float* pp_out, float* seg_states, void* workspace,
                         cudaStream_t stream);

// Gradients. g_aa_out / g_bb_out (may be null) are the gradients reaching the final state; pp_out is the
// final state's exponent. gw_sum / gu_sum are (C,) and must be zero: every block adds its channels' share
// (atomics, so their summation order varies from run to run). g_aa_in, g_bb_in, g_pp_in receive the
// initial state's gradients.
cudaError_t wkv4_backward(int dtype, int B, int T, int C, const float* w, const float* u, const void* k,
                          const void* v, const void* gy, const float* seg_states, const float* pp_out,
                          const float* g_aa_out, const float* g_bb_out, void* gk, void* gv, float* gw_sum,
                          float* gu_sum, float* g_aa_in, float* g_bb_in, float* g_pp_in, void* workspace,
                          cudaStream_t stream);
