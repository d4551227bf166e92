// The Python module: WKV-4 scan (wkv4_binding.cpp), the prefill's fused layer norm + token shift
// (norm_shift_binding.cpp) and the fused decode program (rwkv4_decode_binding.cpp).
#include <torch/extension.h>

std::vector<torch::Tensor> forward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v,
                                   c10::optional<torch::Tensor> aa, c10::optional<torch::Tensor> bb,
                                   c10::optional<torch::Tensor> pp, bool save_seg_states);
std::vector<torch::Tensor> backward(torch::Tensor w, torch::Tensor u, torch::Tensor k, torch::Tensor v,
                                    torch::Tensor gy, torch::Tensor seg_states, torch::Tensor pp_out,
                                    c10::optional<torch::Tensor> g_aa_out, c10::optional<torch::Tensor> g_bb_out);
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
std::vector<torch::Tensor> norm_shift(torch::Tensor x, c10::optional<torch::Tensor> add, torch::Tensor weight,
                                      torch::Tensor bias, torch::Tensor last, std::vector<torch::Tensor> mixes,
                                      torch::ScalarType out_dtype);

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "WKV-4 forward (chunked-parallel scan)");
  m.def("backward", &backward, "WKV-4 backward (chunked-parallel reverse scan)");
  m.def("norm_shift", &norm_shift, "residual add, layer norm, token shift and mixes of a chunk in one kernel");
  m.def("decode_stage_encode", &decode_stage_encode, "check and encode one fused RWKV-4 decode stage (layer norm prologue, up to three GEMVs, channel step, split product)");
  m.def("decode_run", &decode_run, "run a program of encoded decode stages in one persistent launch");
  m.def("decode_smem_bytes", &decode_smem_bytes, "shared memory per block of a decode stage (n_inputs, batch, K, dtype code, rows of each kept product)");
  m.def("decode_barrier_words", &decode_barrier_words, "size of a decode program's barrier buffer (int32 words)");
  m.def("decode_split_copies", &decode_split_copies, "copies of (B, K) in a decode split accumulator");
  m.def("decode_smem_limit", &decode_smem_limit, "dynamic shared memory one decode block may use on this device (bytes)");
}
