// Banded softmax attention on the CPU: query i attends the keys lo <= j - i <= hi.
//
// The hot path of kernels/attention.py's Local, Sparse and Strided patterns on CPU, as an
// XLA FFI custom call (built and loaded by kernels/cpu/__init__.py, wrapped with its VJP by
// kernels/cpu/band_attention.py; the blocked XLA band in kernels/attention.py is the
// fallback and the tests' second reference). XLA:CPU runs the batched 64-wide matmuls of a
// blocked band at under 20% of its large-matmul speed, and the band's exp as a separate
// pass; here a tile of TQ queries computes its logits, softmax and output in cache, from
// only the keys its band can reach (144 for 16 queries at radius 64: 90% of them used).
//
// Layout: arrays are sequence-first, [..., L, G, F] row-major (G groups = batch × heads, F
// features; leading axes, from vmap, are more groups), as kernels/attention.py holds them,
// so no transpose is needed on either side. A group's rows are then G·F floats apart; the
// keys are copied to contiguous rows before the micro-kernels read them (at G·F = 512 the
// 144 key rows of a tile fall into 8 of L1's 64 sets, and the kernel ran 1.6× slower
// reading them in place, measured). q is pre-scaled by the softmax scale; valid [..., L, G]
// marks the keys that may be attended. A query with no allowed key gets a zero output and
// lse = kEmptyLse.
//
// Forward:  out[i] = Σ_j softmax_j(s_ij) v[j],  lse[i] = log Σ_j exp(s_ij),  s_ij = q_i·k_j.
// Backward (flash-attention style, P recomputed from lse), with the cotangent of lse too:
//   dP_ij = dout_i·v_j,  dS_ij = P_ij (dP_ij − (dout_i·out_i − dlse_i)),
//   dq_i = Σ_j dS_ij k_j,  dk_j = Σ_i dS_ij q_i,  dv_j = Σ_i P_ij dout_i.
//
// Every matmul is one register-blocked micro-kernel, C[r][:] (+)= Σ_k A[r, k] · B[k][:],
// with A read as broadcast scalars and B, C as rows of 8-float vectors (GCC vector
// extensions: AVX/AVX2 on x86, NEON pairs on Arm), 12 accumulators in registers.

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

using kexue::parallel_for;

constexpr int VL = 8;  // floats per vector
// Queries per tile: 16 reach 144 keys at radius 64; 32 tiles (160 keys) ran 1.25× slower.
constexpr int kTileVecs = 2;
constexpr int TQ = VL * kTileVecs;
constexpr float kEmptyLse = -1e30f;  // kernels/attention.py's _EMPTY_LSE

typedef float vf __attribute__((vector_size(VL * sizeof(float)), aligned(4)));
typedef int32_t vi __attribute__((vector_size(VL * sizeof(int32_t)), aligned(4)));

inline vf load(const float* p) { return *reinterpret_cast<const vf*>(p); }
inline void store(float* p, vf x) { *reinterpret_cast<vf*>(p) = x; }
inline vf splat(float x) { return vf{x, x, x, x, x, x, x, x}; }
static_assert(VL == 8, "splat and the lane iota are written for 8 lanes");

// exp(x) for x <= 0 (logits minus their maximum): Cody–Waite range reduction to
// r in [−ln2/2, ln2/2] and a degree-6 polynomial (Cephes expf coefficients), about 2 ulp.
// Inputs below −87 give about 1e-38, and callers zero the masked entries themselves.
inline vf exp_nonpositive(vf x) {
  x = x < splat(-87.0f) ? splat(-87.0f) : x;
  const vf magic = splat(12582912.0f);  // 1.5·2^23: adding it rounds to an integer
  vf t = x * splat(1.44269504088896341f) + magic;
  vf n = t - magic;
  vf r = x - n * splat(0.693359375f) + n * splat(2.12194440e-4f);
  vf p = splat(1.9875691500e-4f);
  p = p * r + splat(1.3981999507e-3f);
  p = p * r + splat(8.3334519073e-3f);
  p = p * r + splat(4.1665795894e-2f);
  p = p * r + splat(1.6666665459e-1f);
  p = p * r + splat(5.0000001201e-1f);
  vf y = p * r * r + r + splat(1.0f);
  vi scale = (__builtin_convertvector(n, vi) + 127) << 23;
  return y * reinterpret_cast<vf>(scale);
}

