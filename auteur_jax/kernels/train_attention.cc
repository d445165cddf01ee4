// Masked softmax attention on CPU, forward and backward: the LLM's full-sequence passes
// (training steps, prefill).
//
// Forward: out[b, l, h, g, :] = sum_t p_t v[b, h, :, t] with p = softmax over the keys t
// where mask[b, l, t] of s_t = q[b, l, h, g, :] . k[b, h, :, t] (q already scaled), and
// lse[b, l, h, g] = log sum_t exp(s_t) over those keys.
// Backward: dq, dk, dv from dout, recomputing p from lse (flash attention's backward:
// ds = p * (dp - rowsum(dout * out)), dp = dout . v).
// Shapes, float32: q / out / dout / dq [B, L, KVH, G, Dh], k / v / dk / dv [B, KVH, Dh, T]
// (the KVCache layout), mask bool [B, L, T], lse [B, L, KVH, G].
// A fully masked row gets the uniform distribution over all T keys, as
// layers._masked_softmax does, and passes no gradient to q or k.
//
// Why: XLA's CPU attention writes every (row, key) score to memory several times
// (scores, probabilities, their gradients; ~190 MB a layer for the toy director's batch)
// and its softmax runs at ~1.5 ns a score. Here a group of kRows query rows streams its
// (batch, kv head) key block once per pass, keeps its scores in cache, and stops at the
// group's last visible key, so a causal mask costs half of a dense one.
//
// Built and registered by auteur_jax/kernels/build.py.

#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "simd.h"

namespace {

using namespace auteur;  // NOLINT: the shared vector helpers.

// Query rows that share one pass over the key block: as many as keep their score and
// gradient vectors in registers (32 AVX-512 registers, 16 AVX2 ones). Measured on the
// toy director's layer (8 x 1,617 tokens, 4 heads x 32), forward + backward: AVX-512
// 4 rows 135 ms, 8 rows 120 ms; AVX2 4 rows 176 ms, 6 rows 160 ms, 8 rows 180 ms.
constexpr int kRows = kW == 16 ? 8 : 6;
constexpr int kMaxDim = 64;  // Head dims up to this (Check() enforces it).
// Accumulator registers of a tile in the p v / ds k products: 8 of AVX2's 16 (with the
// key block's vectors and a broadcast beside them), 16 of AVX-512's 32.
constexpr int kAcc = kW == 16 ? 16 : 8;

// Calls fn(std::integral_constant<int, n>) for a row count n in [1, kRows].
template <int N = kRows, typename F>
void Dispatch(int64_t n, F&& fn) {
  if constexpr (N > 1) {
    if (n < N) return Dispatch<N - 1>(n, fn);
  }
  fn(std::integral_constant<int, N>{});
}

struct Problem {
  int64_t batch, len, kv_heads, groups, dim, slots;
  const float* q;
  const float* k;
  const float* v;
  const bool* mask;

  // Index of row r (= l * G + g) of block (b, h) in [B, L, KVH, G].
  int64_t Row(int64_t b, int64_t h, int64_t r) const {
    return ((b * len + r / groups) * kv_heads + h) * groups + r % groups;
  }
  const bool* MaskRow(int64_t b, int64_t r) const { return mask + (b * len + r / groups) * slots; }
};

// Keys up to and including the last visible one of a mask row (0: none visible).
inline int64_t Extent(const bool* m, int64_t slots) {
  const void* last = memrchr(m, 1, slots);
  return last ? static_cast<const bool*>(last) - m + 1 : 0;
}

inline vf MaskOr(const bool* m, vf x, vf other) {
  vbyte mb;
  std::memcpy(&mb, m, sizeof(mb));
  return __builtin_convertvector(mb, vi) != 0 ? x : other;
}

// Rows that see at least one key, in groups of up to kRows, each with the extent of its
// furthest row; rows that see none listed apart.
struct Groups {
  std::vector<int64_t> rows, starts, extents, dead;
};

Groups GroupRows(const Problem& p, int64_t b) {
  Groups out;
  const int64_t n = p.len * p.groups;
  int64_t e = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (r % p.groups == 0) e = Extent(p.MaskRow(b, r), p.slots);  // One mask row per l.
    if (e == 0) {
      out.dead.push_back(r);
      continue;
    }
    if (out.rows.size() % kRows == 0) {
      out.starts.push_back(out.rows.size());
      out.extents.push_back(0);
    }
    out.rows.push_back(r);
    out.extents.back() = std::max(out.extents.back(), e);
  }
  out.starts.push_back(out.rows.size());
  return out;
}

