// The LibTorch (Kineto) profiler around some work: the CPU ops of every thread (autograd's too),
// and the CUDA kernels on a GPU. `kiln generate --profile` and `kiln bench model --profile` use it.
#pragma once

#include <filesystem>
#include <memory>
#include <string>

namespace kiln::bench {

class Profile {
 public:
  /// Starts profiling (CUDA kernels too when `cuda`). One profile at a time in a process.
  explicit Profile(bool cuda);
  /// Stops a profile that was not finished, keeping nothing.
  ~Profile();
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;

  /// Stops, writes a Chrome trace (chrome://tracing, Perfetto) to `trace`, and returns the
  /// report: the `rows` CPU ops and GPU kernels that took the most time in all, with their calls.
  std::string finish(const std::filesystem::path& trace, size_t rows = 15);

 private:
  bool cuda_;
  bool running_;
};

} // namespace kiln::bench
