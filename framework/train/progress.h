// What a run prints while it trains: a live one-line bar on a terminal, plain lines otherwise,
// or JSON lines (`--log-format jsonl`). metrics.jsonl is written by the trainer either way.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace kiln::train {

/// kQuiet prints nothing: for callers that report progress themselves (`kiln bench model`); it
/// has no --log-format name.
enum class LogFormat { kAuto, kBar, kText, kJsonl, kQuiet };

/// "auto" | "bar" | "text" | "jsonl"; throws kiln::Error (user) otherwise.
LogFormat parse_log_format(std::string_view name);

class Progress {
 public:
  /// kAuto: the bar when stderr is a terminal, else text.
  Progress(LogFormat format, int64_t total_steps, int64_t first_step);
  ~Progress();

  /// A training step's metrics ("step", "loss", "lr", "grad_norm", "tokens_per_s", ...).
  /// `print_line`: a log_every step (text and jsonl print only those; the bar updates always).
  void step(const nlohmann::json& metrics, bool print_line);
  /// A validation result, or any other event line ("val_loss", ...).
  void event(const nlohmann::json& metrics);
  /// A free-form message (checkpoint saved, ...), printed without breaking the bar.
  void message(const std::string& text);
  /// Ends the bar's line.
  void finish();

 private:
  void clear_bar();
  LogFormat format_;
  int64_t total_;
  int64_t first_;
  double start_seconds_;
  bool bar_shown_ = false;
};

} // namespace kiln::train
