// A float32 matrix product for XLA:CPU that calls OpenBLAS's sgemm (the scipy-openblas32
// wheel), registered as an XLA FFI custom call by models/cpu_matmul.py.
//
// c[M, N] = op(a) . op(b), row-major, op = transpose when the attribute says so: the backward
// pass's products (dy . w^T and x^T . dy) read their operands in place, no transposed copy.
//
// OpenBLAS runs single-threaded; the product is cut into blocks of C's rows (or columns, when
// it has more of them) that XLA's own intra-op thread pool computes, so the step's threads are
// XLA's alone: no second pool spinning beside XLA's on a small machine. Blocks are claimed from
// a shared counter by whichever thread is free, the calling thread included, so a call never
// waits on a task that no free thread will run.

#include <algorithm>
#include <cstdint>

#include "cblas.h"
#include "models/cpu_parallel.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMinBlock = 64;  // rows or columns per block: smaller blocks lose sgemm speed

}  // namespace

static ffi::Error Sgemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                        ffi::ResultBuffer<ffi::F32> c, int32_t transpose_a,
                        int32_t transpose_b) {
  cpu_kernels::UseOneOpenblasThread();
  auto a_dims = a.dimensions();
  auto b_dims = b.dimensions();
  if (a_dims.size() != 2 || b_dims.size() != 2) {
    return ffi::Error::InvalidArgument("cpu_matmul: both operands must be 2-D");
  }
  const bool transposed_a = transpose_a, transposed_b = transpose_b;
  const int64_t m = transposed_a ? a_dims[1] : a_dims[0];
  const int64_t k = transposed_a ? a_dims[0] : a_dims[1];
  const int64_t n = transposed_b ? b_dims[0] : b_dims[1];
  if (k != (transposed_b ? b_dims[1] : b_dims[0])) {
    return ffi::Error::InvalidArgument("cpu_matmul: contracted dimensions differ");
  }
  float* out = c->typed_data();
  if (m == 0 || n == 0) return ffi::Error::Success();
  if (k == 0) {
    std::fill(out, out + m * n, 0.0f);
    return ffi::Error::Success();
  }
  const int64_t lda = a_dims[1], ldb = b_dims[1];
  const float* a_data = a.typed_data();
  const float* b_data = b.typed_data();
  const bool split_rows = m >= n;  // blocks of C's rows, else of its columns
  const int64_t extent = split_rows ? m : n;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // One block a thread (two a thread measured 4% slower alone and no faster in a step); a
  // thread held up by other work leaves its block to the caller, which claims what is left.
  const int64_t wanted = std::min<int64_t>(threads, std::max<int64_t>(1, extent / kMinBlock));
  const int64_t block = (extent + wanted - 1) / wanted;
  const int64_t n_blocks = (extent + block - 1) / block;
  cpu_kernels::ParallelFor(pool, n_blocks, [=](int64_t i) {
    const int64_t start = i * block;
    const int64_t size = std::min(block, extent - start);
    const float* a_part = a_data;
    const float* b_part = b_data;
    float* c_part = out;
    int64_t rows = m, cols = n;
    if (split_rows) {
      a_part += transposed_a ? start : start * lda;
      c_part += start * n;
      rows = size;
    } else {
      b_part += transposed_b ? start * ldb : start;
      c_part += start;
      cols = size;
    }
    scipy_cblas_sgemm(CblasRowMajor, transposed_a ? CblasTrans : CblasNoTrans,
                      transposed_b ? CblasTrans : CblasNoTrans, rows, cols, k, 1.0f, a_part, lda,
                      b_part, ldb, 0.0f, c_part, n);
  });
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(CpuSgemm, Sgemm,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int32_t>("transpose_a")
                                  .Attr<int32_t>("transpose_b"));
