#pragma once
// Boundary checks that name the argument and what was expected. Every message ends up as a Python
// exception: DOTF_CHECK_ARG -> ValueError, DOTF_CHECK_TYPE -> TypeError, DOTF_CHECK_MEMORY -> MemoryError,
// DOTF_CHECK -> RuntimeError.
#include <c10/util/Exception.h>
#include <ATen/core/Tensor.h>

#include <cstdio>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace dotf {

// Thrown for a bad argument value; bindings translate it to ValueError.
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Thrown for an argument of the wrong kind (dtype, rank); bindings translate it to TypeError.
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Thrown before an allocation that the machine's free memory cannot hold; bindings translate it to
// MemoryError.
struct MemoryError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

namespace detail {
// Numbers are formatted with to_string/snprintf, never through a std::ostream: on the GPU machine
// (GCC 13 at /opt/gcc) the extension ends up with its own copy of libstdc++'s ostream code, and a
// number inserted into a stream by that copy crashed in the locale's num_put facet (a segfault
// instead of the error message). Strings pass through streams safely, so other types (whose c10
// printers write strings) still use one.
template <typename T>
void append(std::string& s, const T& x) {
  using U = std::decay_t<T>;
  if constexpr (std::is_same_v<U, bool>) {
    s += x ? "true" : "false";
  } else if constexpr (std::is_same_v<U, char>) {
    s += x;
  } else if constexpr (std::is_integral_v<U>) {
    s += std::to_string(x);
  } else if constexpr (std::is_floating_point_v<U>) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.6g", static_cast<double>(x));
    s += buf;
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    s += std::string_view(x);
  } else if constexpr (std::is_same_v<U, c10::ScalarType>) {
    s += c10::toString(x);
  } else if constexpr (std::is_same_v<U, c10::Device>) {
    s += x.str();
  } else if constexpr (std::is_same_v<U, c10::IntArrayRef> || std::is_same_v<U, std::vector<int64_t>>) {
    s += '[';
    for (size_t i = 0; i < x.size(); ++i) {
      if (i) s += ", ";
      s += std::to_string(x[i]);
    }
    s += ']';
  } else {
    std::ostringstream os;
    os << x;
    s += os.str();
  }
}

template <typename... Args>
std::string concat(const Args&... args) {
  std::string s;
  (append(s, args), ...);
  return s;
}
}  // namespace detail

}  // namespace dotf

#define DOTF_CHECK_ARG(cond, ...) \
  do { if (!(cond)) throw ::dotf::ValueError(::dotf::detail::concat(__VA_ARGS__)); } while (0)
#define DOTF_CHECK_TYPE(cond, ...) \
  do { if (!(cond)) throw ::dotf::TypeError(::dotf::detail::concat(__VA_ARGS__)); } while (0)
#define DOTF_CHECK_MEMORY(cond, ...) \
  do { if (!(cond)) throw ::dotf::MemoryError(::dotf::detail::concat(__VA_ARGS__)); } while (0)
#define DOTF_CHECK(cond, ...) \
  do { if (!(cond)) throw std::runtime_error(::dotf::detail::concat(__VA_ARGS__)); } while (0)

// Shape/dtype/device checks for tensors handed across the boundary.
#define DOTF_CHECK_DIM(t, n, name) \
  DOTF_CHECK_TYPE((t).dim() == (n), name, " must be a ", n, "-D tensor, got shape ", (t).sizes())
#define DOTF_CHECK_DTYPE(t, dt, name) \
  DOTF_CHECK_TYPE((t).scalar_type() == (dt), name, " must have dtype ", (dt), ", got ", (t).scalar_type())
#define DOTF_CHECK_SIZE(t, d, n, name) \
  DOTF_CHECK_ARG((t).size(d) == (n), name, ".size(", d, ") must be ", n, ", got ", (t).size(d), \
                 " (shape ", (t).sizes(), ")")
#define DOTF_CHECK_DEVICE(t, dev, name) \
  DOTF_CHECK_ARG((t).device() == (dev), name, " must be on ", (dev), ", got ", (t).device())

namespace dotf {
// A position held on the device for CUDA graph replays: [1] int64 on `like`'s device.
inline void check_device_start(const at::Tensor& device_start, const at::Tensor& like, const char* op) {
  DOTF_CHECK_TYPE(device_start.scalar_type() == at::kLong && device_start.numel() == 1, op,
                  ": device_start must be a one-element int64 tensor, got ", device_start.scalar_type(), " ",
                  device_start.sizes());
  DOTF_CHECK_ARG(device_start.device() == like.device(), op, ": device_start must be on ", like.device(), ", got ",
                 device_start.device());
}
// On the CPU there is no graph to replay: the ops read the position at once. `bound` is the start the
// caller sized the call for; the position must lie in [0, bound].
inline int64_t read_device_start(const at::Tensor& device_start, int64_t bound, const char* op) {
  const int64_t start = device_start.item<int64_t>();
  DOTF_CHECK_ARG(start >= 0 && start <= bound, op, ": device_start ", start, " must be in [0, start=", bound, "]");
  return start;
}
}  // namespace dotf
