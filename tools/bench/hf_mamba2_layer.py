"""Times HF transformers' NemotronHMamba2Mixer forward + backward on one GPU (random weights), with
the same protocol and shape as kiln-bench-mamba2-layer: median of N steps (CUDA events) after two
warm-up steps, bf16, training mode without a cache. Without the `kernels` package (the GPU machine
has none) HF falls back to its torch path: causal conv via F.conv1d and the chunked SSD scan in
plain PyTorch. An out-of-memory run prints {"error": "out of memory", ...} instead of timings.

  python3 tools/bench/hf_mamba2_layer.py [--seq 8192] [--batch 1] [--steps 10]
"""
import argparse
import json

import torch
import transformers
from transformers import NemotronHConfig
from transformers.models.nemotron_h.modeling_nemotron_h import NemotronHMamba2Mixer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--seq", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    config = NemotronHConfig(
        hidden_size=2688, mamba_num_heads=64, mamba_head_dim=64, ssm_state_size=128, n_groups=8,
        conv_kernel=4, chunk_size=128, layers_block_type=["linear_attention"], use_conv_bias=True,
        use_bias=False, layer_norm_epsilon=1e-5,
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        mixer = NemotronHMamba2Mixer(config, layer_idx=0).to(torch.bfloat16)
        x = torch.randn(args.batch, args.seq, config.hidden_size, dtype=torch.bfloat16, requires_grad=True)
        dy = torch.randn(args.batch, args.seq, config.hidden_size, dtype=torch.bfloat16)
    mixer.train()

    def step():
        mixer(x).backward(dy)
        mixer.zero_grad(set_to_none=True)
        x.grad = None

    result = {"impl": "hf", "bench": "mamba2_layer", "transformers": transformers.__version__,
              "path": "torch_forward (no mamba_ssm / causal_conv1d / kernels)", "seq": args.seq,
              "batch": args.batch, "dtype": "bfloat16"}
    try:
        for _ in range(2):
            step()
        torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(args.steps):
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            stop.record()
            stop.synchronize()
            times.append(start.elapsed_time(stop))
    except torch.OutOfMemoryError as e:
        result.update(error="out of memory", detail=str(e).splitlines()[0],
                      total_gib=torch.cuda.get_device_properties(0).total_memory / 2**30)
        print(json.dumps(result))
        return
    times.sort()
    median = times[len(times) // 2]
    result.update(median_ms=median, min_ms=times[0], peak_gib=torch.cuda.max_memory_allocated() / 2**30,
                  tokens_per_s=args.batch * args.seq / (median / 1000))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
