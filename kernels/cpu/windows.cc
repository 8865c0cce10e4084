// The windows of a 2-D convolution (im2col) and their overlap-add (col2im) on the CPU.
//
// The gather of kernels/conv.py's patch-matmul convolutions, as an XLA FFI custom call
// (built and loaded by kernels/cpu/__init__.py, wrapped as a differentiable pair by
// kernels/cpu/windows.py; the strided slices of kernels/conv.py are the fallback and the
// tests' reference). XLA:CPU emits that gather as a loop that indexes every element through
// the 5-D output shape and moves about 1.7 GB/s, several times below a copy; for a DCGAN
// step it took longer than the matmuls it feeds. Here every window row is one contiguous copy.
//
// Layout (row-major): x [B, H, W, C]; windows [B, Ho, Wo, kh·kw, C], tap (i, j) at i·kw + j:
//   windows[b, p, q, i·kw + j, :] = x[b, p·sh + i − top, q·sw + j − left, :]
// and zeros where that pixel lies outside x (top and left may be negative: a crop). Leading
// axes beyond B (from vmap) fold into B. For fixed (b, p, q, i) the kw taps of a kernel row
// are kw consecutive pixels of x, so both directions move kw·C contiguous floats at a time.
//
// Gather:  windows as above.
// Scatter: its transpose, x[b, h, w, :] = Σ windows[b, p, q, i·kw + j, :] over the taps
//   that read (h, w). Each task owns one row of x, so no two threads write one float.

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "parallel_for.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

struct Geometry {
  int64_t B, H, W, C, Ho, Wo, kh, kw, sh, sw, top, left;
  int64_t taps() const { return kh * kw; }
};

// The columns j of a kernel row whose pixel q·sw + j − left lies inside [0, W).
inline void valid_columns(const Geometry& g, int64_t q, int64_t& first, int64_t& end) {
  const int64_t w0 = q * g.sw - g.left;
  first = std::clamp<int64_t>(-w0, 0, g.kw);
  end = std::clamp<int64_t>(g.W - w0, first, g.kw);
}

// Windows of output row (b, p): Wo · kh rows of kw·C floats.
void gather_row(const Geometry& g, const float* x, float* windows, int64_t b, int64_t p) {
  const int64_t C = g.C, row_floats = g.kw * C;
  for (int64_t q = 0; q < g.Wo; ++q) {
    int64_t first, end;
    valid_columns(g, q, first, end);
    const int64_t w0 = q * g.sw - g.left;
    float* out = windows + ((b * g.Ho + p) * g.Wo + q) * g.taps() * C;
    for (int64_t i = 0; i < g.kh; ++i, out += row_floats) {
      const int64_t h = p * g.sh + i - g.top;
      if (h < 0 || h >= g.H || first >= end) {
        std::memset(out, 0, row_floats * sizeof(float));
        continue;
      }
      std::memset(out, 0, first * C * sizeof(float));
      std::memcpy(out + first * C, x + ((b * g.H + h) * g.W + w0 + first) * C,
                  (end - first) * C * sizeof(float));
      std::memset(out + end * C, 0, (g.kw - end) * C * sizeof(float));
    }
  }
}

// Row (b, h) of x: the sum of every window row that read it.
void scatter_row(const Geometry& g, const float* windows, float* x, int64_t b, int64_t h) {
  const int64_t C = g.C;
  float* row = x + (b * g.H + h) * g.W * C;
  std::memset(row, 0, g.W * C * sizeof(float));
  for (int64_t i = 0; i < g.kh; ++i) {
    const int64_t offset = h + g.top - i;  // = p·sh for the output rows p that read row h
    if (offset < 0 || offset % g.sh) continue;
    const int64_t p = offset / g.sh;
    if (p >= g.Ho) continue;
    for (int64_t q = 0; q < g.Wo; ++q) {
      int64_t first, end;
      valid_columns(g, q, first, end);
      const float* in = windows + (((b * g.Ho + p) * g.Wo + q) * g.taps() + i * g.kw) * C;
      float* target = row + (q * g.sw - g.left) * C;
      for (int64_t f = first * C; f < end * C; ++f) target[f] += in[f];
    }
  }
}

ffi::Error invalid(const char* message) { return ffi::Error::InvalidArgument(message); }

// [B…, H, W, C] and [B…, Ho, Wo, kh·kw, C] as a Geometry, or an error.
ffi::Error geometry_of(ffi::Span<const int64_t> image, ffi::Span<const int64_t> windows,
                       int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t top,
                       int64_t left, Geometry& g) {
  const size_t rank = image.size();
  if (rank < 4 || windows.size() != rank + 1)
    return invalid("windows: need an image [B, H, W, C] and windows [B, Ho, Wo, kh·kw, C]");
  int64_t B = 1;
  for (size_t a = 0; a + 3 < rank; ++a) {
    if (image[a] != windows[a]) return invalid("windows: batch axes differ");
    B *= image[a];
  }
  g = Geometry{B, image[rank - 3], image[rank - 2], image[rank - 1], windows[rank - 3],
               windows[rank - 2], kh, kw, sh, sw, top, left};
  if (kh < 1 || kw < 1 || sh < 1 || sw < 1) return invalid("windows: need positive sizes");
  if (windows[rank - 1] != kh * kw || windows[rank] != g.C)
    return invalid("windows: the windows' last axes must be [kh·kw, C]");
  return ffi::Error::Success();
}

ffi::Error GatherImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x,
                      ffi::ResultBuffer<ffi::F32> windows, int64_t kh, int64_t kw, int64_t sh,
                      int64_t sw, int64_t top, int64_t left) {
  Geometry g;
  ffi::Error error = geometry_of(x.dimensions(), windows->dimensions(), kh, kw, sh, sw, top,
                                 left, g);
  if (error.failure()) return error;
  const float* in = x.typed_data();
  float* out = windows->typed_data();
  kexue::parallel_for(pool, g.B * g.Ho, [&](int64_t task) {
    gather_row(g, in, out, task / g.Ho, task % g.Ho);
  });
  return ffi::Error::Success();
}

ffi::Error ScatterImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> windows,
                       ffi::ResultBuffer<ffi::F32> x, int64_t kh, int64_t kw, int64_t sh,
                       int64_t sw, int64_t top, int64_t left) {
  Geometry g;
  ffi::Error error = geometry_of(x->dimensions(), windows.dimensions(), kh, kw, sh, sw, top,
                                 left, g);
  if (error.failure()) return error;
  const float* in = windows.typed_data();
  float* out = x->typed_data();
  kexue::parallel_for(pool, g.B * g.H, [&](int64_t task) {
    scatter_row(g, in, out, task / g.H, task % g.H);
  });
  return ffi::Error::Success();
}

}  // namespace

// Both handlers: one array in, one out, and the window geometry.
static auto windows_binding() {
  return ffi::Ffi::Bind()
      .Ctx<ffi::ThreadPool>()
      .Arg<ffi::Buffer<ffi::F32>>()
      .Ret<ffi::Buffer<ffi::F32>>()
      .Attr<int64_t>("kh")
      .Attr<int64_t>("kw")
      .Attr<int64_t>("sh")
      .Attr<int64_t>("sw")
      .Attr<int64_t>("top")
      .Attr<int64_t>("left");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(KexueWindowsGather, GatherImpl, windows_binding());    // x → windows
XLA_FFI_DEFINE_HANDLER_SYMBOL(KexueWindowsScatter, ScatterImpl, windows_binding());  // windows → x
