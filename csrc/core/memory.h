#pragma once
// Large, long-lived CPU buffers (packed weights) on transparent huge pages, and the free memory a large
// CPU allocation (a long prompt's KV cache) is checked against before it is made.
//
// Why: a decode step streams every weight once, hundreds of MB on 4 KiB pages, i.e. a TLB miss and a
// page walk every 4 KiB of every stream, and the hardware prefetchers stop at each 4 KiB boundary.
// On 2 MiB pages a SmolLM2-135M fp32 decode step ran ~7% faster here (bench/README.md, "Huge pages").
// KV caches stay on ordinary pages: they are allocated at full capacity but touched only up to the
// context in use, and a huge page would back 2 MiB at the first touch.
// Linux only grants them to 2 MiB-aligned ranges of memory that asked for them (madvise) when
// /sys/kernel/mm/transparent_hugepage/enabled is "madvise" (as on these machines) or "always".
#include <ATen/core/Tensor.h>

#include <string>

namespace dotf {

inline constexpr int64_t kHugePageBytes = int64_t(2) << 20;

// False when the environment variable DOTF_HUGE_PAGES is "0" (read at each call), or off Linux.
bool huge_pages_enabled();

// The kernel's transparent-huge-page mode ("always", "madvise", "never"), or "unavailable".
std::string transparent_huge_page_mode();

// Bytes of memory available to a new allocation without swapping (Linux: MemAvailable in /proc/meminfo,
// read per call), or -1 where unknown. An allocation larger than this would fail late or push the
// machine into swap, so callers refuse it up front with the sizes in the message.
int64_t available_memory_bytes();

// Tests: make available_memory_bytes() return `bytes` (-1: read the machine's figure again).
void set_available_memory_bytes_for_tests(int64_t bytes);

// An uninitialised tensor like at::empty(sizes, options). On a CPU, when `enabled` and the tensor
// takes at least kHugePageBytes, its memory starts on a 2 MiB boundary and is advised for huge
// pages (MADV_HUGEPAGE; advice only: where the kernel declines, ordinary pages back it). No bytes
// are added: a tail shorter than 2 MiB stays on ordinary pages.
at::Tensor empty_on_huge_pages(at::IntArrayRef sizes, const at::TensorOptions& options,
                               bool enabled = huge_pages_enabled());

}  // namespace dotf
