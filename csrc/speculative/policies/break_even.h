#pragma once
// Break-even fallback: speculation must never make decoding meaningfully slower than plain steps.
// It keeps decayed tokens/second figures of speculative rounds and of plain steps (both emit real
// tokens, so measuring costs nothing) and decodes plainly for a while when speculation loses,
// probing again later with an exponentially growing back-off.
#include <algorithm>
#include <cstdint>

namespace dotf {

class BreakEven {
 public:
  struct Options {
    int64_t warmup_plain_steps = 2;  // plain steps first, to know what speculation must beat
    int64_t min_rounds = 3;          // speculative rounds before judging them
    int64_t backoff = 8;             // plain steps after the first loss; doubles per loss
    int64_t max_backoff = 256;
    double margin = 1.0;             // speculation must reach margin * plain rate
  };

  BreakEven() = default;
  explicit BreakEven(Options o) : o_(o) {}

  // Should the next step speculate?
  bool speculate() const { return plain_left_ <= 0; }

  void record_plain(int64_t tokens, double seconds) {
    plain_.add(tokens, seconds);
    if (plain_left_ > 0 && --plain_left_ == 0) spec_ = Rate{};  // probe speculation afresh
  }

  // Returns true when this round made speculation back off.
  bool record_speculative(int64_t tokens, double seconds) {
    spec_.add(tokens, seconds);
    rounds_since_probe_++;
    if (rounds_since_probe_ < o_.min_rounds || plain_.tokens <= 0) return false;
    if (spec_.rate() >= o_.margin * plain_.rate()) {
      backoff_ = o_.backoff;  // speculation pays: reset the back-off
      return false;
    }
    plain_left_ = backoff_;
    backoff_ = std::min(2 * backoff_, o_.max_backoff);
    rounds_since_probe_ = 0;
    switches_++;
    return true;
  }

  void start() { plain_left_ = o_.warmup_plain_steps; backoff_ = o_.backoff; }
  int64_t switches() const { return switches_; }
  double plain_rate() const { return plain_.rate(); }
  double speculative_rate() const { return spec_.rate(); }

 private:
  // Exponentially decayed token and time sums: recent behaviour dominates.
  struct Rate {
    double tokens = 0, seconds = 0;
    void add(int64_t t, double s) {
      tokens = 0.8 * tokens + static_cast<double>(t);
      seconds = 0.8 * seconds + s;
    }
    double rate() const { return seconds > 0 ? tokens / seconds : 0.0; }
  };
  Options o_;
  Rate plain_, spec_;
  int64_t plain_left_ = 0;
  int64_t backoff_ = 8;
  int64_t rounds_since_probe_ = 0;
  int64_t switches_ = 0;
};

}  // namespace dotf