// C[r][c·VL …] (+)= Σ_{k<K} A[r·ars + k·aks] · B[k·bs + c·VL …], for R rows and NV vectors.
template <int R, int NV, bool kAccumulate>
inline void micro(int K, const float* A, long ars, long aks, const float* B, long bs,
                  float* C, long cs) {
  vf acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) acc[r][c] = kAccumulate ? load(C + r * cs + c * VL) : vf{};
  for (int k = 0; k < K; ++k) {
    vf b[NV];
    for (int c = 0; c < NV; ++c) b[c] = load(B + k * bs + c * VL);
    for (int r = 0; r < R; ++r) {
      vf a = splat(A[r * ars + k * aks]);
      for (int c = 0; c < NV; ++c) acc[r][c] += a * b[c];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int c = 0; c < NV; ++c) store(C + r * cs + c * VL, acc[r][c]);
}

template <int NV, bool kAccumulate>
inline void micro_rows(int R, int K, const float* A, long ars, long aks, const float* B,
                       long bs, float* C, long cs) {
  switch (R) {
    case 1: return micro<1, NV, kAccumulate>(K, A, ars, aks, B, bs, C, cs);
    case 2: return micro<2, NV, kAccumulate>(K, A, ars, aks, B, bs, C, cs);
    case 3: return micro<3, NV, kAccumulate>(K, A, ars, aks, B, bs, C, cs);
    case 4: return micro<4, NV, kAccumulate>(K, A, ars, aks, B, bs, C, cs);
    case 5: return micro<5, NV, kAccumulate>(K, A, ars, aks, B, bs, C, cs);
    default: return micro<6, NV, kAccumulate>(K, A, ars, aks, B, bs, C, cs);
  }
}

// Columns n … n + NV·VL − 1 of C, in blocks of kRows rows (R·NV accumulators ≤ 12).
template <int NV, int kRows, bool kAccumulate>
inline void matmul_panel(int M, int K, const float* A, long ars, long aks, const float* B,
                         long bs, float* C, long cs) {
  for (int m = 0; m < M; m += kRows)
    micro_rows<NV, kAccumulate>(std::min(kRows, M - m), K, A + m * ars, ars, aks, B, bs,
                                C + m * cs, cs);
}

// C[M][N] (+)= A[M][K] · B[K][N] with A strided (ars, aks), B and C rows of N floats
// (N a multiple of VL) with strides bs and cs, in panels of 2 vectors × 6 rows. (Panels of
// 4 vectors × 3 rows need fewer loads on paper, but GCC then reads B from memory in every
// FMA, and they ran 1.75× slower, measured.)
template <bool kAccumulate>
void matmul(int M, int N, int K, const float* A, long ars, long aks, const float* B, long bs,
            float* C, long cs) {
  int n = 0;
  for (; n + 2 * VL <= N; n += 2 * VL)
    matmul_panel<2, 6, kAccumulate>(M, K, A, ars, aks, B + n, bs, C + n, cs);
  if (n < N) matmul_panel<1, 6, kAccumulate>(M, K, A, ars, aks, B + n, bs, C + n, cs);
}

struct Dims {
  int64_t P, L, G, D, E;  // outer batch, length, groups, key and value features
};

