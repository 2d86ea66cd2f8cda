"""Training throughput of HF transformers with a plain PyTorch loop, the reference for `kiln run`:
the model from an HF config (random weights) in bf16 on one GPU, random tokens, HF's causal-LM
loss, backward, clip_grad_norm_(1.0), torch.optim.AdamW(fused=True) on the bf16 parameters (no
fp32 masters: the usual plain loop), zero_grad. Median step time over N steps after 2 warm-ups.

  python3 tools/bench/hf_train_step.py CONFIG.json [--seq 4096] [--steps 10]
"""
import argparse
import json
import time

import torch
import transformers


def main():
    p = argparse.ArgumentParser()
    p.add_argument("config")
    p.add_argument("--seq", type=int, default=4096)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    config = transformers.AutoConfig.for_model(**json.load(open(args.config)))
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=True)

    def step():
        ids = torch.randint(config.vocab_size, (1, args.seq), device="cuda")
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(2):
        step()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(args.steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        step()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({
        "impl": "hf+torch loop", "bench": "train_step", "transformers": transformers.__version__,
        "config": args.config, "seq": args.seq, "median_ms": median * 1e3,
        "tokens_per_s": args.seq / median,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30,
    }))


if __name__ == "__main__":
    main()
