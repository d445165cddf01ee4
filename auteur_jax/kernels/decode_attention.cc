// Decode attention on CPU: a few query rows per (batch, kv head) over a KV cache.
//
// out[b, l, h, g, :] = softmax_t(q[b, l, h, g, :] . k[b, h, :, t], masked by
// mask[b, l, t]) @ v[b, h, :, t]^T, for q [B, L, KVH, G, Dh] float32 (already scaled),
// k / v [B, KVH, Dh, T] float32, or bfloat16 (as itself or its uint16 bits: the
// KVCache layout and storage), mask bool [B, L, T].
// A fully masked row gets the uniform distribution, as layers._masked_softmax does.
//
// Why: in a decode step the L * G query rows of one (batch, kv head) are few and its
// cache block is large. XLA's CPU dot runs those rows as a small GEMM that first packs
// (copies) the block, and converts a bfloat16 cache to a float32 copy before that;
// here each block is read once, for all its rows together, and bfloat16 is widened in
// registers. Blocks are shared out over XLA's intra-op thread pool.
//
// Built and registered by auteur_jax/kernels/cpu.py.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

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
constexpr int kGroup = 4;      // query rows that share one pass over the cache block.
constexpr int kMaxRows = 16;   // L * G limit per call (the Python side checks it too).
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

struct Problem {
  int64_t batch, len, kv_heads, groups, dim, slots;
  const float* q;
  const void* k;
  const void* v;
  const bool* mask;
  float* out;
};

// Rows [r0, r0 + NR) of one (batch, kv head) block. s: NR score rows of `slots`.
template <int NR, typename C>
void Rows(const Problem& p, const C* kb, const C* vb, const float* const* q,
          float* const* o, const bool* const* m, float* s) {
  const int64_t T = p.slots, D = p.dim, full = T - T % kW;
  // Scores: NR accumulators per kW slots, the cache block streamed row by row.
  for (int64_t t = 0; t < full; t += kW) {
    vf acc[NR] = {};
    for (int64_t d = 0; d < D; ++d) {
      vf kv = Load(kb + d * T + t);
      for (int r = 0; r < NR; ++r) acc[r] += q[r][d] * kv;
    }
    for (int r = 0; r < NR; ++r) Store(s + r * T + t, acc[r]);
  }
  for (int64_t t = full; t < T; ++t) {
    for (int r = 0; r < NR; ++r) {
      float a = 0.f;
      for (int64_t d = 0; d < D; ++d) a += q[r][d] * Scalar(kb + d * T + t);
      s[r * T + t] = a;
    }
  }
  // Masked softmax numerators, in place; inv[r] = 1 / their sum.
  float inv[NR];
  for (int r = 0; r < NR; ++r) {
    float* sr = s + r * T;
    vf mx = vf{} + kMasked;
    for (int64_t t = 0; t < full; t += kW) {
      vbyte mb;
      std::memcpy(&mb, m[r] + t, sizeof(mb));
      vf x = __builtin_convertvector(mb, vi) != 0 ? Load(sr + t) : vf{} + kMasked;
      Store(sr + t, x);
      mx = x > mx ? x : mx;
    }
    float top = kMasked;
    for (int i = 0; i < kW; ++i) top = std::max(top, mx[i]);
    for (int64_t t = full; t < T; ++t) {
      sr[t] = m[r][t] ? sr[t] : kMasked;
      top = std::max(top, sr[t]);
    }
    vf sum = {};
    for (int64_t t = 0; t < full; t += kW) {
      vf e = Exp(Load(sr + t) - top);
      Store(sr + t, e);
      sum += e;
    }
    float total = Sum(sum);
    for (int64_t t = full; t < T; ++t) {
      sr[t] = std::exp(std::max(sr[t] - top, -87.0f));
      total += sr[t];
    }
    inv[r] = 1.0f / total;
  }
  // Values: each row of the block once, dotted with all NR probability rows.
  for (int64_t d = 0; d < D; ++d) {
    const C* vr = vb + d * T;
    vf acc[NR] = {};
    for (int64_t t = 0; t < full; t += kW) {
      vf vv = Load(vr + t);
      for (int r = 0; r < NR; ++r) acc[r] += Load(s + r * T + t) * vv;
    }
    for (int r = 0; r < NR; ++r) {
      float a = Sum(acc[r]);
      for (int64_t t = full; t < T; ++t) a += s[r * T + t] * Scalar(vr + t);
      o[r][d] = a * inv[r];
    }
  }
}

