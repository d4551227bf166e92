// Thin torch binding for the fused decode program in rwkv4_decode.cu: a stage is checked and encoded
// once (its struct's bytes, pointing into the tensors given), and a program of encoded stages runs as
// one launch. The caller keeps the tensors alive as long as the stage is used.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>

#include "rwkv4_decode.h"

namespace {

void check_f32(const torch::Tensor& t, const char* name, int64_t numel) {
  TORCH_CHECK(t.is_cuda() && t.is_contiguous() && t.scalar_type() == torch::kFloat32,
              "decode_stage: ", name, " must be a contiguous float32 CUDA tensor");
  TORCH_CHECK(t.numel() == numel, "decode_stage: ", name, " has ", t.numel(), " elements, expected ", numel);
}

const float* f32(const c10::optional<torch::Tensor>& t, const char* name, int64_t numel) {
  if (!t.has_value()) return nullptr;
  check_f32(*t, name, numel);
  return t->data_ptr<float>();
}

int weight_dtype(const torch::Tensor& w) {
  if (w.scalar_type() == torch::kFloat32) return 0;
  if (w.scalar_type() == torch::kBFloat16) return 1;
  if (w.scalar_type() == torch::kFloat16) return 2;
  TORCH_CHECK(false, "decode_stage: weights must be float32, bfloat16 or float16, got ", w.scalar_type());
}

}  // namespace

torch::Tensor decode_stage_encode(int64_t prologue, torch::Tensor x, std::vector<torch::Tensor> weights, std::vector<int64_t> inputs,
                  std::vector<int64_t> ops, std::vector<torch::Tensor> outs, c10::optional<torch::Tensor> gate,
                  c10::optional<torch::Tensor> ln_w, c10::optional<torch::Tensor> ln_b,
                  c10::optional<torch::Tensor> ln_out, c10::optional<torch::Tensor> shift_prev,
                  std::vector<torch::Tensor> mixes, std::vector<torch::Tensor> wkv,
                  std::vector<torch::Tensor> copy_src, std::vector<torch::Tensor> copy_dst) {
  TORCH_CHECK(x.dim() == 2, "decode_stage: x must be (B, K)");
  const int64_t B = x.size(0), K = x.size(1);
  check_f32(x, "x", B * K);
  const size_t n = weights.size();
  TORCH_CHECK(n >= 1 && n <= RWKV4_DECODE_MAX_GEMV && inputs.size() == n && ops.size() == n && outs.size() == n,
              "decode_stage: give 1 to ", RWKV4_DECODE_MAX_GEMV, " weights with one input, op and out each");
  TORCH_CHECK(B >= 1 && B <= RWKV4_DECODE_MAX_BATCH, "decode_stage: batch must be 1..", RWKV4_DECODE_MAX_BATCH);
  TORCH_CHECK(copy_src.size() == copy_dst.size() && copy_src.size() <= RWKV4_DECODE_MAX_COPIES,
              "decode_stage: at most ", RWKV4_DECODE_MAX_COPIES, " copies, as src/dst pairs");
  const at::cuda::CUDAGuard guard(x.device());

  Rwkv4DecodeStage s{};
  s.dtype = weight_dtype(weights[0]);
  s.B = (int)B, s.K = (int)K, s.prologue = (int)prologue, s.x = x.data_ptr<float>();
  s.n_inputs = 1;
  if (prologue == RWKV4_PRO_LAYER_NORM) {
    TORCH_CHECK(ln_w.has_value() && ln_b.has_value(), "decode_stage: layer norm needs its weight and bias");
    s.ln_w = f32(ln_w, "ln_w", K), s.ln_b = f32(ln_b, "ln_b", K), s.ln_out = const_cast<float*>(f32(ln_out, "ln_out", B * K));
    s.shift_prev = f32(shift_prev, "shift_prev", B * K);
    if (s.shift_prev != nullptr) {
      TORCH_CHECK(mixes.size() >= 1 && mixes.size() <= RWKV4_DECODE_MAX_GEMV, "decode_stage: token shift needs 1 to 3 mix vectors");
      s.n_inputs = (int)mixes.size();
      for (size_t i = 0; i < mixes.size(); ++i) s.mix[i] = f32(mixes[i], "mix", K);
    }
  } else if (prologue == RWKV4_PRO_WKV) {
    TORCH_CHECK(wkv.size() == 10, "decode_stage: WKV needs k, v, w, u, aa, bb, pp, aa_out, bb_out, pp_out");
    const int64_t sizes[10] = {B * K, B * K, K, K, B * K, B * K, B * K, B * K, B * K, B * K};
    const float* p[10];
    for (int i = 0; i < 10; ++i) p[i] = f32(wkv[i], "wkv tensor", sizes[i]);
    s.k = p[0], s.v = p[1], s.w = p[2], s.u = p[3], s.aa = p[4], s.bb = p[5], s.pp = p[6];
    s.aa_out = const_cast<float*>(p[7]), s.bb_out = const_cast<float*>(p[8]), s.pp_out = const_cast<float*>(p[9]);
  } else {
    TORCH_CHECK(prologue == RWKV4_PRO_INPUT, "decode_stage: unknown prologue ", prologue);
  }
  s.n_gemv = (int)n;
  for (size_t m = 0; m < n; ++m) {
    const auto& w = weights[m];
    TORCH_CHECK(w.is_cuda() && w.is_contiguous() && w.dim() == 2 && w.size(1) == K && weight_dtype(w) == s.dtype,
                "decode_stage: weight ", m, " must be a contiguous CUDA (rows, ", K, ") matrix of the first one's dtype");
    TORCH_CHECK(inputs[m] >= 0 && inputs[m] < s.n_inputs, "decode_stage: input index out of range");
    TORCH_CHECK(ops[m] >= RWKV4_OP_STORE && ops[m] <= RWKV4_OP_GATED_ADD, "decode_stage: unknown op ", ops[m]);
    check_f32(outs[m], "out", B * w.size(0));
    s.gemv[m] = {w.data_ptr(), (int)w.size(0), (int)inputs[m], (int)ops[m], outs[m].data_ptr<float>(), nullptr};
    if (ops[m] == RWKV4_OP_GATED_ADD) {
      TORCH_CHECK(gate.has_value(), "decode_stage: a gated add needs the gate");
      s.gemv[m].gate = f32(gate, "gate", B * w.size(0));
    }
  }
  s.n_copies = (int)copy_src.size();
  for (size_t c = 0; c < copy_src.size(); ++c) {
    check_f32(copy_dst[c], "copy destination", copy_dst[c].numel());
    check_f32(copy_src[c], "copy source", copy_dst[c].numel());
    s.copy[c] = {copy_src[c].data_ptr<float>(), copy_dst[c].data_ptr<float>(), (int)copy_dst[c].numel()};
  }
  torch::Tensor bytes = torch::empty({(int64_t)sizeof(s)}, torch::kUInt8);
  std::memcpy(bytes.data_ptr(), &s, sizeof(s));
  return bytes;
}

