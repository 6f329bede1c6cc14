// oneDNN's 2-D convolutions as three XLA FFI handlers (forward, input gradient, weight gradient), and its
// batch normalization in training as two (forward with the batch statistics, backward; at the end).
//
// Layouts are JAX's channels-last: x (..., N, H, W, C), kernel (..., KH, KW, C, F), y (..., N, OH, OW, F),
// float32, any stride, explicit non-negative (low, high) padding, no dilation, no groups. Leading
// dimensions in front of those four are vmapped axes (jax.ffi's vmap_method="expand_dims": an operand
// that is not batched along one has size 1 there and is shared); the result has them all.
//
// Activations are passed to oneDNN as they are (nhwc); the kernel (and the weight gradient) go
// through a reorder into the layout the primitive prefers, which is small next to the convolution.
// Primitives are built once per shape (a cache keyed on the geometry) and executed with a user
// scratchpad, so concurrent calls from several XLA threads never share a buffer. Each call sets
// OpenMP's thread count (of the calling thread) to the `threads` attribute, which Python sets to
// XLA:CPU's thread count. Vmapped members with their own kernels run side by side, one thread and one
// single-threaded primitive each, when their convolutions are small (`across_members`); otherwise one
// after another, each primitive on every thread.
//
// Built by nnbasics/nn/onednn/__init__.py (g++ -O2 -shared against jax.ffi.include_dir() and the
// onednn-devel-cpu-gomp wheel).

#include <omp.h>

#include <array>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "oneapi/dnnl/dnnl.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using dnnl::memory;
using tag = dnnl::memory::format_tag;

namespace {

enum Kind : int64_t { kForward = 0, kBackwardData = 1, kBackwardWeights = 2 };

// n, h, w, c, f, kh, kw, oh, ow, sh, sw, pt, pb, pl, pr, kind, threads the primitive was built for
using Key = std::array<int64_t, 17>;

struct Geometry {
  int64_t n, h, w, c, f, kh, kw, oh, ow, sh, sw, pt, pb, pl, pr;
  Key key(Kind kind, int64_t threads) const {
    return {n, h, w, c, f, kh, kw, oh, ow, sh, sw, pt, pb, pl, pr, kind, threads};
  }
  memory::desc act(int64_t batch) const { return memory::desc({batch, c, h, w}, memory::data_type::f32, tag::nhwc); }
  memory::desc out(int64_t batch) const { return memory::desc({batch, f, oh, ow}, memory::data_type::f32, tag::nhwc); }
  memory::desc hwio() const { return memory::desc({f, c, kh, kw}, memory::data_type::f32, tag::hwio); }
  memory::desc any_weights() const { return memory::desc({f, c, kh, kw}, memory::data_type::f32, tag::any); }
};

struct Entry {
  dnnl::primitive conv;
  memory::desc weights;  // the primitive's kernel (or kernel-gradient) layout
  memory::desc scratch;
  bool reorder = false;  // the kernel layout differs from plain hwio
  dnnl::primitive to_or_from_hwio;
  std::string impl;
};

dnnl::engine& engine() {
  static dnnl::engine eng(dnnl::engine::kind::cpu, 0);
  return eng;
}

dnnl::primitive_attr user_scratchpad() {
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  return attr;
}

dnnl::convolution_forward::primitive_desc forward_pd(const Geometry& g, const dnnl::primitive_attr& attr) {
  return dnnl::convolution_forward::primitive_desc(
      engine(), dnnl::prop_kind::forward_training, dnnl::algorithm::convolution_direct, g.act(g.n), g.any_weights(),
      g.out(g.n), {g.sh, g.sw}, {g.pt, g.pl}, {g.pb, g.pr}, attr);
}

std::shared_ptr<Entry> build(const Geometry& g, Kind kind) {
  auto e = std::make_shared<Entry>();
  dnnl::primitive_attr attr = user_scratchpad();
  memory::desc plain = g.hwio();
  if (kind == kForward) {
    auto pd = forward_pd(g, attr);
    e->conv = dnnl::convolution_forward(pd);
    e->weights = pd.weights_desc();
    e->scratch = pd.scratchpad_desc();
    e->impl = pd.impl_info_str();
  } else if (kind == kBackwardData) {
    auto hint = forward_pd(g, dnnl::primitive_attr());
    auto pd = dnnl::convolution_backward_data::primitive_desc(
        engine(), dnnl::algorithm::convolution_direct, g.act(g.n), g.any_weights(), g.out(g.n), {g.sh, g.sw},
        {g.pt, g.pl}, {g.pb, g.pr}, hint, attr);
    e->conv = dnnl::convolution_backward_data(pd);
    e->weights = pd.weights_desc();
    e->scratch = pd.scratchpad_desc();
    e->impl = pd.impl_info_str();
  } else {
    auto hint = forward_pd(g, dnnl::primitive_attr());
    auto pd = dnnl::convolution_backward_weights::primitive_desc(
        engine(), dnnl::algorithm::convolution_direct, g.act(g.n), g.any_weights(), g.out(g.n), {g.sh, g.sw},
        {g.pt, g.pl}, {g.pb, g.pr}, hint, attr);
    e->conv = dnnl::convolution_backward_weights(pd);
    e->weights = pd.diff_weights_desc();
    e->scratch = pd.scratchpad_desc();
    e->impl = pd.impl_info_str();
  }
  e->reorder = e->weights != plain;
  if (e->reorder) {
    if (kind == kBackwardWeights) {
      e->to_or_from_hwio = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), e->weights, engine(), plain));
    } else {
      e->to_or_from_hwio = dnnl::reorder(dnnl::reorder::primitive_desc(engine(), plain, engine(), e->weights));
    }
  }
  return e;
}