template <typename C>
void Block(const Problem& p, int64_t index) {
  const int64_t b = index / p.kv_heads, h = index % p.kv_heads;
  const int64_t rows = p.len * p.groups, block = p.dim * p.slots;
  const C* kb = static_cast<const C*>(p.k) + index * block;
  const C* vb = static_cast<const C*>(p.v) + index * block;
  const float* q[kMaxRows];
  float* o[kMaxRows];
  const bool* m[kMaxRows];
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t l = r / p.groups, g = r % p.groups;
    const int64_t at = (((b * p.len + l) * p.kv_heads + h) * p.groups + g) * p.dim;
    q[r] = p.q + at;
    o[r] = p.out + at;
    m[r] = p.mask + (b * p.len + l) * p.slots;
  }
  thread_local std::vector<float> scratch;
  scratch.resize(kGroup * p.slots);
  for (int64_t r = 0; r < rows; r += kGroup) {
    switch (std::min<int64_t>(kGroup, rows - r)) {
      case 1: Rows<1>(p, kb, vb, q + r, o + r, m + r, scratch.data()); break;
      case 2: Rows<2>(p, kb, vb, q + r, o + r, m + r, scratch.data()); break;
      case 3: Rows<3>(p, kb, vb, q + r, o + r, m + r, scratch.data()); break;
      default: Rows<4>(p, kb, vb, q + r, o + r, m + r, scratch.data()); break;
    }
  }
}

// Blocks handed out one at a time; late workers find none left and return at once,
// so the caller only ever waits for blocks that some thread is running.
struct Work {
  Problem p;
  bool bf16;
  int64_t blocks;
  std::atomic<int64_t> next{0}, done{0};

  void Run() {
    for (int64_t i; (i = next.fetch_add(1)) < blocks;) {
      if (bf16) {
        Block<uint16_t>(p, i);
      } else {
        Block<float>(p, i);
      }
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

std::string Dims(ffi::Span<const int64_t> d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

ffi::Error DecodeAttention(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::AnyBuffer k,
                           ffi::AnyBuffer v, ffi::Buffer<ffi::PRED> mask,
                           ffi::ResultBuffer<ffi::F32> out) {
  auto qd = q.dimensions(), kd = k.dimensions(), md = mask.dimensions();
  if (qd.size() != 5 || kd.size() != 4 || md.size() != 3) {
    return ffi::Error::InvalidArgument(
        "decode_attention: expected q [B, L, KVH, G, Dh], k / v [B, KVH, Dh, T], mask "
        "[B, L, T]; got q " + Dims(qd) + ", k " + Dims(kd) + ", mask " + Dims(md));
  }
  const bool same = std::equal(kd.begin(), kd.end(), v.dimensions().begin()) &&
                    v.dimensions().size() == 4 && k.element_type() == v.element_type();
  if (!same || kd[0] != qd[0] || kd[1] != qd[2] || kd[2] != qd[4] || md[0] != qd[0] ||
      md[1] != qd[1] || md[2] != kd[3]) {
    return ffi::Error::InvalidArgument(
        "decode_attention: shapes do not agree: q " + Dims(qd) + ", k " + Dims(kd) +
        ", v " + Dims(v.dimensions()) + ", mask " + Dims(md));
  }
  const bool bf16 = k.element_type() == ffi::DataType::BF16 ||
                    k.element_type() == ffi::DataType::U16;
  if (!bf16 && k.element_type() != ffi::DataType::F32) {
    return ffi::Error::InvalidArgument(
        "decode_attention: cache must be float32, bfloat16 or its uint16 bits");
  }
  if (qd[1] * qd[3] > kMaxRows) {
    return ffi::Error::InvalidArgument("decode_attention: L * G must be at most 16, got " +
                                       std::to_string(qd[1] * qd[3]));
  }
  if (kd[3] == 0) {  // No slots: nothing to attend to (the einsums give zeros too).
    std::fill_n(out->typed_data(), out->element_count(), 0.0f);
    return ffi::Error::Success();
  }
  auto work = std::make_shared<Work>();
  work->p = Problem{qd[0], qd[1], qd[2], qd[3], qd[4], kd[3], q.typed_data(),
                    k.untyped_data(), v.untyped_data(), mask.typed_data(),
                    out->typed_data()};
  work->bf16 = bf16;
  work->blocks = qd[0] * qd[2];
  const int64_t helpers = std::min<int64_t>(pool.num_threads(), work->blocks) - 1;
  for (int64_t i = 0; i < helpers; ++i) pool.Schedule([work] { work->Run(); });
  work->Run();
  while (work->done.load(std::memory_order_acquire) < work->blocks) std::this_thread::yield();
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AuteurDecodeAttention, DecodeAttention,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::AnyBuffer>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
