// Causal self-attention for XLA:CPU in float32, forward and backward, as XLA FFI custom calls
// (registered by models/cpu_kernels.py, used by models/cpu_attention.py).
//
// Layouts are the model's own, read and written in place through row strides (no head-major
// copies): q and o [B, L, H, Dh], k and v [B, L, K, Dh] with query head h using kv head
// h / (H / K); q comes scaled. Queries go in blocks of `chunk` rows; block [s, e) sees keys
// 0 .. e-1, its scores [C, e] and their softmax stay in a thread's cache (a 64 x 1,024 block is
// 256 KiB), the products are OpenBLAS sgemm calls on strided operands, and nothing of size
// [L, L] is ever written to memory: the forward keeps the rows' log-sum-exp, the backward
// recomputes the probabilities from it (as flash attention does).
//
//   forward   p = exp(s - max) masked, l = rowsum p, o = (p v) / l, lse = max + log l
//   backward  p = exp(s - lse), D = rowsum(do * o), dv += p^T do, dp = do v^T,
//             ds = p (dp - D), dq = ds k, dk += ds^T q
//
// Work items: the forward's (batch, query head) pairs; the backward's (batch, kv head) pairs, so
// the one item that accumulates a kv head's dk and dv is also the only one writing them.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cblas.h"
#include "models/cpu_parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

// exp(x) for x <= ~0 in float32 to ~2 ulp: 2^n * e^r, |r| <= ln2 / 2, a degree-6 Taylor
// polynomial. Branch-free arithmetic (n rounded by adding 1.5 * 2^23), so the compiler
// vectorizes the loops that call it.
inline float Exp(float x) {
  x = x < -87.0f ? -87.0f : x;
  const float shifted = x * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = (x - n * 0.693145751953125f) - n * 1.42860682030941723e-6f;
  float p = 1.0f / 720;
  p = p * r + 1.0f / 120;
  p = p * r + 1.0f / 24;
  p = p * r + 1.0f / 6;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  int32_t bits;
  std::memcpy(&bits, &shifted, sizeof(bits));
  bits = (bits - 0x4B400000 + 127) << 23;  // the low bits of `shifted` hold n
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// Reductions in 8 interleaved lanes (a vector's worth), which the compiler may vectorize
// without reordering a single sum.
constexpr int kLanes = 8;

inline float Max(const float* x, int64_t n) {
  float lanes[kLanes];
  for (int l = 0; l < kLanes; ++l) lanes[l] = x[0];
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] = lanes[l] < x[j + l] ? x[j + l] : lanes[l];
  }
  float top = x[0];
  for (int l = 0; l < kLanes; ++l) top = std::max(top, lanes[l]);
  for (; j < n; ++j) top = std::max(top, x[j]);
  return top;
}

inline float Sum(const float* x, int64_t n) {
  float lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += x[j + l];
  }
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; j < n; ++j) total += x[j];
  return total;
}

inline float Dot(const float* x, const float* y, int64_t n) {
  float lanes[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    for (int l = 0; l < kLanes; ++l) lanes[l] += x[j + l] * y[j + l];
  }
  float total = 0.0f;
  for (int l = 0; l < kLanes; ++l) total += lanes[l];
  for (; j < n; ++j) total += x[j] * y[j];
  return total;
}

struct Shape {
  int64_t batch, length, heads, kv_heads, head_dim, chunk;
  int64_t group() const { return heads / kv_heads; }
  int64_t q_row() const { return heads * head_dim; }     // row stride of q, o, dq, do
  int64_t kv_row() const { return kv_heads * head_dim; }  // row stride of k, v, dk, dv
  int64_t n_blocks() const { return (length + chunk - 1) / chunk; }
};

// Per-thread scratch: a block's scores and their gradients, [chunk, length] each.
std::vector<float>& Scratch(size_t size) {
  thread_local std::vector<float> scratch;
  if (scratch.size() < size) scratch.resize(size);
  return scratch;
}

