// Reference `mamba2_scan`: the chunked SSD algorithm of HF Nemotron-H's torch path (models.md §4.3
// steps 5-7), over padded batches and packed documents, with bounded memory.
//
// Layout. Every sequence (a BSHD row, or a THD document) is cut into chunks of Q = chunk_size
// tokens (Q is lowered to the longest sequence when that is shorter), the last one zero-padded:
// padded tokens get dt' = 0, x = B = C = 0, so they neither decay nor feed the state. BSHD keeps
// its rows ([B, NC, Q, ...], NC = ceil(L/Q)); THD lays the documents' chunks end to end in one row
// ([1, sum_d ceil(len_d/Q), Q, ...]) and resets the state at the first chunk of each document, so
// no document sees another's state. Per chunk (a = A * dt', cumulative a_cs over the chunk):
//   Y_diag = (exp(segsum(a)) .* (C B^T)) (x dt')           intra-chunk, a Q x Q causal matrix
//   S_c    = sum_j exp(a_cs[Q-1] - a_cs[j]) dt'_j x_j B_j^T  the chunk's own state contribution
//   state  = exp(a_cs[Q-1]) state + S_c                    inter-chunk, sequentially over chunks
//   Y_off  = exp(a_cs) .* (C state_in)                      the incoming state's contribution
//   y = Y_diag + Y_off + D x
// segsum(a)[i, j] = a_{j+1} + ... + a_i (i >= j), summed directly rather than as a_cs[i] - a_cs[j]
// (HF's stable form). B and C stay per group: the G groups' heads are batched against them, never
// repeated per head. dt' = clamp(softplus(dt + dt_bias), dt_min, dt_max) runs in the promoted dtype
// of dt and dt_bias before the promotion to float32, as HF. Everything else is float32 (float64
// for float64 inputs, which tests use), and y is float32.
//
// Memory. Never more than a Q x Q matrix per (chunk, head): chunks are processed in blocks of K
// chunks, K = max(1, kBlockBudget / (R H (Q^2 + Q P + P N))) (R rows, H heads, P head dim, N
// state, G groups), and only one block's temporaries live at a time. In bytes (float32):
//   M ~ 4 * [ Tp (H P + H + 2 G N)               the chunked copies of x, dt, B, C (kept)
//           + (blocks + 1) R H P N               the state entering each block (kept)
//           + c K R H (Q^2 + Q P + P N) ]        one block's temporaries, c ~ 5 forward, ~ 15
//           backward
// with Tp = R NC Q the padded token count and blocks = ceil(NC / K): linear in the tokens, the
// last term bounded by c * 4 * kBlockBudget (~1.3 GB forward, ~4 GB backward) whatever the length.
// With kBlockBudget = 2^26: Nemotron-3-Nano width (H 64, P 64, N 128, Q 128, one row) at 8192
// tokens is two blocks of 32 chunks, ~134 MB per [K, H, Q, Q] float32 temporary (HF's torch path
// builds [chunks, Q, Q, H, N] float32 products there: 34 GB).
//
// Autograd: a custom Function. Forward runs the blocks without recording and keeps only its
// (chunked) inputs and the state entering each block. Backward walks the blocks last to first,
// re-runs each one with recording on from its saved entering state, and back-propagates the
// incoming dy together with the gradient of the state it handed to the next block (and of the
// final states of the sequences that ended in it): the exact gradient of the forward, with one
// block's graph alive at a time. Double backward is not supported. The layout changes, dt', the
// casts and D x around it are plain differentiable ATen.
#include "kernels.h"

#include "kiln/sdk/error.h"

#include <ATen/ATen.h>
#include <c10/core/GradMode.h>
#include <torch/csrc/autograd/autograd.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace kiln::backends::torch_ref {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

constexpr int64_t kBlockBudget = int64_t{1} << 26; // elements of one block's largest temporaries

