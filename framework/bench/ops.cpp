#include "bench/ops.h"

#include "kiln/sdk/error.h"
#include "kiln/sdk/ops.h"

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>

namespace kiln::bench {
namespace {

std::string join(std::span<const std::string_view> names) {
  std::string out;
  for (auto n : names) out += (out.empty() ? "" : ", ") + std::string(n);
  return out;
}

at::TensorOptions floating(c10::ScalarType dtype, c10::Device device) {
  return at::TensorOptions().dtype(dtype).device(device);
}

// ---- sparse_mla ---------------------------------------------------------------------------------

// GLM-5's MLA softmax scale: qk_head_dim^-0.5 = (192 + 64)^-0.5 (mscale 1).
constexpr double kMlaSoftmaxScale = 1.0 / 16.0;

// int32 [T, 1, topk] as indexer_topk would produce: query t sits at key position Tk - T + t and
// picks min(topk, visible) distinct random keys among the positions <= its own, -1 padding the
// rest. Rows are drawn in chunks so that no [T, Tk] buffer exists at long T.
at::Tensor causal_topk_indices(int64_t T, int64_t Tk, int64_t topk, c10::Device device) {
  const int64_t k = std::min(topk, Tk);
  at::Tensor out = at::full({T, topk}, -1, at::TensorOptions().dtype(at::kInt).device(device));
  const at::Tensor keys = at::arange(Tk, at::TensorOptions().dtype(at::kLong).device(device));
  const int64_t chunk = std::max<int64_t>(1, (int64_t{64} << 20) / (4 * Tk));
  for (int64_t t0 = 0; t0 < T; t0 += chunk) {
    const int64_t c = std::min(chunk, T - t0);
    const at::Tensor pos = at::arange(t0, t0 + c, keys.options()) + (Tk - T); // [c]
    at::Tensor r = at::rand({c, Tk}, at::TensorOptions().device(device));     // [c, Tk] in [0, 1)
    r.masked_fill_(keys.unsqueeze(0).gt(pos.unsqueeze(1)), -1.0);             // invisible keys
    auto [values, picked] = r.topk(k, -1, /*largest=*/true, /*sorted=*/false);
    picked.masked_fill_(values.lt(0), -1);
    out.narrow(0, t0, c).narrow(1, 0, k).copy_(picked);
  }
  return out.unsqueeze(1);
}

OpInputs sparse_mla_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const int64_t T = s.at("T"), Tk = s.at("Tk"), H = s.at("H"), L = s.at("L"), R = s.at("R");
  const auto opt = floating(dtype, device);
  OpInputs in;
  in.tensors = {at::randn({T, H, L + R}, opt),  // q_absorbed
                at::randn({Tk, 1, L + R}, opt), // kv_latent
                causal_topk_indices(T, Tk, s.at("topk"), device),
                (at::randn({H, s.at("Dv"), L}, floating(at::kFloat, device)) /
                 std::sqrt(static_cast<double>(L)))
                    .to(dtype)}; // w_vc
  in.differentiable = {0, 1, 3};
  return in;
}

at::Tensor sparse_mla_run(const Shape&, const std::vector<at::Tensor>& t) {
  return ops::sparse_mla(t[0], t[1], t[2], t[3], kMlaSoftmaxScale);
}

double sparse_mla_fwd(const Shape& s) {
  return sparse_mla_forward_flops(s.at("T"), s.at("H"), s.at("topk"), s.at("L"), s.at("R"));
}
double sparse_mla_bwd(const Shape& s) {
  return sparse_mla_backward_flops(s.at("T"), s.at("H"), s.at("topk"), s.at("L"), s.at("R"));
}

// ---- indexer_topk -------------------------------------------------------------------------------

OpInputs indexer_topk_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const int64_t T = s.at("T"), H = s.at("H_I"), D = s.at("D_I");
  const auto opt = floating(dtype, device);
  // head_weights fold HF's H_I^-0.5 and D_I^-0.5 in (see the op's header).
  const double fold = 1.0 / std::sqrt(static_cast<double>(H * D));
  OpInputs in;
  in.tensors = {at::randn({T, H, D}, opt), at::randn({T, D}, opt),
                at::randn({T, H}, floating(at::kFloat, device)) * fold,
                at::tensor({0, static_cast<int32_t>(T)}, at::kInt).to(device)};
  return in;
}