// s = q[start:end] k[0:end]^T, [rows, end], row stride `end`.
void Scores(const Shape& shape, const float* q, const float* k, int64_t start, int64_t end,
            float* s) {
  scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, end - start, end, shape.head_dim,
                    1.0f, q + start * shape.q_row(), shape.q_row(), k, shape.kv_row(), 0.0f, s,
                    end);
}

void Forward(const Shape& shape, const float* q, const float* k, const float* v, float* o,
             float* lse, int64_t pair) {
  const int64_t b = pair / shape.heads, h = pair % shape.heads, kv = h / shape.group();
  const int64_t dh = shape.head_dim, q_row = shape.q_row(), kv_row = shape.kv_row();
  q += b * shape.length * q_row + h * dh;
  o += b * shape.length * q_row + h * dh;
  k += b * shape.length * kv_row + kv * dh;
  v += b * shape.length * kv_row + kv * dh;
  lse += pair * shape.length;
  const int64_t block_size = shape.chunk * shape.length;
  float* p = Scratch(block_size + shape.chunk).data();
  float* inverse_total = p + block_size;
  for (int64_t start = 0; start < shape.length; start += shape.chunk) {
    const int64_t end = std::min(start + shape.chunk, shape.length), rows = end - start;
    Scores(shape, q, k, start, end, p);
    for (int64_t i = 0; i < rows; ++i) {
      float* row = p + i * end;
      const int64_t visible = start + i + 1;
      const float top = Max(row, visible);
      for (int64_t j = 0; j < visible; ++j) row[j] = Exp(row[j] - top);
      const float total = Sum(row, visible);
      std::fill(row + visible, row + end, 0.0f);
      lse[start + i] = top + std::log(total);
      inverse_total[i] = 1.0f / total;
    }
    // o[start:end] = (p v[0:end]) / l: the division over [C, Dh], not over [C, end].
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, end, 1.0f, p, end, v,
                      kv_row, 0.0f, o + start * q_row, q_row);
    for (int64_t i = 0; i < rows; ++i) {
      float* out = o + (start + i) * q_row;
      for (int64_t d = 0; d < dh; ++d) out[d] *= inverse_total[i];
    }
  }
}

void Backward(const Shape& shape, const float* q, const float* k, const float* v,
              const float* o, const float* lse, const float* dout, float* dq, float* dk,
              float* dv, int64_t pair) {
  const int64_t b = pair / shape.kv_heads, kv = pair % shape.kv_heads;
  const int64_t dh = shape.head_dim, q_row = shape.q_row(), kv_row = shape.kv_row();
  const int64_t kv_offset = b * shape.length * kv_row + kv * dh;
  k += kv_offset;
  v += kv_offset;
  dk += kv_offset;
  dv += kv_offset;
  for (int64_t t = 0; t < shape.length; ++t) {
    std::fill(dk + t * kv_row, dk + t * kv_row + dh, 0.0f);
    std::fill(dv + t * kv_row, dv + t * kv_row + dh, 0.0f);
  }
  const int64_t block_size = shape.chunk * shape.length;
  float* p = Scratch(2 * block_size + shape.chunk).data();
  float* ds = p + block_size;
  float* row_dot = ds + block_size;
  for (int64_t h = kv * shape.group(); h < (kv + 1) * shape.group(); ++h) {
    const int64_t q_offset = b * shape.length * q_row + h * dh;
    const float* qh = q + q_offset;
    const float* oh = o + q_offset;
    const float* doh = dout + q_offset;
    float* dqh = dq + q_offset;
    const float* lse_h = lse + (b * shape.heads + h) * shape.length;
    for (int64_t start = 0; start < shape.length; start += shape.chunk) {
      const int64_t end = std::min(start + shape.chunk, shape.length), rows = end - start;
      Scores(shape, qh, k, start, end, p);
      // dp = do v^T into ds, then ds = p (dp - rowsum(do o)) in place.
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, end, dh, 1.0f,
                        doh + start * q_row, q_row, v, kv_row, 0.0f, ds, end);
      for (int64_t i = 0; i < rows; ++i) {
        const float* o_row = oh + (start + i) * q_row;
        const float* do_row = doh + (start + i) * q_row;
        row_dot[i] = Dot(o_row, do_row, dh);
      }
      for (int64_t i = 0; i < rows; ++i) {
        float* p_row = p + i * end;
        float* ds_row = ds + i * end;
        const int64_t visible = start + i + 1;
        const float row_lse = lse_h[start + i], dot = row_dot[i];
        for (int64_t j = 0; j < visible; ++j) {
          p_row[j] = Exp(p_row[j] - row_lse);
          ds_row[j] = p_row[j] * (ds_row[j] - dot);
        }
        std::fill(p_row + visible, p_row + end, 0.0f);
        std::fill(ds_row + visible, ds_row + end, 0.0f);
      }
      // dv[0:end] += p^T do, dq[start:end] = ds k[0:end], dk[0:end] += ds^T q[start:end].
      scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, end, dh, rows, 1.0f, p, end,
                        doh + start * q_row, q_row, 1.0f, dv, kv_row);
      scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, rows, dh, end, 1.0f, ds, end,
                        k, kv_row, 0.0f, dqh + start * q_row, q_row);
      scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, end, dh, rows, 1.0f, ds, end,
                        qh + start * q_row, q_row, 1.0f, dk, kv_row);
    }
  }
}

