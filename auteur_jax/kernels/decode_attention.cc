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
// Built and registered by auteur_jax/kernels/build.py.

#include <cmath>
#include <vector>

#include "simd.h"

namespace {

using namespace auteur;  // NOLINT: the shared vector helpers.

constexpr int kGroup = 4;      // query rows that share one pass over the cache block.
constexpr int kMaxRows = 16;   // L * G limit per call (the Python side checks it too).

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
  // The pass reads Dh rows of the block at once, more streams than the hardware
  // prefetcher follows; fetching each row 4 cache lines ahead keeps the reads at memory
  // speed: 8 layers' attention at 1,280 bfloat16 slots (42 MB, cold) 2.2-2.6 -> 1.4-1.5 ms
  // (AVX-512 EPYC), 2.9-3.3 -> 2.1-2.4 ms built for AVX2.
  constexpr int64_t kLine = 64 / sizeof(C), kAhead = 4 * kLine;
  for (int64_t t = 0; t < full; t += kW) {
    vf acc[NR] = {};
    const bool fetch = t % kLine == 0;
    for (int64_t d = 0; d < D; ++d) {
      if (fetch) __builtin_prefetch(kb + d * T + t + kAhead);
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
    inv[r] = 1.0f / ExpSum(sr, T, top);
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
  const Problem p{qd[0], qd[1], qd[2], qd[3], qd[4], kd[3], q.typed_data(),
                  k.untyped_data(), v.untyped_data(), mask.typed_data(), out->typed_data()};
  // One (batch, kv head) block per task.
  ParallelFor(pool, qd[0] * qd[2], [&p, bf16](int64_t i) {
    if (bf16) {
      Block<uint16_t>(p, i);
    } else {
      Block<float>(p, i);
    }
  });
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