// Where the sequences lie in the chunk layout [rows, chunks, Q, ...].
struct Plan {
  int64_t rows = 0, chunks = 0, block = 1;
  std::vector<int64_t> seq_row, seq_first, seq_count; // per sequence (state slot)

  int64_t sequences() const { return static_cast<int64_t>(seq_row.size()); }
  std::vector<int64_t> flat() const {
    std::vector<int64_t> v{rows, chunks, block};
    for (int64_t s = 0; s < sequences(); ++s) {
      v.insert(v.end(), {seq_row[s], seq_first[s], seq_count[s]});
    }
    return v;
  }
  static Plan from_flat(const std::vector<int64_t>& v) {
    Plan p;
    p.rows = v[0];
    p.chunks = v[1];
    p.block = v[2];
    for (size_t i = 3; i + 2 < v.size(); i += 3) {
      p.seq_row.push_back(v[i]);
      p.seq_first.push_back(v[i + 1]);
      p.seq_count.push_back(v[i + 2]);
    }
    return p;
  }
};

// segsum(a)[..., i, j] = a_{j+1} + ... + a_i for i >= j, -inf above the diagonal.
at::Tensor segsum(const at::Tensor& a) { // [..., Q] -> [..., Q, Q]
  const int64_t q = a.size(-1);
  const auto opts = at::TensorOptions().dtype(at::kBool).device(a.device());
  const at::Tensor strict = at::ones({q, q}, opts).tril(-1);
  const at::Tensor lower = at::ones({q, q}, opts).tril(0);
  std::vector<int64_t> shape = a.sizes().vec();
  shape.push_back(q);
  const at::Tensor terms = a.unsqueeze(-1).expand(shape).masked_fill(strict.logical_not(), 0.0);
  return terms.cumsum(-2).masked_fill(lower.logical_not(),
                                      -std::numeric_limits<double>::infinity());
}

// One block of K chunks, all rows. Inputs are slices of the chunk layout in the compute dtype:
// x [R, K, Q, H, P], dt [R, K, Q, H], B and C [R, K, Q, G, N]; state [R, H, P, N] is the state
// entering the block (before any reset at its first chunk); init [S, H, P, N].
struct BlockResult {
  at::Tensor y;                // [R, K, Q, H, P]
  at::Tensor state;            // [R, H, P, N] after the block's last chunk
  std::vector<int64_t> ended;  // sequences whose last chunk is in this block
  std::vector<at::Tensor> end; // their final states [H, P, N]
};

