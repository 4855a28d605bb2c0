#include "core/memory.h"

#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <c10/util/accumulate.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

#ifdef __linux__
#include <sys/mman.h>
#endif

namespace dotf {

bool huge_pages_enabled() {
#ifdef __linux__
  const char* v = std::getenv("DOTF_HUGE_PAGES");  // read per call: only weight packing asks
  return v == nullptr || std::strcmp(v, "0") != 0;
#else
  return false;
#endif
}

std::string transparent_huge_page_mode() {
  std::ifstream f("/sys/kernel/mm/transparent_hugepage/enabled");
  const std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const auto open = text.find('['), close = text.find(']');  // the active mode is bracketed
  if (open == std::string::npos || close == std::string::npos || close < open) return "unavailable";
  return text.substr(open + 1, close - open - 1);
}

namespace {
std::atomic<int64_t> available_memory_override{-1};
}  // namespace

int64_t available_memory_bytes() {
  const int64_t forced = available_memory_override.load();
  if (forced >= 0) return forced;
  std::ifstream f("/proc/meminfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("MemAvailable:", 0) != 0) continue;
    std::istringstream fields(line.substr(13));
    int64_t kib = -1;
    return fields >> kib && kib >= 0 ? kib * 1024 : -1;
  }
  return -1;
}

void set_available_memory_bytes_for_tests(int64_t bytes) { available_memory_override.store(bytes < 0 ? -1 : bytes); }

at::Tensor empty_on_huge_pages(at::IntArrayRef sizes, const at::TensorOptions& options, bool enabled) {
#ifdef __linux__
  const int64_t bytes = c10::multiply_integers(sizes) * static_cast<int64_t>(options.dtype().itemsize());
  if (enabled && options.device().is_cpu() && bytes >= kHugePageBytes) {
    void* p = nullptr;
    if (posix_memalign(&p, kHugePageBytes, static_cast<size_t>(bytes)) == 0) {
      madvise(p, static_cast<size_t>(bytes), MADV_HUGEPAGE);  // advice: a refusal leaves ordinary pages
      return at::from_blob(p, sizes, [](void* q) { std::free(q); }, options);
    }
  }
#endif
  return at::empty(sizes, options);
}

}  // namespace dotf
