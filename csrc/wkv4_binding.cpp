// Thin torch binding for the WKV-4 kernels in wkv4_kernels.cu: checks, allocation, stream.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bindings.h"
#include "wkv4.h"

namespace {

void check(const torch::Tensor& t, const char* name, torch::ScalarType dtype, int dims) {
  TORCH_CHECK(t.is_cuda(), "wkv4: ", name, " must be a CUDA tensor");
  TORCH_CHECK(t.is_contiguous(), "wkv4: ", name, " must be contiguous");
  TORCH_CHECK(t.scalar_type() == dtype, "wkv4: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.dim() == dims, "wkv4: ", name, " must have ", dims, " dimensions, got ", t.dim());
}

void ok(cudaError_t err) { TORCH_CHECK(err == cudaSuccess, "wkv4: CUDA error: ", cudaGetErrorString(err)); }

}  // namespace

std::vector<torch::Tensor> forward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v,
                                   c10::optional<torch::Tensor> aa, c10::optional<torch::Tensor> bb,
                                   c10::optional<torch::Tensor> pp, bool save_seg_states) {
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
  check(k, "k", k.scalar_type(), 3);
  check(v, "v", k.scalar_type(), 3);
  TORCH_CHECK(v.sizes() == k.sizes(), "wkv4: v must have k's shape");
  for (auto* t : {&w, &u}) check(*t, "w/u", torch::kFloat32, 1);
  TORCH_CHECK(w.size(0) == C && u.size(0) == C, "wkv4: w and u must have C elements");
  const bool has_state = aa.has_value();
  TORCH_CHECK(bb.has_value() == has_state && pp.has_value() == has_state, "wkv4: give aa, bb, pp or none");
  if (has_state) {
    for (auto* t : {&*aa, &*bb, &*pp}) {
      check(*t, "state", torch::kFloat32, 2);
      TORCH_CHECK(t->size(0) == B && t->size(1) == C, "wkv4: state tensors must be (B, C)");
    }
  }
  TORCH_CHECK(T >= 1, "wkv4: need at least one time step");
  const at::cuda::CUDAGuard guard(k.device());
  auto f32 = k.options().dtype(torch::kFloat32);
  auto y = torch::empty_like(k);
  auto aa_out = torch::empty({B, C}, f32), bb_out = torch::empty({B, C}, f32), pp_out = torch::empty({B, C}, f32);
  auto tiles = save_seg_states ? torch::empty({3, B, wkv4_num_segments(T), C}, f32) : torch::empty({0}, f32);
  auto ws = torch::empty({(int64_t)wkv4_workspace_bytes(B, T, C)}, k.options().dtype(torch::kUInt8));
  ok(wkv4_forward(dtype_code(k.scalar_type(), "wkv4: k and v"), B, T, C, w.data_ptr<float>(), u.data_ptr<float>(), k.data_ptr(), v.data_ptr(),
                  has_state ? aa->data_ptr<float>() : nullptr, has_state ? bb->data_ptr<float>() : nullptr,
                  has_state ? pp->data_ptr<float>() : nullptr, y.data_ptr(),
                  aa_out.data_ptr<float>(), bb_out.data_ptr<float>(), pp_out.data_ptr<float>(),
                  save_seg_states ? tiles.data_ptr<float>() : nullptr, ws.data_ptr(),
                  at::cuda::getCurrentCUDAStream()));
  return {y, aa_out, bb_out, pp_out, tiles};
}

std::vector<torch::Tensor> backward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v,
                                    torch::Tensor gy, torch::Tensor seg_states, torch::Tensor pp_out,
                                    c10::optional<torch::Tensor> g_aa_out, c10::optional<torch::Tensor> g_bb_out) {
  const int64_t B = k.size(0), T = k.size(1), C = k.size(2);
  check(k, "k", k.scalar_type(), 3);
  check(v, "v", k.scalar_type(), 3);
  check(gy, "gy", k.scalar_type(), 3);
  check(seg_states, "seg_states", torch::kFloat32, 4);
  TORCH_CHECK(seg_states.size(2) == wkv4_num_segments(T), "wkv4: saved segment states do not match T");
  TORCH_CHECK(g_aa_out.has_value() == g_bb_out.has_value(), "wkv4: give both final-state gradients or neither");
  const at::cuda::CUDAGuard guard(k.device());
  auto f32 = k.options().dtype(torch::kFloat32);
  auto gk = torch::empty_like(k), gv = torch::empty_like(v);
  auto gw = torch::zeros({C}, f32), gu = torch::zeros({C}, f32);  // the kernel adds into both
  auto g_aa = torch::empty({B, C}, f32), g_bb = torch::empty({B, C}, f32), g_pp = torch::empty({B, C}, f32);
  auto ws = torch::empty({(int64_t)wkv4_workspace_bytes(B, T, C)}, k.options().dtype(torch::kUInt8));
  ok(wkv4_backward(dtype_code(k.scalar_type(), "wkv4: k and v"), B, T, C, w.data_ptr<float>(), u.data_ptr<float>(), k.data_ptr(), v.data_ptr(),
                   gy.data_ptr(), seg_states.data_ptr<float>(), pp_out.data_ptr<float>(),
                   g_aa_out ? g_aa_out->data_ptr<float>() : nullptr, g_bb_out ? g_bb_out->data_ptr<float>() : nullptr,
                   gk.data_ptr(), gv.data_ptr(), gw.data_ptr<float>(), gu.data_ptr<float>(),
                   g_aa.data_ptr<float>(), g_bb.data_ptr<float>(), g_pp.data_ptr<float>(), ws.data_ptr(),
                   at::cuda::getCurrentCUDAStream()));
  return {gk, gv, gw, gu, g_aa, g_bb, g_pp};
}