// bt[t * DP + d] = block[d * T + t] for t < T and d < D, zeros for d in [D, DP): a
// [Dh, T] key / value block as T rows of DP floats (Dh rounded up to whole vectors), so
// that p v and ds k run along the keys with one vector per DP / kW lanes of the output.
void TransposeBlock(const float* block, int64_t D, int64_t T, int64_t DP, float* bt) {
  for (int64_t t = 0; t < T; ++t) {
    float* row = bt + t * DP;
    for (int64_t d = 0; d < D; ++d) row[d] = block[d * T + t];
    std::fill(row + D, row + DP, 0.f);
  }
}

// out[r][d] = scale[r] * sum over t < te of p[r][t] * bt[t * DP + d] for RP rows, DV
// vectors of output lanes (DP = DV * kW): RP * DV independent accumulators, no
// horizontal sums.
template <int RP, int DV>
void RowsTimesBlock(const float* const* p, const float* bt, int64_t te, const float* scale,
                    float* const* out, int64_t D) {
  vf acc[RP][DV] = {};
  for (int64_t t = 0; t < te; ++t) {
    vf b[DV];
    for (int j = 0; j < DV; ++j) b[j] = Load(bt + (t * DV + j) * kW);
    for (int r = 0; r < RP; ++r) {
      const vf pr = Splat(p[r][t]);
      for (int j = 0; j < DV; ++j) acc[r][j] += pr * b[j];
    }
  }
  for (int r = 0; r < RP; ++r) {
    float row[DV * kW];
    for (int j = 0; j < DV; ++j) Store(row + j * kW, acc[r][j] * scale[r]);
    std::copy_n(row, D, out[r]);
  }
}

// RowsTimesBlock for n <= kRows rows (row r of p at p + r * stride), RP rows at a time;
// a last partial tile repeats its first row into a discarded output.
template <int DV>
void RowsTimesBlockAll(const float* p, int64_t stride, int64_t n, const float* bt, int64_t te,
                       const float* scale, float* const* out, int64_t D) {
  constexpr int RP = std::min(kRows, std::max(1, kAcc / DV));
  float spare[DV * kW];
  for (int64_t r0 = 0; r0 < n; r0 += RP) {
    const float* rows[RP];
    float* outs[RP];
    float sc[RP];
    for (int j = 0; j < RP; ++j) {
      const bool real = r0 + j < n;
      rows[j] = p + (real ? r0 + j : r0) * stride;
      outs[j] = real ? out[r0 + j] : spare;
      sc[j] = scale[real ? r0 + j : r0];
    }
    RowsTimesBlock<RP, DV>(rows, bt, te, sc, outs, D);
  }
}

// Calls RowsTimesBlockAll<DV> for DV = DP / kW in [1, kMaxDim / kW].
template <int DV = 1>
void RowsTimesBlockDispatch(const float* p, int64_t stride, int64_t n, const float* bt,
                            int64_t te, const float* scale, float* const* out, int64_t D,
                            int64_t DP) {
  if constexpr (DV < kMaxDim / kW) {
    if (DP > DV * kW) {
      return RowsTimesBlockDispatch<DV + 1>(p, stride, n, bt, te, scale, out, D, DP);
    }
  }
  RowsTimesBlockAll<DV>(p, stride, n, bt, te, scale, out, D);
}