// The shape of q [B, L, H, Dh] and k [B, L, K, Dh]; false when they do not fit together.
bool ShapeOf(const ffi::Buffer<ffi::F32>& q, const ffi::Buffer<ffi::F32>& k, int32_t chunk,
             Shape* shape) {
  auto qd = q.dimensions();
  auto kd = k.dimensions();
  if (qd.size() != 4 || kd.size() != 4 || qd[0] != kd[0] || qd[1] != kd[1] || qd[3] != kd[3] ||
      kd[2] == 0 || qd[2] % kd[2] != 0) {
    return false;
  }
  const int64_t length = qd[1];
  *shape = Shape{qd[0], length, qd[2], kd[2], qd[3], chunk > 0 && chunk < length ? chunk : length};
  return true;
}

ffi::Error BadShapes() {
  return ffi::Error::InvalidArgument(
      "cpu_attention: q must be [B, L, H, Dh] and k, v [B, L, K, Dh] with K dividing H");
}

}  // namespace

static ffi::Error AttentionForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                                   ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                                   ffi::ResultBuffer<ffi::F32> o,
                                   ffi::ResultBuffer<ffi::F32> lse, int32_t chunk) {
  cpu_kernels::UseOneOpenblasThread();
  Shape s;
  if (!ShapeOf(q, k, chunk, &s)) return BadShapes();
  if (s.length == 0 || s.head_dim == 0) return ffi::Error::Success();
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  float *op = o->typed_data(), *lp = lse->typed_data();
  cpu_kernels::ParallelFor(pool, s.batch * s.heads,
                           [=](int64_t pair) { Forward(s, qp, kp, vp, op, lp, pair); });
  return ffi::Error::Success();
}

static ffi::Error AttentionBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                                    ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                                    ffi::Buffer<ffi::F32> o, ffi::Buffer<ffi::F32> lse,
                                    ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                                    ffi::ResultBuffer<ffi::F32> dk,
                                    ffi::ResultBuffer<ffi::F32> dv, int32_t chunk) {
  cpu_kernels::UseOneOpenblasThread();
  Shape s;
  if (!ShapeOf(q, k, chunk, &s)) return BadShapes();
  const float *qp = q.typed_data(), *kp = k.typed_data(), *vp = v.typed_data();
  const float *op = o.typed_data(), *lp = lse.typed_data(), *dop = dout.typed_data();
  float *dqp = dq->typed_data(), *dkp = dk->typed_data(), *dvp = dv->typed_data();
  if (s.length == 0 || s.head_dim == 0) return ffi::Error::Success();
  cpu_kernels::ParallelFor(pool, s.batch * s.kv_heads, [=](int64_t pair) {
    Backward(s, qp, kp, vp, op, lp, dop, dqp, dkp, dvp, pair);
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(CpuCausalAttentionForward, AttentionForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("chunk"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(CpuCausalAttentionBackward, AttentionBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("chunk"));