// The inputs every pass reads: q, k [P][L][G][D], v [P][L][G][E], valid [P][L][G]. Group
// n = p·G + g has its rows at `offset(n, F)` + i·`stride(F)`.
struct Band {
  Dims d;
  int64_t lo, hi;
  const float *q, *k, *v;
  const bool* valid;
  int64_t chunk_tiles;  // tiles per task (`Chunk`)

  int64_t groups() const { return d.P * d.G; }
  int64_t tiles() const { return (d.L + TQ - 1) / TQ; }
  int64_t window() const { return TQ + hi - lo; }  // keys a tile can reach
  int64_t offset(int64_t n, int64_t F) const { return (n / d.G * d.L * d.G + n % d.G) * F; }
  int64_t stride(int64_t F) const { return d.G * F; }
};

// One tile: queries i0 … i0 + nq − 1 of a group, and the keys j0 … j0 + W − 1 its band
// reaches inside the sequence.
struct Tile {
  int64_t i0, nq, j0, W;
  Tile(int64_t first, const Band& b) : i0(first) {
    nq = std::min<int64_t>(TQ, b.d.L - i0);
    j0 = std::max<int64_t>(0, i0 + b.lo);
    W = std::max<int64_t>(0, std::min<int64_t>(b.d.L, i0 + nq + b.hi) - j0);
  }
};

// The lanes of query vector c (queries i0 + c·VL …) that may attend key row w of the tile:
// lo ≤ j − i ≤ hi, a real query, and a valid key.
inline vi allowed_lanes(const Band& b, const Tile& t, int64_t w, int c, bool valid_key) {
  const vi lane = vi{0, 1, 2, 3, 4, 5, 6, 7} + c * VL;
  const int64_t offset = t.j0 + w - t.i0;  // j − i0 = (j − i) + u
  const vi ok = (lane >= static_cast<int32_t>(offset - b.hi)) &
                (lane <= static_cast<int32_t>(offset - b.lo)) &
                (lane < static_cast<int32_t>(t.nq));
  return valid_key ? ok : vi{};
}

// Rows x[i·ld …] for i < n → contiguous [n][F].
inline void pack_rows(const float* x, int64_t ld, int64_t n, int64_t F, float* out) {
  for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * F, x + i * ld, sizeof(float) * F);
}

// Rows x[u·ld …] for u < n → columns [F][TQ], zero past n.
inline void pack_transposed(const float* x, int64_t ld, int64_t n, int64_t F, float* out) {
  if (n < TQ) std::memset(out, 0, sizeof(float) * F * TQ);
  for (int64_t u = 0; u < n; ++u)
    for (int64_t f = 0; f < F; ++f) out[f * TQ + u] = x[u * ld + f];
}

// Columns [F][TQ] → rows out[u·ld …] for u < n, each scaled by its query's factor.
inline void unpack_transposed(const float* x, int64_t n, int64_t F, const float* scale,
                              float* out, int64_t ld) {
  for (int64_t u = 0; u < n; ++u)
    for (int64_t f = 0; f < F; ++f) out[u * ld + f] = x[f * TQ + u] * scale[u];
}

// Both passes walk a group in chunks of `Band::chunk_tiles` tiles, with the keys the chunk
// reaches copied to contiguous rows first: the micro-kernels then read keys at stride D (rows
// G·F apart would crowd a few of L1's sets) and each key is copied about once. Tasks are
// (chunk, group) with the group varying fastest, so that consecutive tasks (and the two
// threads) read one stretch of memory: a group at a time streams 1/G of every line the
// prefetchers bring in, and ran 1.3× slower (measured).
constexpr int64_t kChunkTiles = 32;

// The backward pass's chunks: as the forward's for a band narrower than a chunk; a whole
// group for a wider one (dense attention), where every chunk would reach every key and
// hold its own copy of the group's dk and dv.
int64_t backward_chunk_tiles(const Band& b) {
  return b.hi - b.lo >= kChunkTiles * TQ ? b.tiles() : kChunkTiles;
}