at::Tensor indexer_topk_run(const Shape& s, const std::vector<at::Tensor>& t) {
  return ops::indexer_topk(t[0], t[1], t[2], t[3], s.at("topk"));
}

// score[q, t] = sum_h w[q, h] * relu(q[q, h] . k[t]), for the given rows and keys; -inf for a
// key outside [0, Tk) (a -1 slot, or whatever a broken kernel wrote there: never indexed).
at::Tensor indexer_topk_score(const std::vector<at::Tensor>& t, const at::Tensor& rows,
                              const at::Tensor& keys) {
  const int64_t tk = t[1].size(0);
  const at::Tensor q = t[0].index_select(0, rows).to(at::kFloat); // [R, H, D]
  const at::Tensor k = t[1].to(at::kFloat)
                           .index_select(0, keys.clamp(0, tk - 1).flatten())
                           .view({keys.size(0), keys.size(1), -1}); // [R, K, D]
  const at::Tensor w = t[2].index_select(0, rows).to(at::kFloat);   // [R, H]
  const at::Tensor s = at::relu(at::matmul(q, k.transpose(1, 2)));  // [R, H, K]
  const at::Tensor score = (s * w.unsqueeze(-1)).sum(1);            // [R, K]
  return at::where(keys.ge(0) & keys.lt(tk), score, -INFINITY);
}

double indexer_fwd(const Shape& s) {
  return indexer_flops(s.at("T"), s.at("H_I"), s.at("D_I"));
}

// ---- attention (BSHD, causal GQA) ---------------------------------------------------------------

OpInputs attention_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const int64_t B = s.at("B"), S = s.at("S"), D = s.at("D");
  const auto opt = floating(dtype, device);
  OpInputs in;
  in.tensors = {at::randn({B, S, s.at("Hq"), D}, opt), at::randn({B, S, s.at("Hkv"), D}, opt),
                at::randn({B, S, s.at("Hkv"), D}, opt)};
  in.differentiable = {0, 1, 2};
  return in;
}

at::Tensor attention_run(const Shape& s, const std::vector<at::Tensor>& t) {
  return ops::attention(t[0], t[1], t[2], 1.0 / std::sqrt(static_cast<double>(s.at("D"))));
}

double attention_fwd(const Shape& s) {
  return attention_forward_flops(s.at("B"), s.at("S"), s.at("S"), s.at("Hq"), s.at("D"), s.at("D"));
}
double attention_bwd(const Shape& s) {
  return 2.5 * attention_fwd(s);
}

// ---- moe_experts (SwiGLU) -----------------------------------------------------------------------

OpInputs moe_experts_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const int64_t N = s.at("tokens"), E = s.at("E"), k = s.at("k"), H = s.at("H"), I = s.at("I");
  const auto f32 = floating(at::kFloat, device);
  // k distinct experts per token, uniformly; routing weights normalised per token (float32, HF).
  const at::Tensor indices = std::get<1>(at::rand({N, E}, f32).topk(k, -1)).to(at::kLong);
  at::Tensor weights = at::rand({N, k}, f32) + 0.1;
  weights = weights / weights.sum(-1, /*keepdim=*/true);
  OpInputs in;
  in.tensors = {at::randn({N, H}, floating(dtype, device)),
                (at::randn({E, 2 * I, H}, f32) / std::sqrt(static_cast<double>(H))).to(dtype),
                (at::randn({E, H, I}, f32) / std::sqrt(static_cast<double>(I))).to(dtype), indices,
                weights};
  in.differentiable = {0, 1, 2, 4};
  return in;
}

at::Tensor moe_experts_run(const Shape&, const std::vector<at::Tensor>& t) {
  return ops::moe_experts(t[0], t[1], t[2], t[3], t[4], ops::MoeActivation::kSwiGlu);
}

