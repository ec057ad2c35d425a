// srkd's CPU kernels for the MATLAB-bicubic imresize (see srkd/ops/imresize.py for the maths and srkd/ops/native.py
// for how this file is built and loaded).
//
// Why C++: an axis of a resize is a sparse banded map (16 taps per output pixel for x1/4, 4 for x4). torch can
// only run it as dense matrix products over blocks of the band (most of the FLOPs multiply zeros) or as many
// small calls; these loops read each tap once, in registers, and run 2-3x faster on a 2-core CPU.
//
// Both functions take float32 planes laid out (planes, rows, cols), contiguous, and a tap table: for output
// position i, `taps` input indices idx[i * taps + k] (already folded onto the image by MATLAB's symmetric padding,
// so every index is in range) and weights wt[i * taps + k]. They are exported with C linkage and called through
// ctypes with the GIL released; `threads` workers each take a contiguous share of the output.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

namespace {

constexpr int64_t kTile = 16;  // rows the column pass transposes together: one AVX-512 vector of 16 floats

// A zeroed scratch buffer on a cache-line boundary: a 64-byte vector load or store that straddles two lines costs
// two (x1/4 benchmark, one thread: the fused kernel 2.5 ms with std::vector's 16-byte alignment, 1.55 ms with 64).
struct Scratch {
  std::unique_ptr<float, decltype(&std::free)> data;
  explicit Scratch(int64_t n)
      : data(static_cast<float*>(std::aligned_alloc(64, ((n * sizeof(float) + 63) / 64) * 64)), &std::free) {
    if (!data) throw std::bad_alloc();
    std::memset(data.get(), 0, n * sizeof(float));
  }
  float* get() const { return data.get(); }
};

// Runs body over [0, n), split among `threads` workers. Returns 0, or 1 if a share failed (out of memory): no
// exception may cross the C boundary, where it would abort the Python process instead of raising MemoryError.
template <class Body>
int parallel_for(int64_t n, int threads, Body body) {
  std::atomic<bool> failed{false};
  auto run = [&](int64_t begin, int64_t end) {
    try {
      body(begin, end);
    } catch (...) {
      failed = true;
    }
  };
  const int64_t workers = std::max<int64_t>(1, std::min<int64_t>(threads, n));
  std::vector<std::thread> pool;
  for (int64_t t = 1; t < workers; ++t) {
    const int64_t begin = n * t / workers, end = n * (t + 1) / workers;
    try {
      pool.emplace_back(run, begin, end);
    } catch (...) {  // no thread to be had: do that share here
      run(begin, end);
    }
  }
  run(0, n / workers);
  for (auto& worker : pool) worker.join();
  return failed ? 1 : 0;
}

// One output row of the row pass: dst = sum_k w[k] * src[ix[k], :]. Four taps per sweep keep the output row's loads
// and stores to a quarter (measured 1.4 ms against 6.5 ms for one tap per sweep on the x1/4 benchmark).
inline void row_sum(const float* __restrict src, float* __restrict dst, int64_t cols, const int32_t* ix,
                    const float* w, int64_t taps) {
  std::memset(dst, 0, cols * sizeof(float));
  int64_t k = 0;
  for (; k + 4 <= taps; k += 4) {
    const float* __restrict r0 = src + ix[k] * cols;
    const float* __restrict r1 = src + ix[k + 1] * cols;
    const float* __restrict r2 = src + ix[k + 2] * cols;
    const float* __restrict r3 = src + ix[k + 3] * cols;
    const float w0 = w[k], w1 = w[k + 1], w2 = w[k + 2], w3 = w[k + 3];
    for (int64_t j = 0; j < cols; ++j) dst[j] += w0 * r0[j] + w1 * r1[j] + w2 * r2[j] + w3 * r3[j];
  }
  for (; k < taps; ++k) {
    const float* __restrict r = src + ix[k] * cols;
    const float wk = w[k];
    for (int64_t j = 0; j < cols; ++j) dst[j] += wk * r[j];
  }
}

// The column pass on n <= kTile consecutive rows (src row stride in_cols, dst row stride out_cols). A tap reads
// scattered columns, which do not vectorise along a row; so the rows are transposed into `col`, where one column
// of the kTile rows is one contiguous vector, summed into `res`, and transposed back. Lanes past n hold zeros.
inline void tile_cols(const float* src, float* dst, int64_t n, int64_t in_cols, int64_t out_cols,
                      const int32_t* idx, const float* wt, int64_t taps, float* col, float* res) {
  if (n == kTile) {  // column by column: contiguous writes, and a loop of constant length the compiler unrolls
    for (int64_t x = 0; x < in_cols; ++x) {
      for (int64_t r = 0; r < kTile; ++r) col[x * kTile + r] = src[r * in_cols + x];
    }
  } else {
    std::fill(col, col + in_cols * kTile, 0.0f);
    for (int64_t r = 0; r < n; ++r) {
      for (int64_t x = 0; x < in_cols; ++x) col[x * kTile + r] = src[r * in_cols + x];
    }
  }
  for (int64_t j = 0; j < out_cols; ++j) {
    float acc[kTile] = {0.0f};
    const int32_t* ix = idx + j * taps;
    const float* w = wt + j * taps;
    for (int64_t k = 0; k < taps; ++k) {
      const float* c = col + ix[k] * kTile;
      const float wk = w[k];
      for (int64_t r = 0; r < kTile; ++r) acc[r] += wk * c[r];
    }
    std::memcpy(res + j * kTile, acc, sizeof(acc));
  }
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t j = 0; j < out_cols; ++j) dst[r * out_cols + j] = res[j * kTile + r];
  }
}

}  // namespace