struct Chunk {
  int64_t n, first_tile, last_tile;  // group, tiles [first_tile, last_tile)
  int64_t k_first, keys;             // keys [k_first, k_first + keys) the chunk reaches

  Chunk(const Band& b, int64_t task) : n(task % b.groups()) {
    first_tile = task / b.groups() * b.chunk_tiles;
    last_tile = std::min(b.tiles(), first_tile + b.chunk_tiles);
    k_first = std::max<int64_t>(0, first_tile * TQ + b.lo);
    keys = std::min(b.d.L, std::min(b.d.L, last_tile * TQ) + b.hi) - k_first;
  }
};

int64_t chunk_tasks(const Band& b) {
  return b.groups() * ((b.tiles() + b.chunk_tiles - 1) / b.chunk_tiles);
}

int64_t max_chunk_keys(const Band& b) {
  return std::min(b.d.L, b.chunk_tiles * TQ + b.hi - b.lo);
}

// Copies a chunk's keys, values and key validity to contiguous rows.
void pack_chunk_keys(const Band& b, const Chunk& c, float* k_rows, float* v_rows,
                     bool* valid_keys) {
  const Dims& d = b.d;
  pack_rows(b.k + b.offset(c.n, d.D) + c.k_first * b.stride(d.D), b.stride(d.D), c.keys, d.D,
            k_rows);
  pack_rows(b.v + b.offset(c.n, d.E) + c.k_first * b.stride(d.E), b.stride(d.E), c.keys, d.E,
            v_rows);
  for (int64_t j = 0; j < c.keys; ++j)
    valid_keys[j] = b.valid[b.offset(c.n, 1) + (c.k_first + j) * d.G];
}

int64_t forward_scratch_floats(const Band& b) {
  return max_chunk_keys(b) * (b.d.D + b.d.E + 1) + (b.d.D + b.window() + b.d.E) * TQ;
}

// Forward of one chunk (task as in `Chunk`): out rows and lse of its queries.
void forward_chunk(const Band& b, float* out, float* lse, int64_t task, float* scratch) {
  const Dims& d = b.d;
  const Chunk chunk(b, task);
  const int64_t n = chunk.n, k_first = chunk.k_first, qs = b.stride(d.D), vs = b.stride(d.E);
  const int64_t keys = max_chunk_keys(b);
  float* k_rows = scratch;                                          // [keys][D]
  float* v_rows = k_rows + keys * d.D;                              // [keys][E]
  bool* valid_keys = reinterpret_cast<bool*>(v_rows + keys * d.E);  // [keys]
  float* qt = v_rows + keys * d.E + keys;  // [D][TQ], after `keys` floats of room
  float* s = qt + d.D * TQ;                // [W][TQ]: logits, then probabilities
  float* ot = s + b.window() * TQ;         // [E][TQ]
  pack_chunk_keys(b, chunk, k_rows, v_rows, valid_keys);

  for (int64_t tile = chunk.first_tile; tile < chunk.last_tile; ++tile) {
    const Tile t(tile * TQ, b);
    const float* k_tile = k_rows + (t.j0 - k_first) * d.D;
    const float* v_tile = v_rows + (t.j0 - k_first) * d.E;
    const bool* valid_tile = valid_keys + (t.j0 - k_first);
    pack_transposed(b.q + b.offset(n, d.D) + t.i0 * qs, qs, t.nq, d.D, qt);
    matmul<false>(t.W, TQ, d.D, k_tile, d.D, 1, qt, TQ, s, TQ);  // s[w][u] = k_w · q_u

    alignas(32) float shift[TQ], total[TQ], inverse[TQ];
    for (int cv = 0; cv < kTileVecs; ++cv) {
      vf m = splat(-INFINITY);
      for (int64_t w = 0; w < t.W; ++w) {
        float* x = s + w * TQ + cv * VL;
        const vf logit = allowed_lanes(b, t, w, cv, valid_tile[w]) ? load(x) : splat(-INFINITY);
        store(x, logit);
        m = logit > m ? logit : m;
      }
      m = m == splat(-INFINITY) ? vf{} : m;  // no allowed key: any finite shift
      vf sum{};
      for (int64_t w = 0; w < t.W; ++w) {
        float* x = s + w * TQ + cv * VL;
        const vf logit = load(x);
        const vf weight = logit == splat(-INFINITY) ? vf{} : exp_nonpositive(logit - m);
        store(x, weight);
        sum += weight;
      }
      store(shift + cv * VL, m);
      store(total + cv * VL, sum);
      store(inverse + cv * VL, sum > vf{} ? splat(1.0f) / sum : vf{});
    }
    // outᵀ[e][u] = Σ_w v[w][e] · P[w][u], then out[u][e] = outᵀ[e][u] / total[u]
    matmul<false>(d.E, TQ, t.W, v_tile, 1, d.E, s, TQ, ot, TQ);
    unpack_transposed(ot, t.nq, d.E, inverse, out + b.offset(n, d.E) + t.i0 * vs, vs);
    for (int64_t u = 0; u < t.nq; ++u)
      lse[b.offset(n, 1) + (t.i0 + u) * d.G] =
          total[u] > 0 ? shift[u] + std::log(total[u]) : kEmptyLse;
  }
}

