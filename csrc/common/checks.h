// Input validation shared by every op. Each failure is a c10::Error (RuntimeError in Python)
// whose message names the op and the argument and states expected vs. actual.
#pragma once

#include <ATen/ATen.h>

#include <initializer_list>
#include <sstream>
#include <string>

namespace handgeom {

class Checker {
 public:
  explicit Checker(const char* op) : op_(op) {}

  // `expected` holds one size per dimension; -1 accepts any size.
  void shape(const at::Tensor& t, const char* name, std::initializer_list<int64_t> expected) const {
    bool ok = t.dim() == int64_t(expected.size());
    std::ostringstream want;
    int64_t d = 0;
    for (int64_t e : expected) {
      want << (d ? ", " : "[");
      e < 0 ? want << "*" : want << e;
      ok = ok && (e < 0 || t.size(d) == e);
      ++d;
    }
    want << "]";
    TORCH_CHECK(ok, op_, ": ", name, " must have shape ", want.str(), ", got ", t.sizes());
  }

  void floating(const at::Tensor& t, const char* name) const {
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, op_, ": ", name,
                " must be float32 or float64, got ", t.scalar_type());
  }

  void same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref,
                  const char* ref_name) const {
    TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op_, ": ", name, " must have the dtype of ",
                ref_name, " (", ref.scalar_type(), "), got ", t.scalar_type());
  }

  void same_device(const at::Tensor& t, const char* name, const at::Tensor& ref,
                   const char* ref_name) const {
    TORCH_CHECK(t.device() == ref.device(), op_, ": ", name, " must be on the device of ", ref_name,
                " (", ref.device(), "), got ", t.device());
  }

  // Integer index tensor with every entry in [0, upper). Synchronizes on CUDA.
  void indices(const at::Tensor& t, const char* name, int64_t upper) const {
    TORCH_CHECK(t.scalar_type() == at::kLong, op_, ": ", name, " must be int64, got ",
                t.scalar_type());
    if (t.numel() == 0) return;
    const auto [lo, hi] = at::aminmax(t);
    const int64_t lo_v = lo.item<int64_t>(), hi_v = hi.item<int64_t>();
    TORCH_CHECK(lo_v >= 0 && hi_v < upper, op_, ": ", name, " entries must lie in [0, ", upper,
                "), got values in [", lo_v, ", ", hi_v, "]");
  }

  // Every entry finite and within [-limit, limit] (inputs that drive indexing, or whose products
  // must not overflow). Synchronizes on CUDA.
  void within(const at::Tensor& t, const char* name, int64_t limit) const {
    TORCH_CHECK(t.numel() == 0 || (t.abs() <= double(limit)).all().item<bool>(), op_, ": ", name,
                " must be finite and within [-", limit, ", ", limit, "] (found NaN, Inf or a larger value)");
  }

  template <typename... Args>
  void check(bool cond, const Args&... message) const {
    TORCH_CHECK(cond, op_, ": ", message...);
  }

  void positive(double v, const char* name) const {
    TORCH_CHECK(std::isfinite(v) && v > 0, op_, ": ", name, " must be positive and finite, got ", v);
  }

 private:
  const char* op_;
};

}  // namespace handgeom
