#include "kiln/sdk/dispatch.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/log.h"
#include "kiln/sdk/names.h"

#include <fmt/format.h>

#include <algorithm>
#include <iterator>
#include <set>

namespace kiln::sdk {
namespace {

std::string join(const std::vector<std::string>& items, std::string_view sep = ", ") {
  std::string out;
  for (const auto& item : items) {
    if (!out.empty()) out += sep;
    out += item;
  }
  return out.empty() ? "(none)" : out;
}

std::string resolution_key(std::string_view op, c10::DeviceType device, c10::ScalarType dtype) {
  return fmt::format("{}|{}|{}", op, device_name(device), dtype_name(dtype));
}

// Notes that policies attach to the selection running on this thread (note_selection). Only
// collected inside a NoteScope; a nested selection (a kernel timed by a policy may dispatch
// other ops) takes only the notes made after it started.
struct ThreadNotes {
  std::vector<std::string> notes;
  int depth = 0;
};
ThreadNotes& thread_notes() {
  thread_local ThreadNotes notes;
  return notes;
}

class NoteScope {
 public:
  NoteScope() : mark_(thread_notes().notes.size()) { ++thread_notes().depth; }
  ~NoteScope() {
    auto& t = thread_notes();
    t.notes.resize(std::min(t.notes.size(), mark_));
    --t.depth;
  }
  NoteScope(const NoteScope&) = delete;
  NoteScope& operator=(const NoteScope&) = delete;
  /// The notes made since this scope began (and forgets them).
  std::vector<std::string> take() {
    auto& t = thread_notes();
    const auto begin = t.notes.begin() + static_cast<std::ptrdiff_t>(mark_);
    std::vector<std::string> out(std::make_move_iterator(begin),
                                 std::make_move_iterator(t.notes.end()));
    t.notes.erase(begin, t.notes.end());
    return out;
  }