// Scores of NR rows (q: NR rows of kMaxDim floats) over keys [0, te) of the [Dh, T]
// block kb into s (NR rows of T floats), kMasked where the mask hides a key. Two key
// vectors per pass: 2 NR accumulators keep both FMA pipes busy through their latency.
template <int NR>
void Scores(const float* q, const float* kb, const bool* const* m, int64_t T, int64_t D,
            int64_t te, float* s) {
  const vf masked = vf{} + kMasked;
  int64_t t = 0;
  for (; t + 2 * kW <= te; t += 2 * kW) {
    vf a0[NR] = {}, a1[NR] = {};
    for (int64_t d = 0; d < D; ++d) {
      const vf k0 = Load(kb + d * T + t), k1 = Load(kb + d * T + t + kW);
      for (int r = 0; r < NR; ++r) {
        const vf qv = Splat(q[r * kMaxDim + d]);
        a0[r] += qv * k0;
        a1[r] += qv * k1;
      }
    }
    for (int r = 0; r < NR; ++r) {
      Store(s + r * T + t, MaskOr(m[r] + t, a0[r], masked));
      Store(s + r * T + t + kW, MaskOr(m[r] + t + kW, a1[r], masked));
    }
  }
  for (; t + kW <= te; t += kW) {
    vf acc[NR] = {};
    for (int64_t d = 0; d < D; ++d) {
      const vf kv = Load(kb + d * T + t);
      for (int r = 0; r < NR; ++r) acc[r] += q[r * kMaxDim + d] * kv;
    }
    for (int r = 0; r < NR; ++r) Store(s + r * T + t, MaskOr(m[r] + t, acc[r], masked));
  }
  for (; t < te; ++t) {
    for (int r = 0; r < NR; ++r) {
      float a = 0.f;
      for (int64_t d = 0; d < D; ++d) a += q[r * kMaxDim + d] * kb[d * T + t];
      s[r * T + t] = m[r][t] ? a : kMasked;
    }
  }
}

// Per-block scratch of one thread: the group's query (and output gradient) rows packed
// kMaxDim apart, score rows, and the key / value blocks transposed.
struct Scratch {
  alignas(64) float q[kRows * kMaxDim];
  alignas(64) float dout[kRows * kMaxDim];
  std::vector<float> s, kt, vt;
};

Scratch& ThreadScratch(int64_t T, int64_t DP) {
  thread_local Scratch sc;
  sc.s.resize(kRows * T);
  sc.kt.resize(T * DP);
  sc.vt.resize(T * DP);
  return sc;
}

int64_t PaddedDim(int64_t D) { return (D + kW - 1) / kW * kW; }

// Forward of NR rows over keys [0, te): scores, softmax numerators in place, p v.
template <int NR>
void ForwardRows(const Problem& p, const float* kb, const float* vt, int64_t DP,
                 const bool* const* m, float* const* o, float* const* lse, int64_t te,
                 Scratch& sc) {
  const int64_t T = p.slots, D = p.dim;
  float* s = sc.s.data();
  Scores<NR>(sc.q, kb, m, T, D, te, s);
  float inv[NR];
  for (int r = 0; r < NR; ++r) {
    float* sr = s + r * T;
    const int64_t full = te - te % kW;
    vf mx = vf{} + kMasked;
    for (int64_t t = 0; t < full; t += kW) {
      const vf x = Load(sr + t);
      mx = x > mx ? x : mx;
    }
    float top = kMasked;
    for (int i = 0; i < kW; ++i) top = std::max(top, mx[i]);
    for (int64_t t = full; t < te; ++t) top = std::max(top, sr[t]);
    const float total = ExpSum(sr, te, top);
    inv[r] = 1.0f / total;
    *lse[r] = top + std::log(total);
  }
  RowsTimesBlockDispatch(s, T, NR, vt, te, inv, o, D, DP);
}

void ForwardBlock(const Problem& p, int64_t index, float* out, float* lse) {
  const int64_t b = index / p.kv_heads, h = index % p.kv_heads, T = p.slots, D = p.dim;
  const int64_t DP = PaddedDim(D);
  const float* kb = p.k + index * D * T;
  const float* vb = p.v + index * D * T;
  const Groups g = GroupRows(p, b);
  Scratch& sc = ThreadScratch(T, DP);
  TransposeBlock(vb, D, T, DP, sc.vt.data());
  for (size_t i = 0; i + 1 < g.starts.size(); ++i) {
    const bool* m[kRows];
    float* o[kRows];
    float* l[kRows];
    const int64_t n = g.starts[i + 1] - g.starts[i];
    for (int64_t j = 0; j < n; ++j) {
      const int64_t r = g.rows[g.starts[i] + j], at = p.Row(b, h, r);
      std::copy_n(p.q + at * D, D, sc.q + j * kMaxDim);
      m[j] = p.MaskRow(b, r);
      o[j] = out + at * D;
      l[j] = lse + at;
    }
    Dispatch(n, [&](auto rows) {
      ForwardRows<rows.value>(p, kb, sc.vt.data(), DP, m, o, l, g.extents[i], sc);
    });
  }
  for (const int64_t r : g.dead) {  // Uniform weights over every key.
    const int64_t at = p.Row(b, h, r);
    for (int64_t d = 0; d < D; ++d) {
      float a = 0.f;
      for (int64_t t = 0; t < T; ++t) a += vb[d * T + t];
      out[at * D + d] = T ? a / T : 0.f;
    }
    lse[at] = kMasked;
  }
}