double moe_experts_fwd(const Shape& s) {
  return moe_experts_flops(s.at("tokens"), s.at("k"), s.at("H"), s.at("I"), /*swiglu=*/true);
}
double moe_experts_bwd(const Shape& s) {
  return 2.0 * moe_experts_fwd(s);
}

// ---- adamw (one update of a parameter of N elements, with its float32 master and moments) -------

OpInputs adamw_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const int64_t n = s.at("N");
  const auto f32 = floating(at::kFloat, device);
  const at::Tensor param = at::randn({n}, floating(dtype, device));
  OpInputs in;
  // A few steps in: moments of a gradient ~1e-2 (exp_avg_sq positive).
  in.tensors = {param, (at::randn({n}, f32) * 1e-2).to(dtype),
                param.to(at::kFloat, /*non_blocking=*/false, /*copy=*/true),
                at::randn({n}, f32) * 1e-3, at::rand({n}, f32) * 1e-4};
  return in;
}

// Returns the updated master (the tensor every backend writes in float32).
at::Tensor adamw_run(const Shape&, const std::vector<at::Tensor>& t) {
  ops::adamw({.param = t[0],
              .grad = t[1],
              .master = t[2],
              .exp_avg = t[3],
              .exp_avg_sq = t[4],
              .lr = 1e-4,
              .beta1 = 0.9,
              .beta2 = 0.95,
              .weight_decay = 0.1,
              .step = 10});
  return t[2];
}

// ---- linear_cross_entropy (the LM head and its loss; GLM-5's vocabulary) ------------------------

OpInputs linear_cross_entropy_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const int64_t T = s.at("T"), H = s.at("H"), V = s.at("V");
  OpInputs in;
  in.tensors = {
      at::randn({T, H}, floating(dtype, device)),
      (at::randn({V, H}, floating(at::kFloat, device)) / std::sqrt(static_cast<double>(H)))
          .to(dtype),
      at::randint(0, V, {T}, at::TensorOptions().dtype(at::kLong).device(device))};
  in.differentiable = {0, 1};
  return in;
}

at::Tensor linear_cross_entropy_run(const Shape&, const std::vector<at::Tensor>& t) {
  return ops::linear_cross_entropy({.hidden = t[0], .weight = t[1], .labels = t[2]}).loss;
}

double linear_cross_entropy_fwd(const Shape& s) {
  return 2.0 * static_cast<double>(s.at("T")) * static_cast<double>(s.at("V")) *
         static_cast<double>(s.at("H"));
}
double linear_cross_entropy_bwd(const Shape& s) {
  return 2.0 * linear_cross_entropy_fwd(s);
}

// ---- rms_norm (memory-bound: no FLOP count) -----------------------------------------------------

OpInputs rms_norm_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const auto opt = floating(dtype, device);
  OpInputs in;
  in.tensors = {at::randn({s.at("T"), s.at("D")}, opt),
                (at::randn({s.at("D")}, floating(at::kFloat, device)) * 0.1 + 1.0).to(dtype)};
  in.differentiable = {0, 1};
  return in;
}

at::Tensor rms_norm_run(const Shape&, const std::vector<at::Tensor>& t) {
  return ops::rms_norm(t[0], t[1], 1e-5);
}

double no_flops(const Shape&) {
  return 0.0;
}

// ---- mamba2_scan and causal_conv1d (Nemotron-3-Nano widths; no FLOP convention in perf.md) ------