// The cotangents and forward results the backward pass reads (layouts as the inputs').
struct BandGrad {
  const float *out, *lse, *dout, *dlse;
};

// The backward pass updates dk and dv once per step of this many tiles, as matmuls over the
// step's TS queries: per tile, those updates sum only 16 products into each output row and
// ran at half the speed of the pass's other matmuls (measured).
constexpr int64_t kStepTiles = 2;
constexpr int64_t TS = kStepTiles * TQ;  // queries per step

int64_t step_window(const Band& b) { return std::min(b.d.L, TS + b.hi - b.lo); }

int64_t backward_scratch_floats(const Band& b) {
  const Dims& d = b.d;
  return max_chunk_keys(b) * (d.D + d.E + 1) + TS * (d.D + d.E) +
         (2 * d.D + d.E) * TQ + 2 * step_window(b) * TS;
}

// Floats of `partial` per chunk task: its dk rows [keys][D], then its dv rows [keys][E].
int64_t partial_floats_per_task(const Band& b) {
  return max_chunk_keys(b) * (b.d.D + b.d.E);
}

// Backward pass 1 of one chunk (task as in `Chunk`): the dq rows of its queries, and its
// share of dk and dv for the keys it reaches, into its own rows of `partial`.
void backward_chunk(const Band& b, const BandGrad& g, float* dq, float* partial, int64_t task,
                    float* scratch) {
  const Dims& d = b.d;
  const Chunk c(b, task);
  const int64_t qs = b.stride(d.D), vs = b.stride(d.E);
  const int64_t q0 = b.offset(c.n, d.D), v0 = b.offset(c.n, d.E), s0 = b.offset(c.n, 1);
  const int64_t keys = max_chunk_keys(b);
  float* k_rows = scratch;                                          // [keys][D]
  float* v_rows = k_rows + keys * d.D;                              // [keys][E]
  bool* valid_keys = reinterpret_cast<bool*>(v_rows + keys * d.E);  // [keys]
  float* q_step = v_rows + keys * d.E + keys;  // [TS][D], after `keys` floats of room
  float* do_step = q_step + TS * d.D;          // [TS][E]
  float* qt = do_step + TS * d.E;              // [D][TQ]
  float* dot = qt + d.D * TQ;                  // [E][TQ]
  float* dqt = dot + d.E * TQ;                 // [D][TQ]
  float* prob = dqt + d.D * TQ;                // [step window][TS]
  float* dprob = prob + step_window(b) * TS;   // [step window][TS]: dP, then dS
  float* dk_rows = partial + task * partial_floats_per_task(b);  // [keys][D]
  float* dv_rows = dk_rows + keys * d.D;                         // [keys][E]
  pack_chunk_keys(b, c, k_rows, v_rows, valid_keys);
  std::memset(dk_rows, 0, sizeof(float) * c.keys * d.D);
  std::memset(dv_rows, 0, sizeof(float) * c.keys * d.E);
  alignas(32) float ones[TQ];
  std::fill(ones, ones + TQ, 1.0f);

  for (int64_t first = c.first_tile; first < c.last_tile; first += kStepTiles) {
    // A step: queries i0 … i0 + queries − 1, keys j0 … j0 + W − 1, with each tile's
    // probabilities and dS in its own TQ columns of prob and dprob (zero off its window).
    const int64_t last = std::min(c.last_tile, first + kStepTiles);
    const int64_t i0 = first * TQ, queries = std::min(d.L, last * TQ) - i0;
    const int64_t j0 = std::max<int64_t>(0, i0 + b.lo);
    const int64_t W = std::max<int64_t>(0, std::min(d.L, i0 + queries + b.hi) - j0);
    pack_rows(b.q + q0 + i0 * qs, qs, queries, d.D, q_step);
    pack_rows(g.dout + v0 + i0 * vs, vs, queries, d.E, do_step);
    std::memset(prob, 0, sizeof(float) * W * TS);
    std::memset(dprob, 0, sizeof(float) * W * TS);
    for (int64_t tile = first; tile < last; ++tile) {
      const Tile t(tile * TQ, b);
      const int64_t col = t.i0 - i0;  // the tile's columns in the step
      pack_transposed(q_step + col * d.D, d.D, t.nq, d.D, qt);
      pack_transposed(do_step + col * d.E, d.E, t.nq, d.E, dot);
      // delta[u] = dout_u · out_u − dlse_u, so that dS = P ⊙ (dP − delta)
      alignas(32) float row_lse[TQ] = {}, delta[TQ] = {};
      for (int64_t u = 0; u < t.nq; ++u) {
        const int64_t i = t.i0 + u;
        const float *o = g.out + v0 + i * vs, *dout = do_step + (col + u) * d.E;
        vf acc{};
        for (int64_t e = 0; e < d.E; e += VL) acc += load(dout + e) * load(o + e);
        float dot_product = 0;
        for (int l = 0; l < VL; ++l) dot_product += acc[l];
        delta[u] = dot_product - g.dlse[s0 + i * d.G];
        row_lse[u] = g.lse[s0 + i * d.G];
      }
      const float* k_tile = k_rows + (t.j0 - c.k_first) * d.D;
      const float* v_tile = v_rows + (t.j0 - c.k_first) * d.E;
      float* p_tile = prob + (t.j0 - j0) * TS + col;
      float* dp_tile = dprob + (t.j0 - j0) * TS + col;
      matmul<false>(t.W, TQ, d.D, k_tile, d.D, 1, qt, TQ, p_tile, TS);    // s[w][u]
      matmul<false>(t.W, TQ, d.E, v_tile, d.E, 1, dot, TQ, dp_tile, TS);  // dP[w][u]
      for (int cv = 0; cv < kTileVecs; ++cv) {
        const vf l = load(row_lse + cv * VL), dl = load(delta + cv * VL);
        for (int64_t w = 0; w < t.W; ++w) {
          float *x = p_tile + w * TS + cv * VL, *dx = dp_tile + w * TS + cv * VL;
          const vf shifted = load(x) - l;  // ≤ 0 up to rounding
          vf pr = exp_nonpositive(shifted > vf{} ? vf{} : shifted);
          pr = allowed_lanes(b, t, w, cv, valid_keys[t.j0 - c.k_first + w]) ? pr : vf{};
          store(x, pr);
          store(dx, pr * (load(dx) - dl));
        }
      }
      // dqᵀ[f][u] = Σ_w k[w][f] · dS[w][u]
      matmul<false>(d.D, TQ, t.W, k_tile, 1, d.D, dp_tile, TS, dqt, TQ);
      unpack_transposed(dqt, t.nq, d.D, ones, dq + q0 + t.i0 * qs, qs);
    }
    // dk[w][:] += Σ_u dS[w][u] · q[u][:],  dv[w][:] += Σ_u P[w][u] · dout[u][:]
    const int64_t w0 = j0 - c.k_first;
    matmul<true>(W, d.D, queries, dprob, TS, 1, q_step, d.D, dk_rows + w0 * d.D, d.D);
    matmul<true>(W, d.E, queries, prob, TS, 1, do_step, d.E, dv_rows + w0 * d.E, d.E);
  }
}

