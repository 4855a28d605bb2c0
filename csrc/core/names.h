#pragma once
// One name table per enum, read both ways: enum -> name (statistics, messages, the option table) and
// name -> enum (options from Python), so that each name is spelt once. An enum gets its table by
// specialising EnumNames next to its definition:
//
//   template <> struct EnumNames<DraftExit> {
//     static constexpr const char* what = "draft_exit";   // the option or argument it parses
//     static constexpr std::pair<DraftExit, const char*> entries[] = {{DraftExit::Probability, "probability"}, ...};
//   };
#include "core/check.h"

#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace dotf {

template <typename Enum>
struct EnumNames;  // specialised per enum, see above

template <typename Enum>
const char* name_of(Enum value) {
  for (const auto& [e, name] : EnumNames<Enum>::entries)
    if (e == value) return name;
  return "?";
}

template <typename Enum>
std::vector<std::string> names_of() {
  std::vector<std::string> out;
  for (const auto& entry : EnumNames<Enum>::entries) out.emplace_back(entry.second);
  return out;
}

// "'a' or 'b'" for two choices, "one of 'a', 'b', 'c'" for more.
std::string describe_choices(const std::vector<std::string>& names);

// ValueError "<what> must be <choices>, got '<name>'" for a name the table does not hold.
template <typename Enum>
Enum parse_name(std::string_view name) {
  for (const auto& [e, n] : EnumNames<Enum>::entries)
    if (name == n) return e;
  throw ValueError(detail::concat(EnumNames<Enum>::what, " must be ", describe_choices(names_of<Enum>()), ", got '",
                                  name, "'"));
}

inline std::string describe_choices(const std::vector<std::string>& names) {
  std::string s = names.size() > 2 ? "one of " : "";
  for (size_t i = 0; i < names.size(); ++i) {
    if (i > 0) s += names.size() == 2 ? " or " : ", ";
    s += "'" + names[i] + "'";
  }
  return s;
}

}  // namespace dotf
