// n-gram lookup drafts: the most recent earlier occurrence of the longest suffix, over the emitted history
// and this round's drafts, capped by the room and by max_tokens.
#include "speculative/lookup_drafter.h"

#include <gtest/gtest.h>

using namespace dotf;

TEST(LookupDrafter, ContinuesTheMostRecentEarlierOccurrenceOfTheLongestSuffix) {
  const LookupOptions o{3, 2, 4};
  //                                 0  1  2  3  4  5  6  7  8  9
  const std::vector<int64_t> history{5, 6, 7, 8, 9, 5, 6, 7, 1, 5, 6};
  // suffix [5, 6] occurs at 5 and 0 (the later wins): continues with 7, 1, 5, 6
  EXPECT_EQ(ngram_lookup(history, {}, 8, o), (std::vector<int64_t>{7, 1, 5, 6}));
  EXPECT_EQ(ngram_lookup(history, {}, 2, o), (std::vector<int64_t>{7, 1}));  // room
  // the tail (this round's drafts) extends the suffix: [5, 6, 7] matches at 5 and 0
  EXPECT_EQ(ngram_lookup(history, {7}, 8, o), (std::vector<int64_t>{1, 5, 6, 7}));
  EXPECT_TRUE(ngram_lookup({1, 2, 3, 4}, {}, 8, o).empty());  // no repeated suffix
  EXPECT_TRUE(ngram_lookup(history, {}, 0, o).empty());
}

TEST(LookupDrafter, ProposesIntoAProposalUpToItsCap) {
  LookupDrafter drafter(LookupOptions{3, 2, 4});
  const std::vector<int64_t> history{5, 6, 7, 8, 9, 5, 6};
  Proposal p;
  drafter.propose(DraftContext{history, 6}, 3, p);
  EXPECT_EQ(p.tokens, (std::vector<int64_t>{7, 8, 9}));
  for (DraftSource s : p.sources) EXPECT_EQ(s, DraftSource::Lookup);
  for (const at::Tensor& q : p.q) EXPECT_FALSE(q.defined());  // deterministic proposals
}
