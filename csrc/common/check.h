#pragma once
// Boundary checks that name the argument and what was expected. Every message ends up as a Python
// exception: DOTF_CHECK_ARG -> ValueError, DOTF_CHECK_TYPE -> TypeError, DOTF_CHECK -> RuntimeError.
#include <c10/util/Exception.h>
#include <ATen/core/Tensor.h>

#include <sstream>
#include <string>

namespace dotf {

// Thrown for a bad argument value; bindings translate it to ValueError.
struct ValueError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};
// Thrown for an argument of the wrong kind (dtype, rank); bindings translate it to TypeError.
struct TypeError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

namespace detail {
template <typename... Args>
std::string concat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
}  // namespace detail

}  // namespace dotf

#define DOTF_CHECK_ARG(cond, ...) \
  do { if (!(cond)) throw ::dotf::ValueError(::dotf::detail::concat(__VA_ARGS__)); } while (0)
#define DOTF_CHECK_TYPE(cond, ...) \
  do { if (!(cond)) throw ::dotf::TypeError(::dotf::detail::concat(__VA_ARGS__)); } while (0)
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
