// Thin torch binding for the fused decode program in rwkv4_decode.cu: a stage is checked and encoded
// once (its struct's bytes, pointing into the tensors given), and a program of encoded stages runs as
// one launch. The caller keeps the tensors alive as long as the stage is used.
#include <torch/extension.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>

#include "bindings.h"
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

float* f32_out(const c10::optional<torch::Tensor>& t, const char* name, int64_t numel) {
  return const_cast<float*>(f32(t, name, numel));
}

void check_weight(const torch::Tensor& w, const char* name, int64_t K, int dtype) {
  TORCH_CHECK(w.is_cuda() && w.is_contiguous() && w.dim() == 2 && w.size(1) == K &&
                  dtype_code(w.scalar_type(), "decode_stage: weights") == dtype,
              "decode_stage: ", name, " must be a contiguous CUDA (rows, ", K, ") matrix of the first weight's dtype");
}

// The channel step and split product (see rwkv4_decode.h): which products it needs kept, and its tensors.
void encode_channel_step(Rwkv4DecodeStage& s, int64_t step, const std::vector<torch::Tensor>& wkv,
                         const c10::optional<torch::Tensor>& split_weight, const c10::optional<torch::Tensor>& split_acc) {
  s.channel_step = (int)step;
  if (step == RWKV4_CHANNEL_NONE) {
    TORCH_CHECK(!split_weight.has_value() && !split_acc.has_value(), "decode_stage: a split product needs a channel step");
    return;
  }
  TORCH_CHECK(step == RWKV4_CHANNEL_WKV || step == RWKV4_CHANNEL_RELU_SQUARE, "decode_stage: unknown channel step ", step);
  const int64_t B = s.B, K = s.K, kept = step == RWKV4_CHANNEL_WKV ? 3 : 1;
  TORCH_CHECK(s.n_gemv >= kept, "decode_stage: the channel step reads the first ", kept, " products");
  for (int m = 0; m < kept; ++m)
    TORCH_CHECK(s.gemv[m].op == RWKV4_OP_KEEP && (kept == 1 || s.gemv[m].rows == K),
                "decode_stage: the channel step's products must be kept", kept == 3 ? " and K rows each" : "");
  if (step == RWKV4_CHANNEL_WKV) {
    TORCH_CHECK(wkv.size() == 5, "decode_stage: the WKV step needs w, u, aa, bb, pp");
    const int64_t sizes[5] = {K, K, B * K, B * K, B * K};
    float* p[5];
    for (int i = 0; i < 5; ++i) p[i] = f32_out(wkv[i], "WKV tensor", sizes[i]);
    s.w = p[0], s.u = p[1], s.aa = p[2], s.bb = p[3], s.pp = p[4];
  }
  TORCH_CHECK(split_weight.has_value() && split_acc.has_value(), "decode_stage: a channel step needs its split weight and accumulator");
  check_weight(*split_weight, "split_weight", K, s.dtype);
  TORCH_CHECK(split_weight->size(0) == s.gemv[0].rows, "decode_stage: split_weight needs one row per row of the first product (",
              s.gemv[0].rows, "), got ", split_weight->size(0));
  s.split_weight = split_weight->data_ptr();
  s.split_acc = f32_out(split_acc, "split_acc", RWKV4_DECODE_SPLIT_COPIES * B * K);
}

}  // namespace

