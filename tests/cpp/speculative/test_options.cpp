// The option table: presets per strategy and device, lookups by name, ranges and the rules that tie options.
#include "speculative/options.h"

#include <gtest/gtest.h>

#include <set>

using namespace dotf;

TEST(Options, PresetsDifferOnlyWhereTheStrategyAndDeviceSaySo) {
  const GenerateOptions asd = preset(Strategy::ASD, c10::DeviceType::CPU);
  EXPECT_EQ(asd.selection.threshold, 0.99);
  EXPECT_EQ(asd.draft, DraftWeights::Same);
  const GenerateOptions dotf_cpu = preset(Strategy::DOTF, c10::DeviceType::CPU);
  EXPECT_EQ(dotf_cpu.draft, DraftWeights::Int8);
  EXPECT_TRUE(dotf_cpu.lookup && dotf_cpu.break_even);
  const GenerateOptions dotf_cuda = preset(Strategy::DOTF, c10::DeviceType::CUDA);
  EXPECT_EQ(dotf_cuda.draft, DraftWeights::Same);  // the int8 draft's kernels are CPU ones
  EXPECT_EQ(dotf_cuda.selection.threshold, asd.selection.threshold);
  EXPECT_TRUE(dotf_cuda.lookup);
}

TEST(Options, EveryNameIsUniqueAndReadsBackWhatWasSet) {
  std::set<std::string> names;
  for (const OptionInfo& info : option_table()) {
    EXPECT_TRUE(names.insert(info.name).second) << info.name;
    GenerateOptions o;
    const OptionValue v = info.get(o);
    info.check(v);  // every default is in range
    info.assign(o, v);
    EXPECT_EQ(info.get(o), v) << info.name;
  }
  GenerateOptions o;
  set_option(o, "max_draft", int64_t{5});
  set_option(o, "draft", std::string("int8"));
  EXPECT_EQ(o.max_draft, 5);
  EXPECT_EQ(o.draft, DraftWeights::Int8);
}

TEST(Options, UnknownNamesOutOfRangeValuesAndInconsistentCombinationsAreRefused) {
  GenerateOptions o;
  EXPECT_THROW(find_option("temprature"), TypeError);
  EXPECT_THROW(set_option(o, "gamma", 1.0), ValueError);
  EXPECT_THROW(set_option(o, "draft", std::string("fp4")), ValueError);
  EXPECT_THROW(set_option(o, "lookup_max_tokens", int64_t{0}), ValueError);
  o.lookup_options.min_ngram = 4;  // > max_ngram 3
  EXPECT_THROW(validate(o, Strategy::ASD), ValueError);
  GenerateOptions fixed;
  fixed.adaptive_gamma = false;
  fixed.carry_gamma = true;
  EXPECT_THROW(validate(fixed, Strategy::DOTF), ValueError);
  EXPECT_NO_THROW(validate(fixed, Strategy::AR));  // "ar" reads neither
  GenerateOptions sampled;
  sampled.temperature = 0.7;
  EXPECT_THROW(check_given_options(sampled, {"temperature"}), ValueError);  // needs do_sample
  sampled.do_sample = true;
  EXPECT_NO_THROW(check_given_options(sampled, {"temperature"}));
}