OpInputs mamba2_scan_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const int64_t b = s.at("B"), l = s.at("L"), h = s.at("H"), p = s.at("P"), g = s.at("G"),
                n = s.at("N");
  KILN_CHECK_USER(h % g == 0, "--shape: mamba2_scan needs H ({}) divisible by G ({})", h, g);
  const auto opt = floating(dtype, device);
  const auto f32 = floating(at::kFloat, device);
  OpInputs in;
  in.tensors = {at::randn({b, l, h, p}, opt),
                (at::randn({b, l, h}, f32) - 1.0).to(dtype), // dt before dt_bias and softplus
                -at::exp(0.5 * at::randn({h}, f32)),         // A = -exp(A_log)
                at::randn({b, l, g, n}, opt),
                at::randn({b, l, g, n}, opt),
                at::randn({h}, f32).to(dtype),
                (0.5 * at::randn({h}, f32)).to(dtype)};
  in.differentiable = {0, 1, 2, 3, 4, 5, 6};
  return in;
}

at::Tensor mamba2_scan_run(const Shape&, const std::vector<at::Tensor>& t) {
  ops::Mamba2ScanArgs args{
      .x = t[0], .dt = t[1], .A = t[2], .B = t[3], .C = t[4], .D = t[5], .dt_bias = t[6]};
  args.dt_min = 1e-3; // HF's prefill clamp
  return ops::mamba2_scan(args).y;
}

OpInputs causal_conv1d_inputs(const Shape& s, c10::ScalarType dtype, c10::Device device) {
  const auto opt = floating(dtype, device);
  OpInputs in;
  in.tensors = {at::randn({s.at("B"), s.at("L"), s.at("C")}, opt),
                (at::randn({s.at("C"), s.at("K")}, floating(at::kFloat, device)) * 0.3).to(dtype),
                at::randn({s.at("C")}, opt)};
  in.differentiable = {0, 1, 2};
  return in;
}

at::Tensor causal_conv1d_run(const Shape&, const std::vector<at::Tensor>& t) {
  return ops::causal_conv1d({.x = t[0], .weight = t[1], .bias = t[2]}).out;
}

const std::vector<OpSpec>& table() {
  static const std::vector<OpSpec> specs = {
      {.name = "sparse_mla",
       .keys =
           {{"T", 4096}, {"H", 64}, {"topk", 2048}, {"Tk", 0}, {"L", 512}, {"R", 64}, {"Dv", 256}},
       .flops_rule = "2*H*(L+R + L)*topk*T",
       .backward_flops_rule = "2*H*topk*T*(2*L + 3*(L+R))",
       .make_inputs = &sparse_mla_inputs,
       .run = &sparse_mla_run,
       .forward_flops = &sparse_mla_fwd,
       .backward_flops = &sparse_mla_bwd},
      {.name = "indexer_topk",
       .keys = {{"T", 4096}, {"H_I", 32}, {"D_I", 128}, {"topk", 2048}},
       .flops_rule = "2*(T*(T+1)/2 causal pairs)*H_I*D_I",
       .integer_output = true,
       .make_inputs = &indexer_topk_inputs,
       .run = &indexer_topk_run,
       .forward_flops = &indexer_fwd,
       .backward_flops = nullptr,
       .score = &indexer_topk_score},
      {.name = "attention",
       .keys = {{"B", 1}, {"S", 4096}, {"Hq", 96}, {"Hkv", 8}, {"D", 128}},
       .flops_rule = "2*B*Hq*(S*(S+1)/2 causal pairs)*(D + D)",
       .backward_flops_rule = "2.5 x fwd",
       .make_inputs = &attention_inputs,
       .run = &attention_run,
       .forward_flops = &attention_fwd,
       .backward_flops = &attention_bwd},
      {.name = "moe_experts",
       .keys = {{"tokens", 4096}, {"E", 256}, {"k", 8}, {"H", 6144}, {"I", 2048}},
       .flops_rule = "2*tokens*k*H*I*3 (SwiGLU)",
       .backward_flops_rule = "2 x fwd",
       .make_inputs = &moe_experts_inputs,
       .run = &moe_experts_run,
       .forward_flops = &moe_experts_fwd,
       .backward_flops = &moe_experts_bwd},
      {.name = "mamba2_scan",
       .keys = {{"B", 1}, {"L", 8192}, {"H", 64}, {"P", 64}, {"G", 8}, {"N", 128}},
       .flops_rule = "no convention in perf.md, not counted",
       .backward_flops_rule = "not counted",
       .make_inputs = &mamba2_scan_inputs,
       .run = &mamba2_scan_run,
       .forward_flops = &no_flops,
       .backward_flops = &no_flops},
      {.name = "causal_conv1d",
       .keys = {{"B", 1}, {"L", 8192}, {"C", 6144}, {"K", 4}},
       .flops_rule = "memory-bound, not counted",
       .backward_flops_rule = "memory-bound, not counted",
       .make_inputs = &causal_conv1d_inputs,
       .run = &causal_conv1d_run,
       .forward_flops = &no_flops,
       .backward_flops = &no_flops},
      {.name = "linear_cross_entropy",
       .keys = {{"T", 4096}, {"H", 6144}, {"V", 154880}},
       .flops_rule = "2*T*V*H (the logits GEMM)",
       .backward_flops_rule =
           "4*T*V*H (dhidden and dweight; the logits' recomputation not counted)",
       .make_inputs = &linear_cross_entropy_inputs,
       .run = &linear_cross_entropy_run,
       .forward_flops = &linear_cross_entropy_fwd,
       .backward_flops = &linear_cross_entropy_bwd},
      {.name = "rms_norm",
       .keys = {{"T", 4096}, {"D", 6144}},
       .flops_rule = "memory-bound, not counted",
       .backward_flops_rule = "memory-bound, not counted",
       .make_inputs = &rms_norm_inputs,
       .run = &rms_norm_run,
       .forward_flops = &no_flops,
       .backward_flops = &no_flops},
      {.name = "adamw",
       .keys = {{"N", int64_t{1} << 27}},
       .flops_rule = "memory-bound, not counted",
       .backward_flops_rule = "",
       .in_place = true,
       .make_inputs = &adamw_inputs,
       .run = &adamw_run,
       .forward_flops = &no_flops,
       .backward_flops = nullptr},
  };
  return specs;
}

} // namespace