// oneDNN sizes a primitive's work split for the threads it may use when it is built (omp_get_max_threads()
// of the building thread), so the cache keeps one per thread count.
std::shared_ptr<Entry> lookup(const Geometry& g, Kind kind) {
  static std::mutex mu;
  static std::map<Key, std::shared_ptr<Entry>> cache;
  Key key = g.key(kind, omp_get_max_threads());
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto e = build(g, kind);  // outside the lock: building can take a while
  std::lock_guard<std::mutex> lock(mu);
  return cache.emplace(key, e).first->second;
}

// A buffer of this thread's, reused from call to call (scratchpads, reordered kernels).
char* thread_buffer(int slot, size_t bytes) {
  thread_local std::array<std::vector<char>, 2> buffers;
  if (buffers[slot].size() < bytes) buffers[slot].resize(bytes);
  return buffers[slot].data();
}

// The vmapped (leading) dimensions: those of the result, and where each member's slice of an operand
// starts (an operand of size 1 along a leading dimension is shared by every member along it).
struct Members {
  std::vector<int64_t> dims;
  int64_t count = 1;
};

ffi::ErrorOr<Members> members_of(ffi::Span<const int64_t> result_dims, size_t inner_rank = 4) {
  Members m;
  if (result_dims.size() < inner_rank) return ffi::Unexpected(ffi::Error::InvalidArgument("expected rank >= 4"));
  for (size_t i = 0; i + inner_rank < result_dims.size(); ++i) {
    m.dims.push_back(result_dims[i]);
    m.count *= result_dims[i];
  }
  return m;
}

// Element offsets of every member's slice of an operand with dimensions `dims` (inner size `inner`).
ffi::ErrorOr<std::vector<int64_t>> offsets(const Members& m, ffi::Span<const int64_t> dims, int64_t inner,
                                           const char* what, size_t inner_rank = 4) {
  size_t lead = m.dims.size();
  if (dims.size() != lead + inner_rank) {
    return ffi::Unexpected(ffi::Error::InvalidArgument(std::string(what) + ": rank differs from the result's"));
  }
  std::vector<int64_t> stride(lead);
  int64_t s = inner;
  for (size_t i = lead; i-- > 0;) {
    if (dims[i] != 1 && dims[i] != m.dims[i]) {
      return ffi::Unexpected(ffi::Error::InvalidArgument(std::string(what) + ": vmapped dimension mismatch"));
    }
    stride[i] = dims[i] == 1 ? 0 : s;
    s *= dims[i];
  }
  std::vector<int64_t> out(m.count);
  for (int64_t k = 0; k < m.count; ++k) {
    int64_t rest = k, off = 0;
    for (size_t i = lead; i-- > 0;) {
      off += (rest % m.dims[i]) * stride[i];
      rest /= m.dims[i];
    }
    out[k] = off;
  }
  return out;
}

bool shared_by_all(ffi::Span<const int64_t> dims, size_t lead) {
  for (size_t i = 0; i < lead; ++i)
    if (dims[i] != 1) return false;
  return true;
}

bool batched_in_all(ffi::Span<const int64_t> dims, const Members& m) {
  for (size_t i = 0; i < m.dims.size(); ++i)
    if (dims[i] != m.dims[i]) return false;
  return true;
}