BlockResult run_block(const Plan& plan, int64_t c0, const at::Tensor& x, const at::Tensor& dt,
                      const at::Tensor& a_rate, const at::Tensor& b, const at::Tensor& c,
                      at::Tensor state, const at::Tensor& init) {
  const int64_t r = x.size(0), k = x.size(1), q = x.size(2), h = x.size(3), p = x.size(4);
  const int64_t g = b.size(3), n = b.size(4), hg = h / g;

  const at::Tensor a = (dt * a_rate).permute({0, 1, 3, 2}); // [R, K, H, Q]
  const at::Tensor a_cs = a.cumsum(-1);
  const at::Tensor xdt = (x * dt.unsqueeze(-1)).permute({0, 1, 3, 2, 4}); // [R, K, H, Q, P]
  const at::Tensor bg = b.permute({0, 1, 3, 2, 4});                       // [R, K, G, Q, N]
  const at::Tensor cg = c.permute({0, 1, 3, 2, 4});                       // [R, K, G, Q, N]

  // Intra-chunk: M = exp(segsum(a)) .* (C B^T), per head (C B^T per group).
  const at::Tensor cb = at::matmul(cg, bg.transpose(-1, -2)); // [R, K, G, Q, Q]
  const at::Tensor m =
      (at::exp(segsum(a)).view({r, k, g, hg, q, q}) * cb.unsqueeze(3)).view({r, k, h, q, q});
  const at::Tensor y_diag = at::matmul(m, xdt); // [R, K, H, Q, P]

  // Each chunk's own state: sum_j decay_j (x dt)_j B_j^T, heads of a group against its B.
  const at::Tensor decay = at::exp(a_cs.narrow(-1, q - 1, 1) - a_cs); // [R, K, H, Q]
  const at::Tensor xdt_decay = (xdt * decay.unsqueeze(-1))
                                   .view({r, k, g, hg, q, p})
                                   .permute({0, 1, 2, 3, 5, 4})
                                   .reshape({r, k, g, hg * p, q});
  const at::Tensor chunk_state = at::matmul(xdt_decay, bg).view({r, k, h, p, n});
  const at::Tensor chunk_decay = at::exp(a_cs.select(-1, q - 1)); // [R, K, H]

  // Inter-chunk recurrence, one chunk at a time, with resets where a sequence starts.
  BlockResult out;
  std::vector<at::Tensor> entering; // [R, H, P, N] per chunk
  entering.reserve(k);
  for (int64_t i = 0; i < k; ++i) {
    const int64_t chunk = c0 + i;
    std::vector<int64_t> rows, seqs;
    for (int64_t s = 0; s < plan.sequences(); ++s) {
      if (plan.seq_count[s] > 0 && plan.seq_first[s] == chunk) {
        rows.push_back(plan.seq_row[s]);
        seqs.push_back(s);
      }
    }
    if (!rows.empty()) {
      const auto index = [&](const std::vector<int64_t>& v) {
        return at::tensor(v, at::kLong).to(state.device());
      };
      state = state.index_copy(0, index(rows), init.index_select(0, index(seqs)));
    }
    entering.push_back(state);
    state = chunk_decay.select(1, i).view({r, h, 1, 1}) * state + chunk_state.select(1, i);
    for (int64_t s = 0; s < plan.sequences(); ++s) {
      if (plan.seq_count[s] > 0 && plan.seq_first[s] + plan.seq_count[s] - 1 == chunk) {
        out.ended.push_back(s);
        out.end.push_back(state[plan.seq_row[s]]);
      }
    }
  }
  out.state = state;

  // The entering state's contribution: exp(a_cs) .* (C state_in), heads of a group against C.
  const at::Tensor s_in = at::stack(entering, 1) // [R, K, H, P, N]
                              .view({r, k, g, hg, p, n})
                              .permute({0, 1, 2, 5, 3, 4}) // [R, K, G, N, Hg, P]
                              .reshape({r, k, g, n, hg * p});
  const at::Tensor y_off = at::matmul(cg, s_in) // [R, K, G, Q, Hg * P]
                               .view({r, k, g, q, hg, p})
                               .permute({0, 1, 2, 4, 3, 5}) // [R, K, G, Hg, Q, P]
                               .reshape({r, k, h, q, p}) *
                           at::exp(a_cs).unsqueeze(-1);
  out.y = (y_diag + y_off).permute({0, 1, 3, 2, 4}); // [R, K, Q, H, P]
  return out;
}