// Backward of NR rows over keys [0, te): adds to dk, dv (this block's [Dh, T]) and
// writes dq. q, dout: the rows packed kMaxDim apart in sc; ds: sc.s.
template <int NR>
void BackwardRows(const Problem& p, const float* kb, const float* vb, const float* kt,
                  int64_t DP, const bool* const* m, const float* lse, const float* delta,
                  float* const* dq, float* dk, float* dv, int64_t te, Scratch& sc) {
  const int64_t T = p.slots, D = p.dim, full = te - te % kW;
  const float* q = sc.q;
  const float* dout = sc.dout;
  float* ds = sc.s.data();
  for (int64_t t = 0; t < full; t += kW) {
    vf s[NR] = {}, dp[NR] = {};
    for (int64_t d = 0; d < D; ++d) {
      const vf kv = Load(kb + d * T + t), vv = Load(vb + d * T + t);
      for (int r = 0; r < NR; ++r) {
        s[r] += q[r * kMaxDim + d] * kv;
        dp[r] += dout[r * kMaxDim + d] * vv;
      }
    }
    vf pr[NR], dsr[NR];
    for (int r = 0; r < NR; ++r) {
      pr[r] = MaskOr(m[r] + t, Exp(s[r] - lse[r]), vf{});
      dsr[r] = pr[r] * (dp[r] - delta[r]);
      Store(ds + r * T + t, dsr[r]);
    }
    for (int64_t d = 0; d < D; ++d) {
      vf dkv = Load(dk + d * T + t), dvv = Load(dv + d * T + t);
      for (int r = 0; r < NR; ++r) {
        dkv += q[r * kMaxDim + d] * dsr[r];
        dvv += dout[r * kMaxDim + d] * pr[r];
      }
      Store(dk + d * T + t, dkv);
      Store(dv + d * T + t, dvv);
    }
  }
  for (int64_t t = full; t < te; ++t) {
    for (int r = 0; r < NR; ++r) {
      float s = 0.f, dp = 0.f;
      for (int64_t d = 0; d < D; ++d) {
        s += q[r * kMaxDim + d] * kb[d * T + t];
        dp += dout[r * kMaxDim + d] * vb[d * T + t];
      }
      const float pr = m[r][t] ? std::exp(std::max(s - lse[r], -87.0f)) : 0.f;
      ds[r * T + t] = pr * (dp - delta[r]);
      for (int64_t d = 0; d < D; ++d) {
        dk[d * T + t] += q[r * kMaxDim + d] * ds[r * T + t];
        dv[d * T + t] += dout[r * kMaxDim + d] * pr;
      }
    }
  }
  float one[NR];
  std::fill_n(one, NR, 1.0f);
  RowsTimesBlockDispatch(ds, T, NR, kt, te, one, dq, D, DP);  // dq = ds k^T
}

struct Grads {
  const float* out;
  const float* lse;
  const float* dout;
  float* dq;
  float* dk;
  float* dv;
};