int64_t inner_size(ffi::Span<const int64_t> dims) {
  size_t r = dims.size();
  return dims[r - 4] * dims[r - 3] * dims[r - 2] * dims[r - 1];
}

ffi::Error check_geometry(const Geometry& g) {
  if (g.n <= 0 || g.h <= 0 || g.w <= 0 || g.c <= 0 || g.f <= 0 || g.kh <= 0 || g.kw <= 0 || g.oh <= 0 || g.ow <= 0)
    return ffi::Error::InvalidArgument("empty convolution");
  if (g.sh <= 0 || g.sw <= 0 || g.pt < 0 || g.pb < 0 || g.pl < 0 || g.pr < 0)
    return ffi::Error::InvalidArgument("strides must be positive and padding non-negative");
  if ((g.h + g.pt + g.pb - g.kh) / g.sh + 1 != g.oh || (g.w + g.pl + g.pr - g.kw) / g.sw + 1 != g.ow)
    return ffi::Error::InvalidArgument("output size does not match input, kernel, strides and padding");
  return ffi::Error::Success();
}

// Runs `kind` for one member (or a batch of members folded into the batch): act = x or dx, wt = kernel or
// kernel gradient (plain hwio), out = y or dy.
void run(const Geometry& g, Kind kind, float* act, float* wt, float* out) {
  auto e = lookup(g, kind);
  dnnl::stream s(engine());
  memory act_m(g.act(g.n), engine(), act), out_m(g.out(g.n), engine(), out);
  memory plain_m(g.hwio(), engine(), wt);
  memory wt_m = e->reorder ? memory(e->weights, engine(), thread_buffer(1, e->weights.get_size())) : plain_m;
  memory scratch_m(e->scratch, engine(), thread_buffer(0, e->scratch.get_size() + 1));
  if (e->reorder && kind != kBackwardWeights) {
    e->to_or_from_hwio.execute(s, {{DNNL_ARG_FROM, plain_m}, {DNNL_ARG_TO, wt_m}});
  }
  if (kind == kForward) {
    e->conv.execute(s, {{DNNL_ARG_SRC, act_m}, {DNNL_ARG_WEIGHTS, wt_m}, {DNNL_ARG_DST, out_m},
                        {DNNL_ARG_SCRATCHPAD, scratch_m}});
  } else if (kind == kBackwardData) {
    e->conv.execute(s, {{DNNL_ARG_DIFF_SRC, act_m}, {DNNL_ARG_WEIGHTS, wt_m}, {DNNL_ARG_DIFF_DST, out_m},
                        {DNNL_ARG_SCRATCHPAD, scratch_m}});
  } else {
    e->conv.execute(s, {{DNNL_ARG_SRC, act_m}, {DNNL_ARG_DIFF_WEIGHTS, wt_m}, {DNNL_ARG_DIFF_DST, out_m},
                        {DNNL_ARG_SCRATCHPAD, scratch_m}});
    if (e->reorder) e->to_or_from_hwio.execute(s, {{DNNL_ARG_FROM, wt_m}, {DNNL_ARG_TO, plain_m}});
  }
  s.wait();
}

std::atomic<int64_t> side_by_side_calls{0};  // for tests: how many calls ran their members side by side

// How many threads run the members side by side (1: one after another, each on `threads` threads). Side
// by side when there are at least as many members as threads and each member's convolution has at most
// `side_by_side_rows` output rows (its batch x output positions): a small convolution split over threads
// pays OpenMP's hand-over on every call, while a large one split within is faster than two large ones
// competing for the caches (experiments/benchmarks/README.md, round nine).
int across_members(int64_t members, int64_t threads, int64_t rows, int64_t side_by_side_rows) {
  if (threads <= 1 || members < threads || rows > side_by_side_rows) return 1;
  return static_cast<int>(threads);
}

void set_threads(int64_t threads) {
  if (threads > 0 && omp_get_max_threads() != threads) omp_set_num_threads(static_cast<int>(threads));
}