class ScanFunction : public torch::autograd::Function<ScanFunction> {
 public:
  // Returns {y [R, NC, Q, H, P], final states [S, H, P, N]}.
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& dt,
                               const at::Tensor& a_rate, const at::Tensor& b, const at::Tensor& c,
                               const at::Tensor& init, const Plan& plan) {
    const int64_t h = x.size(3), p = x.size(4), n = b.size(4);
    at::Tensor y = at::empty(x.sizes(), x.options());
    at::Tensor final_states = init.clone(); // sequences without tokens keep their initial state
    at::Tensor state = at::zeros({plan.rows, h, p, n}, x.options());
    std::vector<at::Tensor> block_states;
    for (int64_t c0 = 0; c0 < plan.chunks; c0 += plan.block) {
      const int64_t k = std::min(plan.block, plan.chunks - c0);
      block_states.push_back(state);
      BlockResult blk = run_block(plan, c0, x.narrow(1, c0, k), dt.narrow(1, c0, k), a_rate,
                                  b.narrow(1, c0, k), c.narrow(1, c0, k), state, init);
      y.narrow(1, c0, k).copy_(blk.y);
      for (size_t i = 0; i < blk.ended.size(); ++i) final_states[blk.ended[i]].copy_(blk.end[i]);
      state = blk.state;
    }
    variable_list to_save{x, dt, a_rate, b, c, init};
    to_save.insert(to_save.end(), block_states.begin(), block_states.end());
    ctx->save_for_backward(to_save);
    ctx->saved_data["plan"] = plan.flat();
    return {y, final_states};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &x = saved[0], &dt = saved[1], &a_rate = saved[2], &b = saved[3],
                     &c = saved[4], &init = saved[5];
    const Plan plan = Plan::from_flat(ctx->saved_data["plan"].toIntVector());
    const at::Tensor& dy = grads[0];
    const at::Tensor& dfinal = grads[1];

    at::Tensor dx = at::zeros_like(x), ddt = at::zeros_like(dt), db = at::zeros_like(b),
               dc = at::zeros_like(c), da = at::zeros_like(a_rate), dinit = at::zeros_like(init);
    if (dfinal.defined()) {
      for (int64_t s = 0; s < plan.sequences(); ++s) {
        if (plan.seq_count[s] == 0) dinit[s].add_(dfinal[s]); // final = initial
      }
    }
    at::Tensor dstate; // gradient of the state the current block hands to the next one
    const int64_t blocks = static_cast<int64_t>(saved.size()) - 6;
    for (int64_t blk_i = blocks - 1; blk_i >= 0; --blk_i) {
      const int64_t c0 = blk_i * plan.block;
      const int64_t k = std::min(plan.block, plan.chunks - c0);
      auto leaf = [](const at::Tensor& t) { return t.detach().requires_grad_(true); };
      const variable_list inputs{leaf(x.narrow(1, c0, k)), leaf(dt.narrow(1, c0, k)), leaf(a_rate),
                                 leaf(b.narrow(1, c0, k)), leaf(c.narrow(1, c0, k)),  leaf(init),
                                 leaf(saved[6 + blk_i])};
      variable_list outputs, out_grads;
      {
        at::AutoGradMode recording(true);
        BlockResult blk = run_block(plan, c0, inputs[0], inputs[1], inputs[2], inputs[3], inputs[4],
                                    inputs[6], inputs[5]);
        if (dy.defined()) {
          outputs.push_back(blk.y);
          out_grads.push_back(dy.narrow(1, c0, k));
        }
        if (dstate.defined()) {
          outputs.push_back(blk.state);
          out_grads.push_back(dstate);
        }
        if (dfinal.defined()) {
          for (size_t i = 0; i < blk.ended.size(); ++i) {
            outputs.push_back(blk.end[i]);
            out_grads.push_back(dfinal[blk.ended[i]]);
          }
        }
      }
      if (outputs.empty()) continue;
      const variable_list g = torch::autograd::grad(outputs, inputs, out_grads,
                                                    /*retain_graph=*/false,
                                                    /*create_graph=*/false, /*allow_unused=*/true);
      if (g[0].defined()) dx.narrow(1, c0, k).copy_(g[0]);
      if (g[1].defined()) ddt.narrow(1, c0, k).copy_(g[1]);
      if (g[2].defined()) da.add_(g[2]);
      if (g[3].defined()) db.narrow(1, c0, k).copy_(g[3]);
      if (g[4].defined()) dc.narrow(1, c0, k).copy_(g[4]);
      if (g[5].defined()) dinit.add_(g[5]);
      dstate = g[6];
    }
    return {dx, ddt, da, db, dc, dinit, at::Tensor()};
  }
};

// Pads dimension `dim` of t with zeros at the end up to `size`.
at::Tensor pad_to(const at::Tensor& t, int64_t dim, int64_t size) {
  if (t.size(dim) == size) return t;
  std::vector<int64_t> pad(2 * (t.dim() - dim), 0);
  pad.back() = size - t.size(dim);
  return at::constant_pad_nd(t, pad, 0.0);
}