 private:
  size_t mark_;
};

// Appends `part` to a "; "-joined note unless it is already one of its parts.
void append_note(std::string& note, const std::string& part) {
  if (part.empty()) return;
  for (size_t begin = 0; !note.empty() && begin <= note.size();) {
    const size_t end = std::min(note.find("; ", begin), note.size());
    if (std::string_view(note).substr(begin, end - begin) == part) return;
    begin = end + 2;
  }
  if (!note.empty()) note += "; ";
  note += part;
}

} // namespace

void note_selection(std::string note) {
  auto& t = thread_notes();
  if (t.depth > 0) t.notes.push_back(std::move(note));
}

Dispatcher& Dispatcher::global() {
  static Dispatcher* instance = new Dispatcher(); // never destroyed: plugins outlive main()
  return *instance;
}

void Dispatcher::check_new_kernel(const KernelInfo& info) const {
  std::lock_guard lock(mutex_);
  if (info.op.empty() || info.backend.empty()) {
    internal_error("kernel registration: op and backend names must not be empty (plugin '{}')",
                   info.plugin);
  }
  for (const auto& policy : policies_) {
    if (policy->name() == info.backend) {
      user_error("kernel {}/{}/{} from plugin '{}': backend name '{}' is already a policy name",
                 info.op, info.backend, device_name(info.device), info.plugin, info.backend);
    }
  }
  for (const auto& k : kernels_) {
    if (k->info.op == info.op && k->info.backend == info.backend && k->info.device == info.device) {
      user_error(
          "duplicate kernel {}/{}/{} from plugin '{}': already registered by plugin '{}'; "
          "kernels are never overridden, remove one of the plugins or rename its backend",
          info.op, info.backend, device_name(info.device), info.plugin, k->info.plugin);
    }
  }
}

void Dispatcher::check_new_policy(std::string_view name) const {
  std::lock_guard lock(mutex_);
  if (name.empty()) internal_error("policy registration: the policy name must not be empty");
  for (const auto& policy : policies_) {
    if (policy->name() == name) user_error("duplicate policy '{}': already registered", name);
  }
  for (const auto& k : kernels_) {
    if (k->info.backend == name) {
      user_error("policy '{}': the name is already a backend name (plugin '{}')", name,
                 k->info.plugin);
    }
  }
}

void Dispatcher::add_kernel(KernelRecord record) {
  if (!record.impl || record.supports == nullptr || record.run_discard == nullptr) {
    internal_error("kernel {}/{} from plugin '{}' has no implementation", record.info.op,
                   record.info.backend, record.info.plugin);
  }
  check_new_kernel(record.info);
  std::lock_guard lock(mutex_);
  kernels_.push_back(std::make_unique<KernelRecord>(std::move(record)));
}

void Dispatcher::add_policy(std::shared_ptr<Policy> policy) {
  if (!policy) internal_error("add_policy: null policy");
  check_new_policy(policy->name());
  std::lock_guard lock(mutex_);
  policies_.push_back(std::move(policy));
}

void Dispatcher::configure(DispatchConfig config) {
  std::lock_guard lock(mutex_);
  std::set<std::string, std::less<>> names;
  for (const auto& k : kernels_) names.insert(k->info.backend);
  for (const auto& p : policies_) names.insert(p->name());
  auto check = [&](const std::string& name, const std::string& where) {
    if (names.count(name) == 0) {
      user_error("unknown backend '{}' ({}); registered backends and policies: {}", name, where,
                 join({names.begin(), names.end()}));
    }
  };
  check(config.default_backend, "backend.default");
  for (const auto& [op, backend] : config.ops) check(backend, fmt::format("backend.ops.{}", op));
  config_ = std::move(config);
  resolved_.clear();
  warned_.clear();
}

DispatchConfig Dispatcher::config() const {
  std::lock_guard lock(mutex_);
  return config_;
}

const KernelRecord& Dispatcher::select(const OpCall& call) {
  return select_impl(call, /*may_run=*/true);
}

const KernelRecord& Dispatcher::select_in_place(const OpCall& call) {
  return select_impl(call, /*may_run=*/false);
}

const KernelRecord& Dispatcher::select_impl(const OpCall& call, bool may_run) {
  std::vector<const KernelRecord*> candidates;
  std::shared_ptr<Policy> policy;
  std::shared_ptr<Policy> fallback;
  std::string requested;
  bool strict = false;
  {
    std::lock_guard lock(mutex_);
    for (const auto& k : kernels_) {
      if (k->info.op == call.op && k->info.device == call.device) candidates.push_back(k.get());
    }
    std::stable_sort(candidates.begin(), candidates.end(), [](const auto* a, const auto* b) {
      return a->info.priority != b->info.priority ? a->info.priority > b->info.priority
                                                  : a->info.backend < b->info.backend;
    });
    auto it = config_.ops.find(call.op);
    requested = it != config_.ops.end() ? it->second : config_.default_backend;
    strict = config_.strict;
    for (const auto& p : policies_) {
      if (p->name() == requested) policy = p;
      if (p->name() == "auto") fallback = p;
    }
  }

  auto available = [&] {
    std::vector<std::string> names;
    for (const auto* k : candidates) names.push_back(k->info.backend);
    return join(names);
  };
  auto describe = [&] {
    return fmt::format("op '{}' on {} ({})", call.op, device_name(call.device),
                       dtype_name(call.dtype));
  };

  // The highest-priority kernel that accepts the call.
  auto first_supported = [&]() -> const KernelRecord* {
    for (const auto* k : candidates) {
      if (call.supports(*k)) return k;
    }
    return nullptr;
  };

  const KernelRecord* chosen = nullptr;
  std::string note;
  std::vector<std::string> declined; // the requested kernel's reasons, already in `note`
  NoteScope notes;
  if (policy && !may_run) {
    chosen = first_supported();
    if (chosen == nullptr) {
      user_error("{}: no registered kernel accepts the call; registered for this op and device: {}",
                 describe(), available());
    }
    note = fmt::format(
        "policy '{}' not consulted (in place: timing would repeat the update); "
        "the highest-priority kernel that accepts the call",
        requested);
  } else if (policy) {
    chosen = policy->select(call, candidates);
    if (chosen == nullptr) {
      user_error("{}: policy '{}' found no eligible kernel; registered for this op and device: {}",
                 describe(), requested, available());
    }
  } else {
    for (const auto* k : candidates) {
      if (k->info.backend == requested) {
        if (call.supports(*k)) {
          chosen = k;
        } else { // the kernel's own reasons (note_selection in its supports()), if it gave any
          std::string why;
          declined = notes.take();
          for (const auto& part : declined) append_note(why, part);
          note = fmt::format("backend '{}' does not support these arguments{}", requested,
                             why.empty() ? "" : " (" + why + ")");
        }
        break;
      }
    }
    if (chosen == nullptr && note.empty()) {
      note = fmt::format("backend '{}' has no kernel for it", requested);
    }
    if (chosen == nullptr) {
      if (strict) {
        user_error("{}: {} and backend.strict = true; registered for this op and device: {}",
                   describe(), note, available());
      }
      if (fallback && may_run) chosen = fallback->select(call, candidates);
      if (chosen == nullptr) chosen = first_supported();
      if (chosen == nullptr) {
        user_error("{}: {}, and no other registered kernel accepts the call; registered: {}",
                   describe(), note, available());
      }
      note += fmt::format("; fell back to '{}'", chosen->info.backend);
    }
  }

  const std::vector<std::string> policy_notes = notes.take();
  std::lock_guard lock(mutex_);
  auto it = std::find_if(resolved_.begin(), resolved_.end(), [&](const Resolution& r) {
    return r.op == call.op && r.device == call.device && r.dtype == call.dtype;
  });
  if (it == resolved_.end()) {
    resolved_.push_back(Resolution{std::string(call.op), call.device, call.dtype, requested,
                                   chosen->info.backend, note});
    it = std::prev(resolved_.end());
  } else if (it->chosen.find(chosen->info.backend) == std::string::npos) {
    it->chosen += "," + chosen->info.backend; // shape-dependent choice: list every backend used
  }
  for (const auto& part : policy_notes) {
    // The fallback's selection asks the declining kernel's supports() again, which posts its
    // reasons again: they are in the fallback note already.
    if (std::find(declined.begin(), declined.end(), part) == declined.end()) {
      append_note(it->note, part);
    }
  }
  if (!policy && note.find("fell back") != std::string::npos) {
    bool& warned = warned_[resolution_key(call.op, call.device, call.dtype)];
    if (!warned) {
      warned = true;
      log_warn("{}: {} (set backend.strict = true to make this an error)", describe(), note);
    }
  }
  return *chosen;
}

std::vector<KernelInfo> Dispatcher::kernels() const {
  std::lock_guard lock(mutex_);
  std::vector<KernelInfo> out;
  for (const auto& k : kernels_) out.push_back(k->info);
  std::sort(out.begin(), out.end(), [](const KernelInfo& a, const KernelInfo& b) {
    return std::tie(a.op, a.backend, a.device) < std::tie(b.op, b.backend, b.device);
  });
  return out;
}

std::vector<std::string> Dispatcher::backends() const {
  std::lock_guard lock(mutex_);
  std::set<std::string> names;
  for (const auto& k : kernels_) names.insert(k->info.backend);
  return {names.begin(), names.end()};
}

std::vector<std::string> Dispatcher::policies() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> names;
  for (const auto& p : policies_) names.push_back(p->name());
  std::sort(names.begin(), names.end());
  return names;
}

std::vector<Resolution> Dispatcher::resolved() const {
  std::lock_guard lock(mutex_);
  return resolved_;
}

void Dispatcher::reset_for_testing() {
  std::lock_guard lock(mutex_);
  kernels_.clear();
  policies_.clear();
  config_ = DispatchConfig{};
  resolved_.clear();
  warned_.clear();
}

} // namespace kiln::sdk
