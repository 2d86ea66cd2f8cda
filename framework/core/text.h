// Small text helpers for messages: joining lists, "did you mean" suggestions, name checks.
#pragma once

#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace kiln::core {

/// "a, b, c" ("" for an empty list).
std::string join(std::span<const std::string> items, std::string_view separator = ", ");

/// "a, b, c", or "(none)" for an empty list.
std::string join_or_none(std::span<const std::string> items, std::string_view separator = ", ");

/// Optimal-string-alignment distance: Levenshtein plus adjacent transpositions, so the commonest
/// typo ("setps" for "steps") costs 1, not 2. Case-insensitive.
size_t edit_distance(std::string_view a, std::string_view b);

/// The candidate nearest to WORD when it is close enough to be a plausible typo of it (at most a
/// third of the candidate's letters differ); ties go to the earliest candidate.
std::optional<std::string> nearest(std::string_view word, std::span<const std::string> candidates);

/// " (did you mean 'X'?)" for the nearest candidate, or "" when none is close.
std::string did_you_mean(std::string_view word, std::span<const std::string> candidates);

/// [a-z0-9_]+: permanent registry names of plugins, backends, families, policies.
bool is_registry_name(std::string_view name);

} // namespace kiln::core