torch::Tensor decode_stage_encode(torch::Tensor x, std::vector<torch::Tensor> weights, std::vector<int64_t> inputs,
                                  std::vector<int64_t> ops, std::vector<torch::Tensor> outs,
                                  c10::optional<torch::Tensor> residual_acc, c10::optional<torch::Tensor> residual_gate,
                                  c10::optional<torch::Tensor> residual_out, torch::Tensor ln_w, torch::Tensor ln_b,
                                  c10::optional<torch::Tensor> ln_out, c10::optional<torch::Tensor> shift_prev,
                                  std::vector<torch::Tensor> mixes, int64_t channel_step, std::vector<torch::Tensor> wkv,
                                  c10::optional<torch::Tensor> split_weight, c10::optional<torch::Tensor> split_acc,
                                  std::vector<torch::Tensor> copy_src, std::vector<torch::Tensor> copy_dst,
                                  std::vector<torch::Tensor> zero) {
  TORCH_CHECK(x.dim() == 2, "decode_stage: x must be (B, K)");
  const int64_t B = x.size(0), K = x.size(1);
  check_f32(x, "x", B * K);
  const size_t n = weights.size();
  TORCH_CHECK(n >= 1 && n <= RWKV4_DECODE_MAX_GEMV && inputs.size() == n && ops.size() == n && outs.size() == n,
              "decode_stage: give 1 to ", RWKV4_DECODE_MAX_GEMV, " weights with one input, op and out each");
  TORCH_CHECK(B >= 1 && B <= RWKV4_DECODE_MAX_BATCH, "decode_stage: batch must be 1..", RWKV4_DECODE_MAX_BATCH);
  TORCH_CHECK(copy_src.size() == copy_dst.size() && copy_src.size() + zero.size() <= RWKV4_DECODE_MAX_COPIES,
              "decode_stage: at most ", RWKV4_DECODE_MAX_COPIES, " copies (src/dst pairs) and zeroed tensors in all");
  TORCH_CHECK(residual_acc.has_value() || !residual_gate.has_value(), "decode_stage: a residual gate needs its accumulator");
  const at::cuda::CUDAGuard guard(x.device());

  Rwkv4DecodeStage s{};
  s.dtype = dtype_code(weights[0].scalar_type(), "decode_stage: weights");
  s.B = (int)B, s.K = (int)K, s.x = x.data_ptr<float>();
  s.residual_acc = f32(residual_acc, "residual_acc", RWKV4_DECODE_SPLIT_COPIES * B * K);
  s.residual_gate = f32(residual_gate, "residual_gate", B * K);
  s.residual_out = f32_out(residual_out, "residual_out", B * K);
  s.ln_w = f32(ln_w, "ln_w", K), s.ln_b = f32(ln_b, "ln_b", K), s.ln_out = f32_out(ln_out, "ln_out", B * K);
  s.shift_prev = f32(shift_prev, "shift_prev", B * K);
  s.n_inputs = 1;
  if (s.shift_prev != nullptr) {
    TORCH_CHECK(mixes.size() >= 1 && mixes.size() <= RWKV4_DECODE_MAX_GEMV, "decode_stage: token shift needs 1 to 3 mix vectors");
    s.n_inputs = (int)mixes.size();
    for (size_t i = 0; i < mixes.size(); ++i) s.mix[i] = f32(mixes[i], "mix", K);
  }
  s.n_gemv = (int)n;
  for (size_t m = 0; m < n; ++m) {
    const auto& w = weights[m];
    check_weight(w, "weight", K, s.dtype);
    TORCH_CHECK(inputs[m] >= 0 && inputs[m] < s.n_inputs, "decode_stage: input index out of range");
    TORCH_CHECK(ops[m] >= RWKV4_OP_STORE && ops[m] <= RWKV4_OP_KEEP, "decode_stage: unknown op ", ops[m]);
    float* out = nullptr;
    if (ops[m] != RWKV4_OP_KEEP) {
      check_f32(outs[m], "out", B * w.size(0));
      out = outs[m].data_ptr<float>();
    }
    s.gemv[m] = {w.data_ptr(), (int)w.size(0), (int)inputs[m], (int)ops[m], out};
  }
  encode_channel_step(s, channel_step, wkv, split_weight, split_acc);
  s.n_copies = (int)(copy_src.size() + zero.size());
  for (size_t c = 0; c < copy_src.size(); ++c) {
    check_f32(copy_dst[c], "copy destination", copy_dst[c].numel());
    check_f32(copy_src[c], "copy source", copy_dst[c].numel());
    s.copy[c] = {copy_src[c].data_ptr<float>(), copy_dst[c].data_ptr<float>(), (int)copy_dst[c].numel()};
  }
  for (size_t c = 0; c < zero.size(); ++c) {
    check_f32(zero[c], "zeroed tensor", zero[c].numel());
    s.copy[copy_src.size() + c] = {nullptr, zero[c].data_ptr<float>(), (int)zero[c].numel()};
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

int64_t decode_split_copies() { return RWKV4_DECODE_SPLIT_COPIES; }

// Shared memory per block of a stage with these prologue vectors and kept products (rows of each kept
// matrix), on this GPU (its blocks share the rows).
int64_t decode_smem_bytes(int64_t n_inputs, int64_t batch, int64_t K, int64_t dtype, std::vector<int64_t> kept_rows) {
  TORCH_CHECK(kept_rows.size() <= RWKV4_DECODE_MAX_GEMV, "decode_smem_bytes: at most ", RWKV4_DECODE_MAX_GEMV, " kept products");
  Rwkv4DecodeStage s{};
  s.n_inputs = (int)n_inputs, s.B = (int)batch, s.K = (int)K, s.dtype = (int)dtype, s.n_gemv = (int)kept_rows.size();
  for (size_t m = 0; m < kept_rows.size(); ++m) s.gemv[m].rows = (int)kept_rows[m], s.gemv[m].op = RWKV4_OP_KEEP;
  int device = 0, sms = 0;
  cudaGetDevice(&device);
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device);
  return (int64_t)rwkv4_decode_smem_bytes(s, sms);
}

int64_t decode_smem_limit() { return (int64_t)rwkv4_decode_smem_available(); }