// The three handlers share this: `act`, `wt`, `out` are the (x, kernel, y) triple in the kind's roles;
// one of them is the result.
ffi::Error convolve(Kind kind, ffi::Span<const int64_t> act_dims, float* act, ffi::Span<const int64_t> wt_dims,
                    float* wt, ffi::Span<const int64_t> out_dims, float* out, ffi::Span<const int64_t> result_dims,
                    int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads,
                    int64_t side_by_side_rows) {
  auto m = members_of(result_dims);
  if (m.has_error()) return m.error();
  size_t r = act_dims.size();
  if (wt_dims.size() != r || out_dims.size() != r) return ffi::Error::InvalidArgument("operand ranks differ");
  Geometry g{act_dims[r - 4], act_dims[r - 3], act_dims[r - 2], act_dims[r - 1], wt_dims[r - 1], wt_dims[r - 4],
             wt_dims[r - 3], out_dims[r - 3], out_dims[r - 2], sh, sw, pt, pb, pl, pr};
  if (wt_dims[r - 2] != g.c || out_dims[r - 4] != g.n || out_dims[r - 1] != g.f)
    return ffi::Error::InvalidArgument("operand shapes do not fit one convolution");
  if (auto err = check_geometry(g); err.failure()) return err;
  set_threads(threads);
  auto act_off = offsets(*m, act_dims, inner_size(act_dims), "activations");
  auto wt_off = offsets(*m, wt_dims, inner_size(wt_dims), "kernel");
  auto out_off = offsets(*m, out_dims, inner_size(out_dims), "output");
  if (act_off.has_error()) return act_off.error();
  if (wt_off.has_error()) return wt_off.error();
  if (out_off.has_error()) return out_off.error();
  try {
    size_t lead = m->dims.size();
    // One kernel for every member, activations and outputs batched along every vmapped axis: the
    // members are one larger batch (forward and input gradient).
    if (kind != kBackwardWeights && m->count > 1 && shared_by_all(wt_dims, lead) && batched_in_all(act_dims, *m) &&
        batched_in_all(out_dims, *m)) {
      Geometry big = g;
      big.n = g.n * m->count;
      run(big, kind, act, wt, out);
      return ffi::Error::Success();
    }
    int team = across_members(m->count, threads, g.n * g.oh * g.ow, side_by_side_rows);
    if (team > 1) side_by_side_calls.fetch_add(1, std::memory_order_relaxed);
    // Side by side (team > 1): one thread a member, every primitive single-threaded, since a member's
    // convolution is too small to split well and the members are independent and equal in work. Otherwise
    // one member after another on the calling thread, each primitive on every thread. Exceptions cannot
    // leave a parallel region, so each member's failure is kept and the first returned.
    std::vector<std::string> failed(m->count);
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
    for (int64_t k = 0; k < m->count; ++k) {
      if (team > 1) omp_set_num_threads(1);
      try {
        run(g, kind, act + (*act_off)[k], wt + (*wt_off)[k], out + (*out_off)[k]);
      } catch (const dnnl::error& err) {
        failed[k] = std::string("oneDNN: ") + err.what();
      } catch (const std::exception& err) {
        failed[k] = err.what();
      }
    }
    for (const auto& f : failed)
      if (!f.empty()) return ffi::Error::Internal(f);
  } catch (const dnnl::error& err) {
    return ffi::Error::Internal(std::string("oneDNN: ") + err.what());
  } catch (const std::exception& err) {
    return ffi::Error::Internal(err.what());
  }
  return ffi::Error::Success();
}

ffi::Error Forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> y, int64_t sh,
                   int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads, int64_t side_by_side_rows) {
  return convolve(kForward, x.dimensions(), x.typed_data(), w.dimensions(), w.typed_data(), y->dimensions(),
                  y->typed_data(), y->dimensions(), sh, sw, pt, pb, pl, pr, threads, side_by_side_rows);
}

ffi::Error BackwardData(ffi::Buffer<ffi::F32> g, ffi::Buffer<ffi::F32> w, ffi::ResultBuffer<ffi::F32> dx, int64_t sh,
                        int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads, int64_t side_by_side_rows) {
  return convolve(kBackwardData, dx->dimensions(), dx->typed_data(), w.dimensions(), w.typed_data(), g.dimensions(),
                  g.typed_data(), dx->dimensions(), sh, sw, pt, pb, pl, pr, threads, side_by_side_rows);
}

ffi::Error BackwardWeights(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> g, ffi::ResultBuffer<ffi::F32> dw,
                           int64_t sh, int64_t sw, int64_t pt, int64_t pb, int64_t pl, int64_t pr, int64_t threads, int64_t side_by_side_rows) {
  return convolve(kBackwardWeights, x.dimensions(), x.typed_data(), dw->dimensions(), dw->typed_data(),
                  g.dimensions(), g.typed_data(), dw->dimensions(), sh, sw, pt, pb, pl, pr, threads, side_by_side_rows);
}


