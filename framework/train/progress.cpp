#include "train/progress.h"

#include "kiln/sdk/error.h"

#include <fmt/format.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

namespace kiln::train {
namespace {

double now_seconds() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

std::string duration_text(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<int64_t>(std::llround(seconds));
  if (s >= 3600) return fmt::format("{}h{:02}m", s / 3600, (s / 60) % 60);
  if (s >= 60) return fmt::format("{}m{:02}s", s / 60, s % 60);
  return fmt::format("{}s", s);
}

std::string rate_text(double tokens_per_s) {
  if (tokens_per_s >= 1e6) return fmt::format("{:.2f}M", tokens_per_s / 1e6);
  if (tokens_per_s >= 1e3) return fmt::format("{:.1f}k", tokens_per_s / 1e3);
  return fmt::format("{:.0f}", tokens_per_s);
}

double number(const nlohmann::json& metrics, const char* key) {
  const auto it = metrics.find(key);
  return it != metrics.end() && it->is_number() ? it->get<double>() : std::nan("");
}

} // namespace

LogFormat parse_log_format(std::string_view name) {
  if (name == "auto") return LogFormat::kAuto;
  if (name == "bar") return LogFormat::kBar;
  if (name == "text") return LogFormat::kText;
  if (name == "jsonl") return LogFormat::kJsonl;
  user_error("--log-format: expected auto, bar, text or jsonl, found '{}'", name);
}

Progress::Progress(LogFormat format, int64_t total_steps, int64_t first_step)
    : format_(format), total_(total_steps), first_(first_step), start_seconds_(now_seconds()) {
  if (format_ == LogFormat::kAuto)
    format_ = ::isatty(STDERR_FILENO) ? LogFormat::kBar : LogFormat::kText;
}

Progress::~Progress() {
  finish();
}

void Progress::clear_bar() {
  if (bar_shown_) {
    std::fputs("\r\033[2K", stderr);
    bar_shown_ = false;
  }
}

void Progress::step(const nlohmann::json& metrics, bool print_line) {
  if (format_ == LogFormat::kQuiet) return;
  const auto step = metrics.at("step").get<int64_t>();
  const double elapsed = now_seconds() - start_seconds_;
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, step - first_));
  const double eta = per_step * static_cast<double>(total_ - step);
  const double loss = number(metrics, "loss");
  const double lr = number(metrics, "lr");
  const double grad_norm = number(metrics, "grad_norm");
  const double rate = number(metrics, "tokens_per_s");
  switch (format_) {
    case LogFormat::kQuiet:
      break;
    case LogFormat::kJsonl:
      if (print_line) std::cout << metrics.dump() << std::endl;
      break;
    case LogFormat::kText:
      if (print_line) {
        std::cerr << fmt::format(
                         "step {}/{} | loss {:.4f} | lr {:.3e} | grad_norm {:.3f} | {} tok/s | "
                         "eta {}",
                         step, total_, loss, lr, grad_norm, rate_text(rate), duration_text(eta))
                  << std::endl;
      }
      break;
    case LogFormat::kBar:
    case LogFormat::kAuto: {
      constexpr int kWidth = 24;
      const double done =
          static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, total_));
      const int filled = static_cast<int>(std::lround(done * kWidth));
      std::string bar;
      for (int i = 0; i < kWidth; ++i) bar += i < filled ? "#" : "-";
      std::fputs(
          fmt::format("\r\033[2Kstep {}/{} [{}] loss {:.4f} lr {:.2e} gnorm {:.2f} {} tok/s "
                      "eta {}",
                      step, total_, bar, loss, lr, grad_norm, rate_text(rate), duration_text(eta))
              .c_str(),
          stderr);
      std::fflush(stderr);
      bar_shown_ = true;
      break;
    }
  }
}

void Progress::event(const nlohmann::json& metrics) {
  if (format_ == LogFormat::kQuiet) return;
  if (format_ == LogFormat::kJsonl) {
    std::cout << metrics.dump() << std::endl;
    return;
  }
  std::string text;
  for (const auto& [key, value] : metrics.items()) {
    if (!text.empty()) text += " | ";
    text += value.is_number_float() ? fmt::format("{} {:.4f}", key, value.get<double>())
                                    : fmt::format("{} {}", key, value.dump());
  }
  message(text);
}

void Progress::message(const std::string& text) {
  if (format_ == LogFormat::kQuiet) return;
  clear_bar();
  std::cerr << text << std::endl;
}

void Progress::finish() {
  if (bar_shown_) {
    std::fputs("\n", stderr);
    bar_shown_ = false;
  }
}

} // namespace kiln::train