void Shape::set(std::string key, int64_t value) {
  for (auto& [k, v] : entries_) {
    if (k == key) {
      v = value;
      return;
    }
  }
  entries_.emplace_back(std::move(key), value);
}

int64_t Shape::at(std::string_view key) const {
  for (const auto& [k, v] : entries_) {
    if (k == key) return v;
  }
  internal_error("bench shape: no key '{}' in {}", key, str());
}

bool Shape::contains(std::string_view key) const {
  return std::any_of(entries_.begin(), entries_.end(),
                     [&](const auto& e) { return e.first == key; });
}

std::string Shape::str() const {
  std::string out;
  for (const auto& [k, v] : entries_) out += fmt::format("{}{}={}", out.empty() ? "" : ",", k, v);
  return out;
}

std::vector<std::pair<std::string, int64_t>> parse_shape(std::string_view text) {
  std::vector<std::pair<std::string, int64_t>> out;
  if (text.empty()) return out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t end = std::min(text.find(',', pos), text.size());
    const std::string_view item = text.substr(pos, end - pos);
    const size_t eq = item.find('=');
    KILN_CHECK_USER(eq != std::string_view::npos && eq > 0,
                    "--shape: expected KEY=VALUE items separated by commas (e.g. "
                    "T=16384,H=64,topk=2048), found '{}' in '{}'",
                    item, text);
    const std::string_view key = item.substr(0, eq);
    const std::string_view value = item.substr(eq + 1);
    int64_t v = 0;
    const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
    KILN_CHECK_USER(ec == std::errc() && ptr == value.data() + value.size() && !value.empty(),
                    "--shape: '{}' must be a positive integer, found '{}'", key, value);
    KILN_CHECK_USER(v >= 1, "--shape: '{}' must be >= 1, found {}", key, v);
    for (const auto& [k, _] : out) {
      KILN_CHECK_USER(k != key, "--shape: key '{}' given twice in '{}'", key, text);
    }
    out.emplace_back(std::string(key), v);
    pos = end + 1;
  }
  return out;
}

std::span<const OpSpec> op_specs() {
  return table();
}