// ------------------------------------------------------------------ batch normalization in training
//
// x (..., N, H, W, C) channels-last; scale, shift, mean, var (..., C); leading dimensions vmapped as above.
// Each member's statistics are over its N, H, W (the variance biased: divided by N*H*W), y = scale * (x -
// mean) / sqrt(var + eps) + shift; the backward pass returns dx, dscale, dshift from x, dy and the saved mean
// and variance. oneDNN's primitives read and write each activation once or twice, where XLA:CPU runs the
// same formula as several fusions with the intermediates written out (experiments/benchmarks/README.md).

enum BnKind : int64_t { kBnForward = 0, kBnBackward = 1 };

struct BnGeometry {
  int64_t n, h, w, c;
  float eps;
  bool relu = false;  // y = max(0, batch norm): oneDNN's fuse_norm_relu, with a workspace (the mask) for backward
  dnnl::normalization_flags flags() const {
    auto f = dnnl::normalization_flags::use_scale | dnnl::normalization_flags::use_shift;
    return relu ? f | dnnl::normalization_flags::fuse_norm_relu : f;
  }
  memory::desc act() const { return memory::desc({n, c, h, w}, memory::data_type::f32, tag::nhwc); }
  memory::desc vec() const { return memory::desc({c}, memory::data_type::f32, tag::a); }
};

struct BnEntry {
  dnnl::primitive prim;
  memory::desc scratch;
  memory::desc workspace;  // with relu: the mask the backward pass reads
  std::string impl;
};

dnnl::batch_normalization_forward::primitive_desc bn_forward_pd(const BnGeometry& g, const dnnl::primitive_attr& attr) {
  return dnnl::batch_normalization_forward::primitive_desc(engine(), dnnl::prop_kind::forward_training, g.act(),
                                                           g.act(), g.eps, g.flags(), attr);
}

std::shared_ptr<BnEntry> bn_lookup(const BnGeometry& g, BnKind kind) {
  static std::mutex mu;
  static std::map<std::array<int64_t, 8>, std::shared_ptr<BnEntry>> cache;
  int32_t eps_bits;
  std::memcpy(&eps_bits, &g.eps, sizeof eps_bits);
  std::array<int64_t, 8> key{g.n, g.h, g.w, g.c, eps_bits, g.relu, kind, omp_get_max_threads()};
  {
    std::lock_guard<std::mutex> lock(mu);
    auto it = cache.find(key);
    if (it != cache.end()) return it->second;
  }
  auto e = std::make_shared<BnEntry>();
  if (kind == kBnForward) {
    auto pd = bn_forward_pd(g, user_scratchpad());
    e->prim = dnnl::batch_normalization_forward(pd);
    e->scratch = pd.scratchpad_desc();
    e->workspace = pd.workspace_desc();
    e->impl = pd.impl_info_str();
  } else {
    auto hint = bn_forward_pd(g, dnnl::primitive_attr());
    auto pd = dnnl::batch_normalization_backward::primitive_desc(engine(), dnnl::prop_kind::backward, g.act(), g.act(),
                                                                 g.act(), g.eps, g.flags(), hint, user_scratchpad());
    e->prim = dnnl::batch_normalization_backward(pd);
    e->scratch = pd.scratchpad_desc();
    e->workspace = pd.workspace_desc();
    e->impl = pd.impl_info_str();
  }
  std::lock_guard<std::mutex> lock(mu);
  return cache.emplace(key, e).first->second;
}

// Runs fn(k) for every member k, side by side on `team` threads (each single-threaded) or one after another;
// the first failure is returned.
template <typename Fn>
ffi::Error for_members(int64_t count, int team, Fn fn) {
  std::vector<std::string> failed(count);
#pragma omp parallel for num_threads(team) schedule(static) if (team > 1)
  for (int64_t k = 0; k < count; ++k) {
    if (team > 1) omp_set_num_threads(1);
    try {
      fn(k);
    } catch (const dnnl::error& err) {
      failed[k] = std::string("oneDNN: ") + err.what();
    } catch (const std::exception& err) {
      failed[k] = err.what();
    }
  }
  for (const auto& f : failed)
    if (!f.empty()) return ffi::Error::Internal(f);
  return ffi::Error::Success();
}

// Member offsets of the activations (rank lead + 4) and of the per-channel vectors (rank lead + 1).
struct BnLayout {
  Members m;
  BnGeometry g;
  std::vector<int64_t> act, vec;  // offsets of this operand (shared operands: 0 for every member)
};

