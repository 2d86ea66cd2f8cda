"""Times HF transformers' forward + backward of a model built from an HF config (random weights)
on one GPU, with the same protocol as kiln-bench-model-step: median of N steps (CUDA events) after
two warm-up steps, loss = HF's causal LM loss. HF defaults: sdpa attention, grouped_mm experts.

  python3 tools/bench/hf_model_step.py CONFIG.json [--seq 4096] [--batch 1] [--steps 10]
"""
import argparse
import json

import torch
import transformers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    config = transformers.AutoConfig.for_model(**json.load(open(args.config)))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.train()
    ids = torch.randint(config.vocab_size, (args.batch, args.seq), device="cuda")

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        model.zero_grad(set_to_none=True)
        return out.loss.item()

    for _ in range(2):
        step()
    torch.cuda.reset_peak_memory_stats()
    times = []
    loss = 0.0
    for _ in range(args.steps):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        loss = step()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({
        "impl": "hf", "transformers": transformers.__version__, "config": args.config,
        "seq": args.seq, "batch": args.batch, "median_ms": median, "min_ms": times[0],
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": loss,
        "attn": config._attn_implementation, "tokens_per_s": args.batch * args.seq / (median / 1000),
    }))


if __name__ == "__main__":
    main()