const OpSpec& find_op(std::string_view op) {
  std::vector<std::string_view> supported;
  for (const auto& s : table()) {
    if (s.name == op) return s;
    supported.push_back(s.name);
  }
  const auto all = ops::op_names();
  const bool known = std::find(all.begin(), all.end(), op) != all.end();
  KILN_CHECK_USER(!known, "--op {}: no input generator yet; `kiln bench op` supports: {}", op,
                  join(supported));
  user_error("--op: unknown op '{}'; kiln's ops: {} (with input generators: {})", op, join(all),
             join(supported));
}

Shape resolve_shape(const OpSpec& spec, std::span<const std::pair<std::string, int64_t>> given) {
  std::vector<std::string_view> names;
  for (const auto& [k, _] : spec.keys) names.push_back(k);
  for (const auto& [k, _] : given) {
    KILN_CHECK_USER(std::find(names.begin(), names.end(), k) != names.end(),
                    "--shape: op {} has no key '{}'; its keys: {}", spec.name, k, join(names));
  }
  Shape shape;
  for (const auto& [key, def] : spec.keys) {
    int64_t value = def;
    for (const auto& [k, v] : given) {
      if (k == key) value = v;
    }
    shape.set(std::string(key), value);
  }
  if (spec.name == "sparse_mla") {
    if (shape.at("Tk") == 0) shape.set("Tk", shape.at("T")); // default: self-attention
    KILN_CHECK_USER(shape.at("Tk") >= shape.at("T"),
                    "--shape: sparse_mla needs Tk >= T (queries are the last T of Tk positions), "
                    "found T={} Tk={}",
                    shape.at("T"), shape.at("Tk"));
  }
  if (spec.name == "attention") {
    KILN_CHECK_USER(shape.at("Hq") % shape.at("Hkv") == 0,
                    "--shape: attention needs Hq divisible by Hkv, found Hq={} Hkv={}",
                    shape.at("Hq"), shape.at("Hkv"));
  }
  if (spec.name == "moe_experts") {
    KILN_CHECK_USER(shape.at("k") <= shape.at("E"),
                    "--shape: moe_experts needs k <= E, found k={} E={}", shape.at("k"),
                    shape.at("E"));
  }
  return shape;
}

double sparse_mla_forward_flops(int64_t T, int64_t H, int64_t topk, int64_t L, int64_t R) {
  const double dqk = static_cast<double>(L + R), dv = static_cast<double>(L);
  return 2.0 * static_cast<double>(H) * (dqk + dv) * static_cast<double>(topk) *
         static_cast<double>(T);
}

double sparse_mla_backward_flops(int64_t T, int64_t H, int64_t topk, int64_t L, int64_t R) {
  const double dqk = static_cast<double>(L + R), dv = static_cast<double>(L);
  return 2.0 * static_cast<double>(H) * static_cast<double>(topk) * static_cast<double>(T) *
         (2.0 * dv + 3.0 * dqk);
}

double indexer_flops(int64_t T, int64_t H_I, int64_t D_I) {
  const double pairs = static_cast<double>(T) * static_cast<double>(T + 1) / 2.0;
  return 2.0 * pairs * static_cast<double>(H_I) * static_cast<double>(D_I);
}

double attention_forward_flops(int64_t B, int64_t Sq, int64_t Sk, int64_t Hq, int64_t D,
                               int64_t Dv) {
  // Query i (of Sq) sees Sk - Sq + i + 1 keys.
  const double sq = static_cast<double>(Sq), off = static_cast<double>(Sk - Sq);
  const double pairs = sq * off + sq * (sq + 1) / 2.0;
  return 2.0 * static_cast<double>(B * Hq) * pairs * static_cast<double>(D + Dv);
}

double moe_experts_flops(int64_t tokens, int64_t k, int64_t H, int64_t I, bool swiglu) {
  return 2.0 * static_cast<double>(tokens) * static_cast<double>(k) * static_cast<double>(H) *
         static_cast<double>(I) * (swiglu ? 3.0 : 2.0);
}

} // namespace kiln::bench