ffi::ErrorOr<BnLayout> bn_layout(ffi::Span<const int64_t> result_dims, float eps) {
  auto m = members_of(result_dims);
  if (m.has_error()) return ffi::Unexpected(m.error());
  size_t r = result_dims.size();
  BnLayout l{*m, {result_dims[r - 4], result_dims[r - 3], result_dims[r - 2], result_dims[r - 1], eps}, {}, {}};
  if (l.g.n <= 0 || l.g.h <= 0 || l.g.w <= 0 || l.g.c <= 0)
    return ffi::Unexpected(ffi::Error::InvalidArgument("empty batch normalization"));
  if (!(eps > 0.0f)) return ffi::Unexpected(ffi::Error::InvalidArgument("epsilon must be positive"));
  return l;
}

ffi::ErrorOr<std::vector<int64_t>> act_offsets(const BnLayout& l, ffi::Span<const int64_t> dims, const char* what) {
  size_t r = dims.size();
  if (r < 4 || dims[r - 4] != l.g.n || dims[r - 3] != l.g.h || dims[r - 2] != l.g.w || dims[r - 1] != l.g.c)
    return ffi::Unexpected(ffi::Error::InvalidArgument(std::string(what) + ": shape differs from the result's"));
  return offsets(l.m, dims, l.g.n * l.g.h * l.g.w * l.g.c, what);
}

ffi::ErrorOr<std::vector<int64_t>> vec_offsets(const BnLayout& l, ffi::Span<const int64_t> dims, const char* what) {
  if (dims.size() == 0 || dims[dims.size() - 1] != l.g.c)
    return ffi::Unexpected(ffi::Error::InvalidArgument(std::string(what) + ": not one value per channel"));
  return offsets(l.m, dims, l.g.c, what, 1);
}

#define NNB_TRY(var, expr)                      \
  auto var = (expr);                            \
  if (var.has_error()) return var.error();

// The workspace operand of a fused ReLU: one member's mask is `bytes` long (oneDNN's workspace size).
ffi::ErrorOr<std::vector<int64_t>> workspace_offsets(const BnLayout& l, ffi::Span<const int64_t> dims) {
  auto e = bn_lookup(l.g, kBnForward);
  int64_t bytes = static_cast<int64_t>(e->workspace.get_size());
  if (dims.size() == 0 || dims[dims.size() - 1] != bytes)
    return ffi::Unexpected(ffi::Error::InvalidArgument("workspace: size differs from oneDNN's (" +
                                                       std::to_string(bytes) + " bytes a member)"));
  return offsets(l.m, dims, bytes, "workspace", 1);
}

ffi::Error bn_forward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                      ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var,
                      uint8_t* ws, ffi::Span<const int64_t> ws_dims, float epsilon, int64_t threads,
                      int64_t side_by_side_rows) {
  NNB_TRY(l, bn_layout(y->dimensions(), epsilon));
  l->g.relu = ws != nullptr;
  std::vector<int64_t> wo;
  if (ws) {
    NNB_TRY(w, workspace_offsets(*l, ws_dims));
    wo = *w;
  }
  NNB_TRY(xo, act_offsets(*l, x.dimensions(), "x"));
  NNB_TRY(so, vec_offsets(*l, scale.dimensions(), "scale"));
  NNB_TRY(ho, vec_offsets(*l, shift.dimensions(), "shift"));
  NNB_TRY(mo, vec_offsets(*l, mean->dimensions(), "mean"));
  set_threads(threads);
  const BnGeometry g = l->g;
  const int64_t inner = g.n * g.h * g.w * g.c;
  int team = across_members(l->m.count, threads, g.n * g.h * g.w, side_by_side_rows);
  float *xp = x.typed_data(), *sp = scale.typed_data(), *hp = shift.typed_data();
  float *yp = y->typed_data(), *mp = mean->typed_data(), *vp = var->typed_data();
  return for_members(l->m.count, team, [&](int64_t k) {
    auto e = bn_lookup(g, kBnForward);
    dnnl::stream s(engine());
    memory scratch(e->scratch, engine(), thread_buffer(0, e->scratch.get_size() + 1));
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(g.act(), engine(), xp + (*xo)[k])},
                                         {DNNL_ARG_DST, memory(g.act(), engine(), yp + k * inner)},
                                         {DNNL_ARG_SCALE, memory(g.vec(), engine(), sp + (*so)[k])},
                                         {DNNL_ARG_SHIFT, memory(g.vec(), engine(), hp + (*ho)[k])},
                                         {DNNL_ARG_MEAN, memory(g.vec(), engine(), mp + (*mo)[k])},
                                         {DNNL_ARG_VARIANCE, memory(g.vec(), engine(), vp + (*mo)[k])},
                                         {DNNL_ARG_SCRATCHPAD, scratch}};
    if (ws) args.emplace(DNNL_ARG_WORKSPACE, memory(e->workspace, engine(), ws + wo[k]));
    e->prim.execute(s, args);
    s.wait();
  });
}