// Resize along the rows: out[p, i, :] = sum_k wt[i, k] * in[p, idx[i, k], :]. Each output row is a weighted sum
// of whole input rows, so the inner loop is a contiguous multiply-add the compiler vectorises.
extern "C" int srkd_resize_rows(const float* in, float* out, int64_t planes, int64_t in_rows, int64_t cols,
                                 int64_t out_rows, const int32_t* idx, const float* wt, int64_t taps, int threads) {
  return parallel_for(planes * out_rows, threads, [=](int64_t begin, int64_t end) {
    for (int64_t item = begin; item < end; ++item) {
      const int64_t i = item % out_rows;
      row_sum(in + (item / out_rows) * in_rows * cols, out + item * cols, cols, idx + i * taps, wt + i * taps, taps);
    }
  });
}

// Resize along the columns: out[p, r, j] = sum_k wt[j, k] * in[p, r, idx[j, k]], kTile rows at a time.
extern "C" int srkd_resize_cols(const float* in, float* out, int64_t planes, int64_t rows, int64_t in_cols,
                                 int64_t out_cols, const int32_t* idx, const float* wt, int64_t taps, int threads) {
  const int64_t tiles = (rows + kTile - 1) / kTile;
  return parallel_for(planes * tiles, threads, [=](int64_t begin, int64_t end) {
    Scratch col(in_cols * kTile), res(out_cols * kTile);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t p = item / tiles, r0 = (item % tiles) * kTile;
      tile_cols(in + (p * rows + r0) * in_cols, out + (p * rows + r0) * out_cols, std::min(kTile, rows - r0),
                in_cols, out_cols, idx, wt, taps, col.get(), res.get());
    }
  });
}

// Both passes, rows first, kTile output rows at a time: the row pass's kTile rows stay in this thread's cache and go
// straight into the column pass, instead of a whole intermediate image being written to memory and read back
// (the input of a x1/4 shrink is several times the cache; its intermediate is a quarter of it).
extern "C" int srkd_resize_rows_cols(const float* in, float* out, int64_t planes, int64_t in_rows, int64_t in_cols,
                                      int64_t out_rows, int64_t out_cols, const int32_t* row_idx,
                                      const float* row_wt, int64_t row_taps, const int32_t* col_idx,
                                      const float* col_wt, int64_t col_taps, int threads) {
  const int64_t tiles = (out_rows + kTile - 1) / kTile;
  return parallel_for(planes * tiles, threads, [=](int64_t begin, int64_t end) {
    Scratch mid(kTile * in_cols), col(in_cols * kTile), res(out_cols * kTile);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t p = item / tiles, r0 = (item % tiles) * kTile, n = std::min(kTile, out_rows - r0);
      for (int64_t r = 0; r < n; ++r) {
        row_sum(in + p * in_rows * in_cols, mid.get() + r * in_cols, in_cols, row_idx + (r0 + r) * row_taps,
                row_wt + (r0 + r) * row_taps, row_taps);
      }
      tile_cols(mid.get(), out + (p * out_rows + r0) * out_cols, n, in_cols, out_cols, col_idx, col_wt, col_taps,
                col.get(), res.get());
    }
  });
}
