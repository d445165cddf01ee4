// Shared pieces of the CPU attention kernels: generic vectors of this CPU's width,
// loads of float32 / bfloat16, a vector exp, and a parallel loop over XLA's intra-op
// thread pool. Included by decode_attention.cc and train_attention.cc.

#ifndef AUTEUR_KERNELS_SIMD_H_
#define AUTEUR_KERNELS_SIMD_H_

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "xla/ffi/api/ffi.h"

namespace auteur {

namespace ffi = xla::ffi;

#if defined(__AVX512F__)
constexpr int kW = 16;  // floats per vector: one AVX-512 register.
#else
// One AVX2 register: 16-wide generic vectors built for AVX2 ran context 1,024 at 16.1 ms
// per token, 8-wide at 9.8 (benchmarks/director_decode.py --isa avx2, AVX-512 EPYC).
constexpr int kW = 8;
#endif
typedef float vf __attribute__((vector_size(kW * 4)));
typedef int32_t vi __attribute__((vector_size(kW * 4)));
typedef uint32_t vu __attribute__((vector_size(kW * 4)));
typedef uint16_t vh __attribute__((vector_size(kW * 2)));
typedef uint8_t vbyte __attribute__((vector_size(kW)));
constexpr float kMasked = -3.4028234663852886e38f;  // finfo(float32).min, as in JAX.

inline vf Load(const float* p) {
  vf x;
  std::memcpy(&x, p, sizeof(x));
  return x;
}

inline vf Load(const uint16_t* p) {  // bfloat16 is the high half of a float32.
  vh h;
  std::memcpy(&h, p, sizeof(h));
  vu u = __builtin_convertvector(h, vu) << 16;
  vf x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

inline float Scalar(const float* p) { return *p; }

inline float Scalar(const uint16_t* p) {
  uint32_t u = static_cast<uint32_t>(*p) << 16;
  float x;
  std::memcpy(&x, &u, sizeof(x));
  return x;
}

inline void Store(float* p, vf x) { std::memcpy(p, &x, sizeof(x)); }

// x in every lane. x - (+0) is x for every x, so it compiles to one broadcast; `vf{} + x`
// is not (-0 + +0 is +0) and costs an add before each broadcast.
inline vf Splat(float x) { return x - vf{}; }

inline float Sum(vf x) {
  float s = 0.f;
  for (int i = 0; i < kW; ++i) s += x[i];
  return s;
}

// exp(x) for x <= 0, clamped below at -87 (e^-87 ~ 1.6e-38 stands in for 0):
// x = n ln2 + r, |r| <= ln2 / 2, e^r by its degree-7 Taylor-like minimax polynomial.
inline vf Exp(vf x) {
  x = x < -87.0f ? vf{} - 87.0f : x;
  vi n = __builtin_convertvector(x * 1.44269504088896341f - 0.5f, vi);  // round (x <= 0)
  vf fn = __builtin_convertvector(n, vf);
  vf r = x - fn * 0.693359375f + fn * 2.12194440e-4f;  // ln2 split in two for accuracy
  vf p = vf{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  vi scale = (n + 127) << 23;
  vf two_n;
  std::memcpy(&two_n, &scale, sizeof(two_n));
  return p * two_n;
}

// s[t] = exp(s[t] - top) in place for t in [0, n) (top >= every s[t]); returns their sum.
inline float ExpSum(float* s, int64_t n, float top) {
  const int64_t full = n - n % kW;
  vf sum = {};
  for (int64_t t = 0; t < full; t += kW) {
    const vf e = Exp(Load(s + t) - top);
    Store(s + t, e);
    sum += e;
  }
  float total = Sum(sum);
  for (int64_t t = full; t < n; ++t) {
    s[t] = std::exp(std::max(s[t] - top, -87.0f));
    total += s[t];
  }
  return total;
}

// Calls fn(i) for i in [0, n) on the calling thread and up to pool.num_threads() - 1
// helpers. Indices are handed out one at a time; late helpers find none left and return
// at once, so the caller only waits for indices that some thread is running.
inline void ParallelFor(ffi::ThreadPool& pool, int64_t n, std::function<void(int64_t)> fn) {
  struct Work {
    std::function<void(int64_t)> fn;
    int64_t n;
    std::atomic<int64_t> next{0}, done{0};
    void Run() {
      for (int64_t i; (i = next.fetch_add(1)) < n;) {
        fn(i);
        done.fetch_add(1, std::memory_order_release);
      }
    }
  };
  auto work = std::make_shared<Work>();
  work->fn = std::move(fn);
  work->n = n;
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), n) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Run(); });
  work->Run();
  while (work->done.load(std::memory_order_acquire) < n) std::this_thread::yield();
}

inline std::string Dims(ffi::Span<const int64_t> d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

}  // namespace auteur

#endif  // AUTEUR_KERNELS_SIMD_H_
