"""Builds a real-width, reduced-depth checkpoint of one model family with random weights, saves it
for `kiln generate`, and times HF transformers' greedy `generate` on it.

  python3 tools/bench/hf_generate.py --family glm4_moe|glm_moe_dsa|nemotron_v3 --out DIR
      [--batch 1,16] [--prompt-len 128] [--new-tokens 128] [--seed 0] [--skip-hf]
      [--tiny] [--device cuda]

Configs (widths of the released models, few layers; /work/shared/models.md):
  glm4_moe     GLM-4.5-Air widths (as tools/bench/glm4_air_1moe.json), 2 layers: dense, MoE.
  glm_moe_dsa  GLM-5 widths, 2 layers: layer 0 dense + "full" indexer, layer 1 MoE + "shared"
               indexer (reuses layer 0's top-k); max_position_embeddings 40960 (covers 32K + decode).
  nemotron_v3  Nemotron-3-Nano-30B-A3B widths, pattern "MEM*E" (Mamba2, MoE, attention).
--tiny shrinks every width (same layer structure) for a quick check on the CPU.

Weights: HF's own initialisation (normal std initializer_range = 0.02, norms 1, router correction
bias 0, Mamba A_log / D / dt_bias as HF sets them), drawn after torch.manual_seed(seed) directly
in bf16 on the device. bos/eos/pad are unset in config.json and generation_config.json, so a
generation always runs max_new_tokens steps.

Writes DIR/config.json, DIR/generation_config.json, DIR/model.safetensors (one file) and
DIR/prompts.txt: max(batch) rows of prompt_len uniform random token ids (seeded), one row per line,
ids separated by commas; a batch of B uses the first B rows.

Timing (unless --skip-hf): HF generate, bf16, sdpa, greedy, DynamicCache, eos_token_id None and
min_new_tokens = max_new_tokens. Per batch size: one warm-up call, then three calls each of
t1 = generate(max_new_tokens=1) (prefill + first token) and tN = generate(max_new_tokens=N), with
a device synchronize around each call; medians m1, mN. Prints one JSON line per batch size:
  {"impl": "hf generate", "bench": "decode", "family", "batch", "prompt_len", "new_tokens",
   "decode_tokens_per_s": B * (N - 1) / (mN - m1), "first_token_ms": m1, ...}
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import transformers

# family -> (HF model_type, real-width config kwargs, --tiny overrides)
FAMILIES = {
    "glm4_moe": (
        "glm4_moe",
        dict(
            vocab_size=151552,
            hidden_size=4096,
            intermediate_size=10944,
            moe_intermediate_size=1408,
            num_hidden_layers=2,
            first_k_dense_replace=1,
            num_attention_heads=96,
            num_key_value_heads=8,
            head_dim=128,
            attention_bias=True,
            use_qk_norm=False,
            rms_norm_eps=1e-5,
            n_routed_experts=128,
            num_experts_per_tok=8,
            n_shared_experts=1,
            routed_scaling_factor=1.0,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            num_nextn_predict_layers=0,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0, "partial_rotary_factor": 0.5},
            max_position_embeddings=131072,
        ),
        dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            moe_intermediate_size=32,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            n_routed_experts=8,
            num_experts_per_tok=2,
        ),
    ),
    "glm_moe_dsa": (
        "glm_moe_dsa",
        dict(
            vocab_size=154880,
            hidden_size=6144,
            intermediate_size=12288,
            moe_intermediate_size=2048,
            num_hidden_layers=2,
            mlp_layer_types=["dense", "sparse"],
            first_k_dense_replace=1,  # agrees with mlp_layer_types (HF reads only the list)
            indexer_types=["full", "shared"],
            num_attention_heads=64,
            num_key_value_heads=64,
            q_lora_rank=2048,
            kv_lora_rank=512,
            qk_rope_head_dim=64,
            qk_nope_head_dim=192,
            v_head_dim=256,
            index_topk=2048,
            index_head_dim=128,
            index_n_heads=32,
            n_routed_experts=256,
            num_experts_per_tok=8,
            n_shared_experts=1,
            routed_scaling_factor=2.5,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            attention_bias=False,
            rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
            max_position_embeddings=40960,
            num_nextn_predict_layers=0,
        ),
        dict(
            vocab_size=512,
            hidden_size=64,
            intermediate_size=128,
            moe_intermediate_size=32,
            num_attention_heads=4,
            num_key_value_heads=4,
            q_lora_rank=32,
            kv_lora_rank=16,
            qk_rope_head_dim=8,
            qk_nope_head_dim=16,
            v_head_dim=16,
            index_topk=8,  # below the prompt length, so the tiny run exercises a real selection
            index_head_dim=16,
            index_n_heads=4,
            n_routed_experts=8,
            num_experts_per_tok=2,
        ),
    ),
    "nemotron_v3": (
        "nemotron_h",
        dict(
            vocab_size=131072,
            hidden_size=2688,
            layers_block_type=["linear_attention", "moe", "linear_attention", "full_attention", "moe"],  # "MEM*E"
            num_attention_heads=32,
            num_key_value_heads=2,
            head_dim=128,
            intermediate_size=1856,
            mamba_num_heads=64,
            mamba_head_dim=64,
            ssm_state_size=128,
            n_groups=8,
            conv_kernel=4,
            chunk_size=128,
            n_routed_experts=128,
            num_experts_per_tok=6,
            moe_intermediate_size=1856,
            moe_shared_expert_intermediate_size=3712,
            n_shared_experts=1,
            routed_scaling_factor=2.5,
            n_group=1,
            topk_group=1,
            norm_topk_prob=True,
            layer_norm_epsilon=1e-5,
            max_position_embeddings=262144,
            num_nextn_predict_layers=0,
        ),
        dict(
            vocab_size=512,
            hidden_size=64,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=32,
            mamba_num_heads=8,
            mamba_head_dim=8,
            ssm_state_size=16,
            n_groups=2,
            chunk_size=16,
            n_routed_experts=8,
            num_experts_per_tok=2,
            moe_intermediate_size=32,
            moe_shared_expert_intermediate_size=48,
        ),
    ),
}

COMMON = dict(
    tie_word_embeddings=False, initializer_range=0.02, bos_token_id=None, eos_token_id=None, pad_token_id=None
)


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def make_config(family: str, tiny: bool):
    model_type, real, small = FAMILIES[family]
    kwargs = dict(COMMON, **real)
    if tiny:
        kwargs.update(small)
    cfg = transformers.AutoConfig.for_model(model_type, **kwargs)
    for k, v in kwargs.items():  # HF drops or rewrites unknown / derived fields silently
        if k in ("rope_parameters", "num_nextn_predict_layers"):
            continue
        assert getattr(cfg, k) == v, f"config {k}: set {v!r}, HF has {getattr(cfg, k)!r}"
    cfg._attn_implementation = "sdpa"
    return cfg


def build(cfg, device: str, seed: int):
    torch.manual_seed(seed)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.eval()
    model.generation_config = transformers.GenerationConfig(
        bos_token_id=None, eos_token_id=None, pad_token_id=None, do_sample=False
    )
    return model


def write_prompts(path: str, rows: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(vocab, (rows, length), generator=gen)
    with open(path, "w") as f:
        for row in ids.tolist():
            f.write(",".join(map(str, row)) + "\n")
    return ids


def sync(device: str):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_generate(model, ids: torch.Tensor, new_tokens: int, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    out = model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        do_sample=False,
        max_new_tokens=new_tokens,
        min_new_tokens=new_tokens,
        eos_token_id=None,
        pad_token_id=None,
        use_cache=True,
    )
    sync(device)
    elapsed = time.perf_counter() - start
    assert out.shape == (ids.shape[0], ids.shape[1] + new_tokens), (tuple(out.shape), tuple(ids.shape), new_tokens)
    return elapsed


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", required=True, choices=sorted(FAMILIES))
    p.add_argument("--out", required=True, help="checkpoint folder to write (created)")
    p.add_argument("--batch", default="1,16", help="comma-separated batch sizes")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median)")
    p.add_argument("--skip-hf", action="store_true", help="write the checkpoint and prompts, time nothing")
    p.add_argument("--tiny", action="store_true", help="shrink every width (a quick CPU check)")
    p.add_argument("--device", default="cuda")
    args = p.parse_args()
    batches = [int(b) for b in args.batch.split(",")]
    assert args.new_tokens >= 2 and all(b >= 1 for b in batches)

    cfg = make_config(args.family, args.tiny)
    t = time.perf_counter()
    model = build(cfg, args.device, args.seed)
    params = sum(p.numel() for p in model.parameters())
    log(f"{args.family}: {params / 1e9:.2f} B parameters, built in {time.perf_counter() - t:.1f} s")
    os.makedirs(args.out, exist_ok=True)
    t = time.perf_counter()
    model.save_pretrained(args.out, max_shard_size="200GB")
    log(f"saved {args.out} in {time.perf_counter() - t:.1f} s")
    prompts = write_prompts(
        os.path.join(args.out, "prompts.txt"), max(batches), args.prompt_len, cfg.vocab_size, args.seed
    )
    if args.skip_hf:
        return

    extra = dict(transformers=transformers.__version__, attn=model.config._attn_implementation)
    if args.tiny:
        extra["tiny"] = True
    if args.family == "nemotron_v3":
        from transformers.utils.import_utils import is_mamba_2_ssm_available

        extra["mamba_kernels"] = bool(is_mamba_2_ssm_available())
    with torch.inference_mode():
        for b in batches:
            ids = prompts[:b].to(args.device)
            if args.device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            timed_generate(model, ids, args.new_tokens, args.device)  # warm-up
            t1 = statistics.median(timed_generate(model, ids, 1, args.device) for _ in range(args.repeats))
            tn = statistics.median(
                timed_generate(model, ids, args.new_tokens, args.device) for _ in range(args.repeats)
            )
            row = {
                "impl": "hf generate",
                "bench": "decode",
                "family": args.family,
                "batch": b,
                "prompt_len": args.prompt_len,
                "new_tokens": args.new_tokens,
                "decode_tokens_per_s": b * (args.new_tokens - 1) / (tn - t1),
                "first_token_ms": t1 * 1e3,
                "total_ms": tn * 1e3,
            }
            if args.device.startswith("cuda"):
                row["peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            row.update(extra)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
