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
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>

#include "cblas.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int64_t kMinBlock = 64;  // rows or columns per block: smaller blocks lose sgemm speed

struct Product {
  bool transpose_a, transpose_b;
  int64_t m, n, k, lda, ldb;
  const float* a;
  const float* b;
  float* c;
  bool split_rows;  // blocks of C's rows, else of its columns
  int64_t block, n_blocks;
  std::atomic<int64_t> next{0}, done{0};

  // Claims and computes blocks until none is left.
  void Work() {
    for (int64_t i = next.fetch_add(1); i < n_blocks; i = next.fetch_add(1)) {
      const int64_t start = i * block;
      const int64_t size = std::min(block, (split_rows ? m : n) - start);
      const float* a_part = a;
      const float* b_part = b;
      float* c_part = c;
      int64_t rows = m, cols = n;
      if (split_rows) {
        a_part += transpose_a ? start : start * lda;
        c_part += start * n;
        rows = size;
      } else {
        b_part += transpose_b ? start * ldb : start;
        c_part += start;
        cols = size;
      }
      scipy_cblas_sgemm(CblasRowMajor, transpose_a ? CblasTrans : CblasNoTrans,
                        transpose_b ? CblasTrans : CblasNoTrans, rows, cols, k, 1.0f, a_part,
                        lda, b_part, ldb, 0.0f, c_part, n);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

}  // namespace

static ffi::Error Sgemm(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> a, ffi::Buffer<ffi::F32> b,
                        ffi::ResultBuffer<ffi::F32> c, int32_t transpose_a,
                        int32_t transpose_b) {
  static const bool single_threaded = (scipy_openblas_set_num_threads(1), true);
  (void)single_threaded;
  auto a_dims = a.dimensions();
  auto b_dims = b.dimensions();
  if (a_dims.size() != 2 || b_dims.size() != 2) {
    return ffi::Error::InvalidArgument("cpu_matmul: both operands must be 2-D");
  }
  auto product = std::make_shared<Product>();
  Product& p = *product;
  p.transpose_a = transpose_a;
  p.transpose_b = transpose_b;
  p.m = transpose_a ? a_dims[1] : a_dims[0];
  p.k = transpose_a ? a_dims[0] : a_dims[1];
  p.n = transpose_b ? b_dims[0] : b_dims[1];
  if (p.k != (transpose_b ? b_dims[1] : b_dims[0])) {
    return ffi::Error::InvalidArgument("cpu_matmul: contracted dimensions differ");
  }
  float* out = c->typed_data();
  if (p.m == 0 || p.n == 0) return ffi::Error::Success();
  if (p.k == 0) {
    std::fill(out, out + p.m * p.n, 0.0f);
    return ffi::Error::Success();
  }
  p.lda = a_dims[1];
  p.ldb = b_dims[1];
  p.a = a.typed_data();
  p.b = b.typed_data();
  p.c = out;
  p.split_rows = p.m >= p.n;
  const int64_t extent = p.split_rows ? p.m : p.n;
  const int64_t threads = std::max<int64_t>(1, pool.num_threads());
  // One block a thread (two a thread measured 4% slower alone and no faster in a step); a
  // thread held up by other work leaves its block to the caller, which claims what is left.
  const int64_t wanted = std::min<int64_t>(threads, std::max<int64_t>(1, extent / kMinBlock));
  p.block = (extent + wanted - 1) / wanted;
  p.n_blocks = (extent + p.block - 1) / p.block;
  for (int64_t i = 1; i < std::min(threads, p.n_blocks); ++i) {
    pool.Schedule([product] { product->Work(); });
  }
  p.Work();
  while (p.done.load(std::memory_order_acquire) < p.n_blocks) std::this_thread::yield();
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
