"""Benchmark: fast last-token IG vs the reference (released) algorithm on the same prompt.

Prints the time per prompt of both methods, their ratio, the maximum difference of the scores
relative to the largest reference score, and peak memory. Never asserts on time.

CPU default: a random Llama with 4 layers, hidden 1024, intermediate 2752, 8 heads, vocabulary
32000, a 128-token prompt, m = 16, all layers for both methods. Peak memory on CPU is the largest
increase of the process's resident set size (psutil, sampled every 10 ms in a thread) during the
call; on CUDA it is torch.cuda.max_memory_allocated during the call minus the memory allocated
before it.

GPU: `--device cuda --preset llama2-7b` builds a Llama-2-7B-shaped model (32 layers, 4096, 11008,
32 heads, vocabulary 32000) with random weights directly on the GPU in bfloat16 (cost does not
depend on the values), a 200-token prompt, m = 16, all 32 layers for the fast method; the
reference runs `--ref-layers` layers (default 4 on CUDA) and its time is extrapolated linearly to
all layers (the output says so).

    python bench/bench_attribution.py                       # CPU default
    python bench/bench_attribution.py --device cuda --preset llama2-7b
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import torch

from qrnca.attribution import fast_ig, reference_ig

PRESETS = {
    # name: (layers, hidden, intermediate, heads, kv_heads, vocab, tokens, dtype)
    "cpu-small": (4, 1024, 2752, 8, 8, 32000, 128, "float32"),
    "llama2-7b": (32, 4096, 11008, 32, 32, 32000, 200, "bfloat16"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def build(preset: str, device: str, dtype: torch.dtype, kv_heads: int | None):
    import transformers

    layers, hidden, inter, heads, kv, vocab, _, _ = PRESETS[preset]
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads or kv,
        max_position_embeddings=4096, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device(device):
        model = transformers.AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval().requires_grad_(False)


class PeakMemory:
    """Peak memory increase during a block: CUDA allocator peak, or sampled RSS on CPU."""

    def __init__(self, device: str):
        self.device = device
        self.peak = 0

    def __enter__(self):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            import psutil

            self.proc = psutil.Process()
            self.base = self.proc.memory_info().rss
            self.stop = threading.Event()
            self.max_rss = self.base

            def sample():
                while not self.stop.is_set():
                    self.max_rss = max(self.max_rss, self.proc.memory_info().rss)
                    time.sleep(0.01)

            self.thread = threading.Thread(target=sample, daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated() - self.base
        else:
            self.stop.set()
            self.thread.join()
            self.max_rss = max(self.max_rss, self.proc.memory_info().rss)
            self.peak = self.max_rss - self.base
        return False


def timed(fn, device: str, repeats: int):
    times, peaks, result = [], [], None
    for _ in range(repeats):
        with PeakMemory(device) as mem:
            start = time.perf_counter()
            result = fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        peaks.append(mem.peak)
    return statistics.median(times), max(peaks), result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="model shape (default: cpu-small on CPU, llama2-7b on CUDA)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    parser.add_argument("--tokens", type=int, default=None, help="prompt length incl. BOS")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--kv-heads", type=int, default=None, help="grouped-query attention")
    parser.add_argument("--ref-layers", type=int, default=None,
                        help="layers the reference computes (time extrapolated to all)")
    parser.add_argument("--max-rows", type=int, default=None, help="fast: rows per backward")
    parser.add_argument("--repeats", type=int, default=3, help="fast method repeats (median)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    preset = args.preset or ("llama2-7b" if cuda else "cpu-small")
    layers, hidden, inter, heads, kv, vocab, tokens, dtype_name = PRESETS[preset]
    dtype = DTYPES[args.dtype or dtype_name]
    tokens = args.tokens or tokens
    ref_layers = args.ref_layers or (min(4, layers) if cuda else layers)
    ref_layers = min(ref_layers, layers)

    t0 = time.perf_counter()
    model = build(preset, args.device, dtype, args.kv_heads)
    print(f"model: random Llama preset {preset}: {layers} layers, hidden {hidden}, intermediate "
          f"{inter}, heads {heads}/kv {args.kv_heads or kv}, vocab {vocab}, {dtype}, on {args.device} "
          f"(built in {time.perf_counter() - t0:.1f} s); torch threads {torch.get_num_threads()}")
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (1, tokens), generator=gen)
    ids[0, 0] = 1
    ids = ids.to(args.device)
    target = 29909  # any id; "A" in the Llama-2 vocabulary
    print(f"prompt: {tokens} tokens, m = {args.steps}, grid released, target id {target}")

    # warm-up (kernels, allocator, lazy init) on a short prompt
    fast_ig(model, ids[:, :8], target, steps=2)
    reference_ig(model, ids[:, :8], target, steps=2, layers=[0])

    fast_t, fast_mem, fast = timed(
        lambda: fast_ig(model, ids, target, steps=args.steps, max_rows=args.max_rows),
        args.device, args.repeats)
    ref_t, ref_mem, ref = timed(
        lambda: reference_ig(model, ids, target, steps=args.steps, layers=range(ref_layers)),
        args.device, 1)
    ref_full = ref_t * layers / ref_layers
    diff = (fast.ig[:ref_layers] - ref.ig[:ref_layers]).abs().max() / ref.ig[:ref_layers].abs().max()
    mem_kind = ("torch.cuda.max_memory_allocated increase" if cuda
                else "peak RSS increase, psutil sampled every 10 ms")

    print(f"fast      : {fast_t:8.3f} s per prompt (all {layers} layers, median of {args.repeats}), "
          f"peak memory {fast_mem / 2**20:8.1f} MiB")
    if ref_layers == layers:
        print(f"reference : {ref_t:8.3f} s per prompt (all {layers} layers), "
              f"peak memory {ref_mem / 2**20:8.1f} MiB")
    else:
        print(f"reference : {ref_full:8.3f} s per prompt EXTRAPOLATED from {ref_t:.3f} s for "
              f"{ref_layers} of {layers} layers, peak memory {ref_mem / 2**20:8.1f} MiB")
    print(f"speed-up  : {ref_full / fast_t:8.1f} x (reference / fast)")
    print(f"max |fast - reference| / max |reference| over the {ref_layers} compared layers: {float(diff):.2e}")
    print(f"p0: fast {fast.p0:.6g}, reference {ref.p0:.6g}; memory = {mem_kind}")


if __name__ == "__main__":
    main()