// Backward pass 2 of one chunk's own keys (the positions of its queries): dk and dv as the
// sums of the shares of every chunk whose queries reach them.
void reduce_chunk(const Band& b, const float* partial, float* dk, float* dv, int64_t task) {
  const Dims& d = b.d;
  const Chunk c(b, task);
  const int64_t span = b.chunk_tiles * TQ, groups = b.groups();
  const int64_t qs = b.stride(d.D), vs = b.stride(d.E);
  for (int64_t j = c.first_tile * TQ; j < std::min(d.L, c.last_tile * TQ); ++j) {
    // Queries lo ≤ j − i ≤ hi reach key j: those of chunks first … last.
    const int64_t first = std::max<int64_t>(0, j - b.hi) / span;
    const int64_t last = std::min(d.L - 1, j - b.lo) / span;
    float* dk_row = dk + b.offset(c.n, d.D) + j * qs;
    float* dv_row = dv + b.offset(c.n, d.E) + j * vs;
    for (int64_t f = 0; f < d.D; f += VL) store(dk_row + f, vf{});
    for (int64_t f = 0; f < d.E; f += VL) store(dv_row + f, vf{});
    for (int64_t other = first; other <= last; ++other) {
      const int64_t other_task = other * groups + c.n;
      const int64_t row = j - Chunk(b, other_task).k_first;
      const float* dk_part = partial + other_task * partial_floats_per_task(b) + row * d.D;
      const float* dv_part = partial + other_task * partial_floats_per_task(b) +
                             max_chunk_keys(b) * d.D + row * d.E;
      for (int64_t f = 0; f < d.D; f += VL)
        store(dk_row + f, load(dk_row + f) + load(dk_part + f));
      for (int64_t f = 0; f < d.E; f += VL)
        store(dv_row + f, load(dv_row + f) + load(dv_part + f));
    }
  }
}

