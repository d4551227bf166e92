// Thin torch binding for the fused add + layer norm + token shift + mixes in norm_shift.cu.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "bindings.h"
#include "norm_shift.h"

#include <string>
#include <vector>

namespace {

std::string shape_str(at::IntArrayRef sizes) {  // "(2, 4, 64)"; built by hand: streaming an IntArrayRef into
  std::string out = "(";                          // TORCH_CHECK's message crashed the process here
  for (size_t i = 0; i < sizes.size(); ++i) out += (i ? ", " : "") + std::to_string(sizes[i]);
  return out + ")";
}

void check(const torch::Tensor& t, const char* name, torch::ScalarType dtype, const std::vector<int64_t>& sizes) {
  TORCH_CHECK(t.is_cuda() && t.is_contiguous(), "norm_shift: ", name, " must be a contiguous CUDA tensor");
  TORCH_CHECK(t.scalar_type() == dtype, "norm_shift: ", name, " must be ", dtype, ", got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == at::IntArrayRef(sizes), "norm_shift: ", name, " has shape ", shape_str(t.sizes()),
              ", expected ", shape_str(sizes));
}

}  // namespace

// Returns (mixed (n_mix, B, T, C) in out_dtype, ln_last (B, C) float32, x + add (B, T, C) float32, or an
// empty tensor without add).
std::vector<torch::Tensor> norm_shift(torch::Tensor x, c10::optional<torch::Tensor> add, torch::Tensor weight,
                                      torch::Tensor bias, torch::Tensor last, std::vector<torch::Tensor> mixes,
                                      torch::ScalarType out_dtype) {
  TORCH_CHECK(x.dim() == 3, "norm_shift: x must be (B, T, C)");
  const int64_t B = x.size(0), T = x.size(1), C = x.size(2), n = (int64_t)mixes.size();
  TORCH_CHECK(n >= 1 && n <= RWKV4_NORM_SHIFT_MAX_MIX, "norm_shift: give 1 to ", RWKV4_NORM_SHIFT_MAX_MIX, " mix vectors");
  check(x, "x", torch::kFloat32, {B, T, C});
  check(weight, "weight", torch::kFloat32, {C});
  check(bias, "bias", torch::kFloat32, {C});
  check(last, "last", torch::kFloat32, {B, C});
  const at::cuda::CUDAGuard guard(x.device());
  Rwkv4NormShift a{};
  a.dtype = dtype_code(out_dtype, "norm_shift: the output dtype"), a.B = (int)B, a.T = (int)T, a.C = (int)C, a.n_mix = (int)n;
  a.x = x.data_ptr<float>(), a.weight = weight.data_ptr<float>(), a.bias = bias.data_ptr<float>();
  a.last = last.data_ptr<float>();
  for (int64_t i = 0; i < n; ++i) {
    check(mixes[i], "mix", torch::kFloat32, {C});
    a.mix[i] = mixes[i].data_ptr<float>();
  }
  auto x_out = torch::empty({0}, x.options());
  if (add.has_value()) {
    check(*add, "add", out_dtype, {B, T, C});
    x_out = torch::empty_like(x);
    a.add = add->data_ptr(), a.x_out = x_out.data_ptr<float>();
  }
  auto out = torch::empty({n, B, T, C}, x.options().dtype(out_dtype));
  auto ln_last = torch::empty({B, C}, x.options());
  a.out = out.data_ptr(), a.ln_last = ln_last.data_ptr<float>();
  const cudaError_t err = rwkv4_norm_shift(a, at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "norm_shift: CUDA error: ", cudaGetErrorString(err));
  return {out, ln_last, x_out};
}