ffi::Error BnForward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                     ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean, ffi::ResultBuffer<ffi::F32> var,
                     float epsilon, int64_t threads, int64_t side_by_side_rows) {
  return bn_forward(x, scale, shift, y, mean, var, nullptr, {}, epsilon, threads, side_by_side_rows);
}

ffi::Error BnReluForward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::F32> shift,
                         ffi::ResultBuffer<ffi::F32> y, ffi::ResultBuffer<ffi::F32> mean,
                         ffi::ResultBuffer<ffi::F32> var, ffi::ResultBuffer<ffi::U8> ws, float epsilon,
                         int64_t threads, int64_t side_by_side_rows) {
  return bn_forward(x, scale, shift, y, mean, var, ws->typed_data(), ws->dimensions(), epsilon, threads,
                    side_by_side_rows);
}

ffi::Error bn_backward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> mean,
                       ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::F32> scale, const uint8_t* ws,
                       ffi::Span<const int64_t> ws_dims, ffi::ResultBuffer<ffi::F32> dx,
                       ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dshift, float epsilon,
                       int64_t threads, int64_t side_by_side_rows) {
  NNB_TRY(l, bn_layout(dx->dimensions(), epsilon));
  l->g.relu = ws != nullptr;
  std::vector<int64_t> wo;
  if (ws) {
    NNB_TRY(w, workspace_offsets(*l, ws_dims));
    wo = *w;
  }
  NNB_TRY(xo, act_offsets(*l, x.dimensions(), "x"));
  NNB_TRY(go, act_offsets(*l, dy.dimensions(), "dy"));
  NNB_TRY(mo, vec_offsets(*l, mean.dimensions(), "mean"));
  NNB_TRY(vo, vec_offsets(*l, var.dimensions(), "var"));
  NNB_TRY(so, vec_offsets(*l, scale.dimensions(), "scale"));
  NNB_TRY(ro, vec_offsets(*l, dscale->dimensions(), "dscale"));
  set_threads(threads);
  const BnGeometry g = l->g;
  const int64_t inner = g.n * g.h * g.w * g.c;
  int team = across_members(l->m.count, threads, g.n * g.h * g.w, side_by_side_rows);
  float *xp = x.typed_data(), *gp = dy.typed_data(), *mp = mean.typed_data(), *vp = var.typed_data();
  float *sp = scale.typed_data(), *dxp = dx->typed_data(), *dsp = dscale->typed_data(), *dhp = dshift->typed_data();
  return for_members(l->m.count, team, [&](int64_t k) {
    auto e = bn_lookup(g, kBnBackward);
    dnnl::stream s(engine());
    memory scratch(e->scratch, engine(), thread_buffer(0, e->scratch.get_size() + 1));
    std::unordered_map<int, memory> args{{DNNL_ARG_SRC, memory(g.act(), engine(), xp + (*xo)[k])},
                                         {DNNL_ARG_DIFF_DST, memory(g.act(), engine(), gp + (*go)[k])},
                                         {DNNL_ARG_MEAN, memory(g.vec(), engine(), mp + (*mo)[k])},
                                         {DNNL_ARG_VARIANCE, memory(g.vec(), engine(), vp + (*vo)[k])},
                                         {DNNL_ARG_SCALE, memory(g.vec(), engine(), sp + (*so)[k])},
                                         {DNNL_ARG_DIFF_SRC, memory(g.act(), engine(), dxp + k * inner)},
                                         {DNNL_ARG_DIFF_SCALE, memory(g.vec(), engine(), dsp + (*ro)[k])},
                                         {DNNL_ARG_DIFF_SHIFT, memory(g.vec(), engine(), dhp + (*ro)[k])},
                                         {DNNL_ARG_SCRATCHPAD, scratch}};
    if (ws) args.emplace(DNNL_ARG_WORKSPACE, memory(e->workspace, engine(), const_cast<uint8_t*>(ws) + wo[k]));
    e->prim.execute(s, args);
    s.wait();
  });
}

