// The Python module's functions (defined in the *_binding.cpp files, registered in extension.cpp; each
// binding includes this header, so a definition that drifts from its declaration fails to compile),
// and what the bindings share.
#pragma once
#include <torch/extension.h>

#include <vector>

// The kernels' dtype codes (wkv4.h, norm_shift.h, rwkv4_decode.h): 0 = float32, 1 = bfloat16, 2 = float16.
// `what` names the tensor in the error, e.g. "wkv4: k and v".
inline int dtype_code(torch::ScalarType t, const char* what) {
  if (t == torch::kFloat32) return 0;
  if (t == torch::kBFloat16) return 1;
  if (t == torch::kFloat16) return 2;
  TORCH_CHECK(false, what, " must be float32, bfloat16 or float16, got ", t);
}

// wkv4_binding.cpp: the WKV-4 scan
std::vector<torch::Tensor> forward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v,
                                   c10::optional<torch::Tensor> aa, c10::optional<torch::Tensor> bb,
                                   c10::optional<torch::Tensor> pp, bool save_seg_states);
std::vector<torch::Tensor> backward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v,
                                    torch::Tensor gy, torch::Tensor seg_states, torch::Tensor pp_out,
                                    c10::optional<torch::Tensor> g_aa_out, c10::optional<torch::Tensor> g_bb_out);

// norm_shift_binding.cpp: the prefill's residual add + layer norm + token shift + mixes
std::vector<torch::Tensor> norm_shift(torch::Tensor x, c10::optional<torch::Tensor> add, torch::Tensor weight,
                                      torch::Tensor bias, torch::Tensor last, std::vector<torch::Tensor> mixes,
                                      torch::ScalarType out_dtype);

// rwkv4_decode_binding.cpp: the fused decode program
torch::Tensor decode_stage_encode(torch::Tensor x, std::vector<torch::Tensor> weights, std::vector<int64_t> inputs,
                                  std::vector<int64_t> ops, std::vector<torch::Tensor> outs,
                                  c10::optional<torch::Tensor> residual_acc, c10::optional<torch::Tensor> residual_gate,
                                  c10::optional<torch::Tensor> residual_out, torch::Tensor ln_w, torch::Tensor ln_b,
                                  c10::optional<torch::Tensor> ln_out, c10::optional<torch::Tensor> shift_prev,
                                  std::vector<torch::Tensor> mixes, int64_t channel_step, std::vector<torch::Tensor> wkv,
                                  c10::optional<torch::Tensor> split_weight, c10::optional<torch::Tensor> split_acc,
                                  std::vector<torch::Tensor> copy_src, std::vector<torch::Tensor> copy_dst,
                                  std::vector<torch::Tensor> zero);
void decode_run(torch::Tensor host, torch::Tensor device, torch::Tensor barrier);
int64_t decode_smem_bytes(int64_t n_inputs, int64_t batch, int64_t K, int64_t dtype, std::vector<int64_t> kept_rows);
int64_t decode_barrier_words();
int64_t decode_split_copies();
int64_t decode_smem_limit();