void BackwardBlock(const Problem& p, const Grads& gr, int64_t index) {
  const int64_t b = index / p.kv_heads, h = index % p.kv_heads, T = p.slots, D = p.dim;
  const int64_t DP = PaddedDim(D);
  const float* kb = p.k + index * D * T;
  const float* vb = p.v + index * D * T;
  float* dk = gr.dk + index * D * T;
  float* dv = gr.dv + index * D * T;
  std::fill_n(dk, D * T, 0.f);
  std::fill_n(dv, D * T, 0.f);
  const Groups g = GroupRows(p, b);
  Scratch& sc = ThreadScratch(T, DP);
  TransposeBlock(kb, D, T, DP, sc.kt.data());
  for (size_t i = 0; i + 1 < g.starts.size(); ++i) {
    const bool* m[kRows];
    float* dq[kRows];
    float lse[kRows], delta[kRows];
    const int64_t n = g.starts[i + 1] - g.starts[i];
    for (int64_t j = 0; j < n; ++j) {
      const int64_t r = g.rows[g.starts[i] + j], at = p.Row(b, h, r);
      std::copy_n(p.q + at * D, D, sc.q + j * kMaxDim);
      std::copy_n(gr.dout + at * D, D, sc.dout + j * kMaxDim);
      m[j] = p.MaskRow(b, r);
      dq[j] = gr.dq + at * D;
      lse[j] = gr.lse[at];
      float dl = 0.f;  // rowsum(dout * out)
      for (int64_t d = 0; d < D; ++d) dl += gr.dout[at * D + d] * gr.out[at * D + d];
      delta[j] = dl;
    }
    Dispatch(n, [&](auto rows) {
      BackwardRows<rows.value>(p, kb, vb, sc.kt.data(), DP, m, lse, delta, dq, dk, dv,
                               g.extents[i], sc);
    });
  }
  for (const int64_t r : g.dead) {  // Uniform weights: no gradient to q or k.
    const int64_t at = p.Row(b, h, r);
    std::fill_n(gr.dq + at * D, D, 0.f);
    for (int64_t d = 0; d < D; ++d) {
      const float share = gr.dout[at * D + d] / T;
      for (int64_t t = 0; t < T; ++t) dv[d * T + t] += share;
    }
  }
}

// Checks the shapes of q, k, v and mask; fills `p` with them.
ffi::Error Check(const char* name, const ffi::Buffer<ffi::F32>& q,
                 const ffi::Buffer<ffi::F32>& k, const ffi::Buffer<ffi::F32>& v,
                 const ffi::Buffer<ffi::PRED>& mask, Problem* p) {
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions(),
             md = mask.dimensions();
  if (qd.size() != 5 || kd.size() != 4 || vd.size() != 4 || md.size() != 3) {
    return ffi::Error::InvalidArgument(
        std::string(name) + ": expected q [B, L, KVH, G, Dh], k / v [B, KVH, Dh, T], mask " +
        "[B, L, T]; got q " + Dims(qd) + ", k " + Dims(kd) + ", mask " + Dims(md));
  }
  if (!std::equal(kd.begin(), kd.end(), vd.begin()) || kd[0] != qd[0] || kd[1] != qd[2] ||
      kd[2] != qd[4] || md[0] != qd[0] || md[1] != qd[1] || md[2] != kd[3]) {
    return ffi::Error::InvalidArgument(std::string(name) + ": shapes do not agree: q " +
                                       Dims(qd) + ", k " + Dims(kd) + ", v " + Dims(vd) +
                                       ", mask " + Dims(md));
  }
  if (qd[4] > kMaxDim) {
    return ffi::Error::InvalidArgument(std::string(name) + ": head dim must be at most 64, got " +
                                       std::to_string(qd[4]));
  }
  *p = Problem{qd[0],          qd[1],          qd[2],          qd[3],
               qd[4],          kd[3],          q.typed_data(), k.typed_data(),
               v.typed_data(), mask.typed_data()};
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                   ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask,
                   ffi::ResultBuffer<ffi::F32> out, ffi::ResultBuffer<ffi::F32> lse) {
  Problem p;
  ffi::Error err = Check("train_attention", q, k, v, mask, &p);
  if (err.failure()) return err;
  float* o = out->typed_data();
  float* l = lse->typed_data();
  ParallelFor(pool, p.batch * p.kv_heads, [&](int64_t i) { ForwardBlock(p, i, o, l); });
  return ffi::Error::Success();
}

ffi::Error Backward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q, ffi::Buffer<ffi::F32> k,
                    ffi::Buffer<ffi::F32> v, ffi::Buffer<ffi::PRED> mask,
                    ffi::Buffer<ffi::F32> out, ffi::Buffer<ffi::F32> lse,
                    ffi::Buffer<ffi::F32> dout, ffi::ResultBuffer<ffi::F32> dq,
                    ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv) {
  Problem p;
  ffi::Error err = Check("train_attention backward", q, k, v, mask, &p);
  if (err.failure()) return err;
  const Grads g{out.typed_data(),  lse.typed_data(), dout.typed_data(),
                dq->typed_data(),  dk->typed_data(), dv->typed_data()};
  ParallelFor(pool, p.batch * p.kv_heads, [&](int64_t i) { BackwardBlock(p, g, i); });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(AuteurTrainAttention, Forward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());

XLA_FFI_DEFINE_HANDLER_SYMBOL(AuteurTrainAttentionBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::PRED>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>());