ffi::Error BnBackward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> mean,
                      ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::F32> scale, ffi::ResultBuffer<ffi::F32> dx,
                      ffi::ResultBuffer<ffi::F32> dscale, ffi::ResultBuffer<ffi::F32> dshift, float epsilon,
                      int64_t threads, int64_t side_by_side_rows) {
  return bn_backward(x, dy, mean, var, scale, nullptr, {}, dx, dscale, dshift, epsilon, threads, side_by_side_rows);
}

ffi::Error BnReluBackward(ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> dy, ffi::Buffer<ffi::F32> mean,
                          ffi::Buffer<ffi::F32> var, ffi::Buffer<ffi::F32> scale, ffi::Buffer<ffi::U8> ws,
                          ffi::ResultBuffer<ffi::F32> dx, ffi::ResultBuffer<ffi::F32> dscale,
                          ffi::ResultBuffer<ffi::F32> dshift, float epsilon, int64_t threads,
                          int64_t side_by_side_rows) {
  return bn_backward(x, dy, mean, var, scale, ws.typed_data(), ws.dimensions(), dx, dscale, dshift, epsilon, threads,
                     side_by_side_rows);
}

}  // namespace

#define NNB_ATTRS                 \
  .Attr<int64_t>("stride_h")      \
      .Attr<int64_t>("stride_w")  \
      .Attr<int64_t>("pad_top")   \
      .Attr<int64_t>("pad_bottom") \
      .Attr<int64_t>("pad_left")  \
      .Attr<int64_t>("pad_right") \
      .Attr<int64_t>("threads")   \
      .Attr<int64_t>("side_by_side_rows")

XLA_FFI_DEFINE_HANDLER_SYMBOL(NnbOnednnConvForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() NNB_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NnbOnednnConvBackwardData, BackwardData,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() NNB_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NnbOnednnConvBackwardWeights, BackwardWeights,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() NNB_ATTRS);

// For tests and benchmarks: which oneDNN implementation a geometry runs on ("" on failure).
extern "C" int nnb_onednn_impl(int64_t kind, const int64_t* geometry, char* out, int64_t size) {
  try {
    Geometry g{geometry[0], geometry[1], geometry[2],  geometry[3],  geometry[4],  geometry[5],  geometry[6], geometry[7],
               geometry[8], geometry[9], geometry[10], geometry[11], geometry[12], geometry[13], geometry[14]};
    std::string impl = lookup(g, static_cast<Kind>(kind))->impl;
    std::strncpy(out, impl.c_str(), size - 1);
    out[size - 1] = 0;
    return 0;
  } catch (...) {
    return 1;
  }
}

// For tests: how many calls so far ran their members side by side.
extern "C" int64_t nnb_onednn_side_by_side_calls() { return side_by_side_calls.load(); }

#define NNB_BN_ATTRS .Attr<float>("epsilon").Attr<int64_t>("threads").Attr<int64_t>("side_by_side_rows")

XLA_FFI_DEFINE_HANDLER_SYMBOL(NnbOnednnBatchNormForward, BnForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() NNB_BN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NnbOnednnBatchNormBackward, BnBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() NNB_BN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NnbOnednnBatchNormReluForward, BnReluForward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::U8>>() NNB_BN_ATTRS);

XLA_FFI_DEFINE_HANDLER_SYMBOL(NnbOnednnBatchNormReluBackward, BnReluBackward,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Arg<ffi::Buffer<ffi::U8>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>() NNB_BN_ATTRS);

// For tests and the JAX side: the bytes of one member's ReLU mask (the workspace of a fused ReLU) for an
// (n, h, w, c) activation; -1 on failure.
extern "C" int64_t nnb_onednn_bn_relu_workspace_bytes(const int64_t* shape) {
  try {
    BnGeometry g{shape[0], shape[1], shape[2], shape[3], 1e-5f, true};
    return static_cast<int64_t>(bn_lookup(g, kBnForward)->workspace.get_size());
  } catch (...) {
    return -1;
  }
}

// For tests and benchmarks: the oneDNN implementation of batch normalization (kind 0 forward, 1 backward) of
// an (n, h, w, c) activation ("" on failure).
extern "C" int nnb_onednn_bn_impl(int64_t kind, const int64_t* shape, char* out, int64_t size) {
  try {
    BnGeometry g{shape[0], shape[1], shape[2], shape[3], 1e-5f};
    std::string impl = bn_lookup(g, static_cast<BnKind>(kind))->impl;
    std::strncpy(out, impl.c_str(), size - 1);
    out[size - 1] = 0;
    return 0;
  } catch (...) {
    return 1;
  }
}