int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

} // namespace

namespace detail {

ops::Mamba2ScanResult mamba2_scan_blocked(const ops::Mamba2ScanArgs& args,
                                          int64_t chunks_per_block) {
  const bool thd = args.cu_seqlens.defined();
  const at::Tensor& x = args.x;
  const at::ScalarType compute =
      x.scalar_type() == at::kDouble ? at::kDouble : at::ScalarType::Float;
  const int64_t h = x.size(-2), p = x.size(-1), n = args.B.size(-1);

  // dt' in the promoted dtype of dt and dt_bias (HF: bf16), then promoted.
  at::Tensor dt = args.dt;
  if (args.dt_bias.defined()) dt = dt + args.dt_bias;
  if (args.dt_softplus) dt = at::softplus(dt, /*beta=*/1, /*threshold=*/20);
  dt = at::clamp(dt, args.dt_min, args.dt_max).to(compute);
  const at::Tensor xf = x.to(compute), bf = args.B.to(compute), cf = args.C.to(compute);

  // Sequences and the chunk layout.
  std::vector<int64_t> lengths;
  std::vector<int64_t> cu;
  if (thd) {
    const at::Tensor host = args.cu_seqlens.to(at::kCPU, at::kLong).contiguous();
    cu.assign(host.data_ptr<int64_t>(), host.data_ptr<int64_t>() + host.numel());
    for (size_t d = 0; d + 1 < cu.size(); ++d) lengths.push_back(cu[d + 1] - cu[d]);
  } else {
    lengths.assign(x.size(0), x.size(1));
  }
  const int64_t longest = lengths.empty() ? 0 : *std::max_element(lengths.begin(), lengths.end());
  const int64_t q = std::max<int64_t>(1, std::min(args.chunk_size, longest));
  Plan plan;
  at::Tensor xc, dtc, bc, cc, token_rows;
  if (thd) {
    plan.rows = 1;
    std::vector<int64_t> rows; // padded row of each token
    rows.reserve(x.size(0));
    for (size_t d = 0; d < lengths.size(); ++d) {
      plan.seq_row.push_back(0);
      plan.seq_first.push_back(plan.chunks);
      plan.seq_count.push_back(ceil_div(lengths[d], q));
      for (int64_t i = 0; i < lengths[d]; ++i) rows.push_back(plan.chunks * q + i);
      plan.chunks += plan.seq_count.back();
    }
    token_rows = at::tensor(rows, at::kLong).to(x.device());
    const int64_t padded = plan.chunks * q;
    auto to_chunks = [&](const at::Tensor& t) { // [T, ...] -> [1, NC, Q, ...]
      std::vector<int64_t> shape = t.sizes().vec();
      shape[0] = padded;
      at::Tensor z = at::zeros(shape, t.options()).index_copy(0, token_rows, t);
      shape[0] = q;
      shape.insert(shape.begin(), {1, plan.chunks});
      return z.view(shape);
    };
    xc = to_chunks(xf);
    dtc = to_chunks(dt);
    bc = to_chunks(bf);
    cc = to_chunks(cf);
  } else {
    plan.rows = x.size(0);
    plan.chunks = ceil_div(x.size(1), q);
    for (int64_t r = 0; r < plan.rows; ++r) {
      plan.seq_row.push_back(r);
      plan.seq_first.push_back(0);
      plan.seq_count.push_back(plan.chunks);
    }
    auto to_chunks = [&](const at::Tensor& t) { // [B, L, ...] -> [B, NC, Q, ...]
      std::vector<int64_t> shape = t.sizes().vec();
      shape[1] = q;
      shape.insert(shape.begin() + 1, plan.chunks);
      return pad_to(t, 1, plan.chunks * q).reshape(shape);
    };
    xc = to_chunks(xf);
    dtc = to_chunks(dt);
    bc = to_chunks(bf);
    cc = to_chunks(cf);
  }
  const int64_t per_chunk = std::max<int64_t>(1, plan.rows * h * (q * q + q * p + p * n));
  plan.block = chunks_per_block > 0 ? chunks_per_block
                                    : std::clamp<int64_t>(kBlockBudget / per_chunk, 1,
                                                          std::max<int64_t>(1, plan.chunks));

  const int64_t seqs = static_cast<int64_t>(lengths.size());
  const at::Tensor init = args.initial_states.defined()
                              ? args.initial_states.to(compute)
                              : at::zeros({seqs, h, p, n}, x.options().dtype(compute));
  const variable_list out = ScanFunction::apply(xc, dtc, args.A.to(compute), bc, cc, init, plan);

  at::Tensor y; // back to x's layout
  if (thd) {
    y = out[0].reshape({plan.chunks * q, h, p}).index_select(0, token_rows);
  } else {
    y = out[0].reshape({x.size(0), plan.chunks * q, h, p}).narrow(1, 0, x.size(1));
  }
  if (args.D.defined()) y = y + args.D.to(compute).unsqueeze(-1) * xf;
  ops::Mamba2ScanResult result;
  result.y = y;
  if (args.return_final_states) result.final_states = out[1];
  return result;
}

ops::Mamba2ScanResult mamba2_scan_step(const ops::Mamba2ScanArgs& args) {
  const at::Tensor& x = args.x; // [B, 1, H, P]
  const at::ScalarType compute =
      x.scalar_type() == at::kDouble ? at::kDouble : at::ScalarType::Float;
  const int64_t batch = x.size(0), h = x.size(2), p = x.size(3);
  const int64_t g = args.B.size(2), n = args.B.size(3);
  at::Tensor dt = args.dt; // dt' as in the chunked path: promoted dtype first, then float32
  if (args.dt_bias.defined()) dt = dt + args.dt_bias;
  if (args.dt_softplus) dt = at::softplus(dt, /*beta=*/1, /*threshold=*/20);
  dt = at::clamp(dt, args.dt_min, args.dt_max).to(compute).view({batch, h}); // [B, H]
  const at::Tensor xf = x.to(compute).view({batch, g, h / g, p});            // [B, G, H/G, P]
  const at::Tensor bf = args.B.to(compute).view({batch, g, 1, 1, n});
  const at::Tensor cf = args.C.to(compute).view({batch, g, 1, n, 1});
  const at::Tensor decay = at::exp(dt * args.A.to(compute)).view({batch, g, h / g, 1, 1});
  const at::Tensor state = args.initial_states.defined()
                               ? args.initial_states.to(compute).view({batch, g, h / g, p, n})
                               : at::zeros({batch, g, h / g, p, n}, x.options().dtype(compute));
  // S = exp(dt' A) S + dt' x B^T;  y = S C (+ D x)
  const at::Tensor input = (dt.view({batch, g, h / g, 1}) * xf).unsqueeze(-1) * bf;
  const at::Tensor next = decay * state + input; // [B, G, H/G, P, N]
  at::Tensor y = at::matmul(next, cf).view({batch, 1, h, p});
  if (args.D.defined()) y = y + args.D.to(compute).unsqueeze(-1) * x.to(compute);
  ops::Mamba2ScanResult result;
  result.y = y;
  if (args.return_final_states) result.final_states = next.view({batch, h, p, n});
  return result;
}

} // namespace detail

ops::Mamba2ScanResult mamba2_scan(const ops::Mamba2ScanArgs& args) {
  // One token per row (a decode step): the recurrence itself, a handful of kernels, instead of
  // the chunked algorithm's layout machinery. The same math (models.md §4.3), differentiable.
  if (!args.cu_seqlens.defined() && args.x.size(1) == 1) return detail::mamba2_scan_step(args);
  return detail::mamba2_scan_blocked(args, /*chunks_per_block=*/0);
}

} // namespace kiln::backends::torch_ref