// ------------------------------------------------------------------------------------------
// XLA FFI handlers.

// Scratch per thread, grown to the largest request.
float* thread_scratch(int64_t floats) {
  thread_local std::vector<float> scratch;
  if (static_cast<int64_t>(scratch.size()) < floats) scratch.resize(floats);
  return scratch.data();
}

ffi::Unexpected<ffi::Error> invalid(const char* message) {
  return ffi::Unexpected(ffi::Error::InvalidArgument(message));
}

// The arguments as a `Band`; errors the Python wrapper already rules out, for direct callers.
ffi::ErrorOr<Band> band_of(ffi::Buffer<ffi::F32>& q, ffi::Buffer<ffi::F32>& k,
                           ffi::Buffer<ffi::F32>& v, ffi::Buffer<ffi::PRED>& valid,
                           int64_t lo, int64_t hi) {
  auto dims = q.dimensions(), value_dims = v.dimensions();
  const size_t rank = dims.size();
  if (rank < 3) return invalid("band attention: q must be [..., L, G, D]");
  int64_t P = 1;
  for (size_t a = 0; a + 3 < rank; ++a) P *= dims[a];
  const Dims d{P, dims[rank - 3], dims[rank - 2], dims[rank - 1], value_dims[rank - 1]};
  if (d.D % VL || d.E % VL) return invalid("band attention: head dims must be multiples of 8");
  if (lo > 0 || hi < 0) return invalid("band attention: need lo <= 0 <= hi");
  return Band{d, lo, hi, q.typed_data(), k.typed_data(), v.typed_data(), valid.typed_data(),
              kChunkTiles};
}