void decode_run(torch::Tensor host, torch::Tensor device, torch::Tensor barrier) {
  const int64_t size = sizeof(Rwkv4DecodeStage);
  TORCH_CHECK(host.device().is_cpu() && host.scalar_type() == torch::kUInt8 && host.is_contiguous() &&
                  host.numel() > 0 && host.numel() % size == 0,
              "decode_run: host must be the concatenated bytes of encoded stages (", size, " each)");
  TORCH_CHECK(device.is_cuda() && device.scalar_type() == torch::kUInt8 && device.is_contiguous() &&
                  device.numel() == host.numel(), "decode_run: device must be the host bytes copied to the GPU");
  TORCH_CHECK(barrier.is_cuda() && barrier.scalar_type() == torch::kInt32 && barrier.is_contiguous() &&
                  barrier.numel() == RWKV4_DECODE_BARRIER_WORDS && barrier.device() == device.device(),
              "decode_run: barrier must be ", RWKV4_DECODE_BARRIER_WORDS, " zeroed int32 on the stages' GPU");
  const auto* stages = reinterpret_cast<const Rwkv4DecodeStage*>(host.data_ptr());
  const int n = (int)(host.numel() / size);
  for (int i = 1; i < n; ++i)
    TORCH_CHECK(stages[i].dtype == stages[0].dtype && stages[i].B == stages[0].B,
                "decode_run: stage ", i, " has another weight dtype or batch than stage 0");
  const at::cuda::CUDAGuard guard(device.device());
  const cudaError_t err = rwkv4_decode_run(stages, reinterpret_cast<const Rwkv4DecodeStage*>(device.data_ptr()), n,
                                           reinterpret_cast<unsigned*>(barrier.data_ptr<int32_t>()),
                                           at::cuda::getCurrentCUDAStream());
  TORCH_CHECK(err == cudaSuccess, "decode_run: CUDA error: ", cudaGetErrorString(err));
}

int64_t decode_barrier_words() { return RWKV4_DECODE_BARRIER_WORDS; }

int64_t decode_smem_bytes(int64_t n_inputs, int64_t batch, int64_t K, int64_t dtype) {
  Rwkv4DecodeStage s{};
  s.n_inputs = (int)n_inputs, s.B = (int)batch, s.K = (int)K, s.dtype = (int)dtype;
  return (int64_t)rwkv4_decode_smem_bytes(s);
}

int64_t decode_smem_limit() {
  int device = 0, bytes = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&bytes, cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  return bytes;
}
