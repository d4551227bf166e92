// The Python module: WKV-4 scan (wkv4_binding.cpp), the prefill's fused layer norm + token shift
// (norm_shift_binding.cpp) and the fused decode program (rwkv4_decode_binding.cpp).
#include "bindings.h"

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