ffi::Error BandForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                           ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                           ffi::Buffer<ffi::PRED> valid, ffi::ResultBuffer<ffi::F32> out,
                           ffi::ResultBuffer<ffi::F32> lse, int64_t lo, int64_t hi) {
  auto band = band_of(q, k, v, valid, lo, hi);
  if (band.has_error()) return band.error();
  const Band& b = band.value();
  float *o = out->typed_data(), *l = lse->typed_data();
  parallel_for(pool, chunk_tasks(b), [&](int64_t task) {
    forward_chunk(b, o, l, task, thread_scratch(forward_scratch_floats(b)));
  });
  return ffi::Error::Success();
}

ffi::Error BandBackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> q,
                            ffi::Buffer<ffi::F32> k, ffi::Buffer<ffi::F32> v,
                            ffi::Buffer<ffi::PRED> valid, ffi::Buffer<ffi::F32> out,
                            ffi::Buffer<ffi::F32> lse, ffi::Buffer<ffi::F32> dout,
                            ffi::Buffer<ffi::F32> dlse, ffi::ResultBuffer<ffi::F32> dq,
                            ffi::ResultBuffer<ffi::F32> dk, ffi::ResultBuffer<ffi::F32> dv,
                            int64_t lo, int64_t hi) {
  auto band = band_of(q, k, v, valid, lo, hi);
  if (band.has_error()) return band.error();
  Band b = band.value();
  b.chunk_tiles = backward_chunk_tiles(b);
  const BandGrad c{out.typed_data(), lse.typed_data(), dout.typed_data(), dlse.typed_data()};
  float *dq_data = dq->typed_data(), *dk_data = dk->typed_data(), *dv_data = dv->typed_data();
  // Chunks share keys at their edges: each writes its shares apart, then they are summed.
  // Uninitialised: every task zeroes its own rows.
  std::unique_ptr<float[]> partial(new float[chunk_tasks(b) * partial_floats_per_task(b)]);
  parallel_for(pool, chunk_tasks(b), [&](int64_t task) {
    backward_chunk(b, c, dq_data, partial.get(), task,
                   thread_scratch(backward_scratch_floats(b)));
  });
  parallel_for(pool, chunk_tasks(b), [&](int64_t task) {
    reduce_chunk(b, partial.get(), dk_data, dv_data, task);
  });
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(KexueBandAttentionForward, BandForwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // valid
                                  .Ret<ffi::Buffer<ffi::F32>>()   // out
                                  .Ret<ffi::Buffer<ffi::F32>>()   // lse
                                  .Attr<int64_t>("lo")
                                  .Attr<int64_t>("hi"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(KexueBandAttentionBackward, BandBackwardImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<ffi::Buffer<ffi::F32>>()   // q
                                  .Arg<ffi::Buffer<ffi::F32>>()   // k
                                  .Arg<ffi::Buffer<ffi::F32>>()   // v
                                  .Arg<ffi::Buffer<ffi::PRED>>()  // valid
                                  .Arg<ffi::Buffer<ffi::F32>>()   // out
                                  .Arg<ffi::Buffer<ffi::F32>>()   // lse
                                  .Arg<ffi::Buffer<ffi::F32>>()   // dout
                                  .Arg<ffi::Buffer<ffi::F32>>()   // dlse
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dq
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dk
                                  .Ret<ffi::Buffer<ffi::F32>>()   // dv
                                  .Attr<int64_t>("lo")
                                  .Attr<int64_t>("hi"));
