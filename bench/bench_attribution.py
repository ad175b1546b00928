"""Benchmark: the fast last-token IG against the reference (released) algorithm and a Captum user.

Methods, run in interleaved rounds (every method once per round, `--rounds` rounds, so that all
of them see the same machine load) and reported as min / median time, ratios and peak memory:

- `fast`: `fast_ig` on the first prompt;
- `reference`: `reference_ig`, the released code's algorithm (L × m full-sequence passes);
- `captum`: what a Captum user would write: for each layer, `captum.attr.LayerIntegratedGradients`
  on that layer's FFN down projection (`mlp.down_proj` for Llama), `attribute_to_layer_input=True`,
  `n_steps=m`, `method="riemann_right"`, all m steps in one batch, the target's full-vocabulary
  probability at the last position (`logits_to_keep=1`) as the output. Captum interpolates the whole
  layer input between a baseline run and the input run; the baseline run zeroes the layer's input
  at the last position only (a forward pre-hook driven by a second input, 0 for the baseline, 1 for
  the input), so every earlier position is the clean one on the whole path and the attribution at
  the last position is the paper's IG. Captum's right Riemann sum has α_k = k/m, i.e. our
  `ig_grid: paper`; the output prints their maximum difference. (Captum's default,
  `gausslegendre`, is another quadrature.)
- `fast-loop` / `fast-batched`: the same `--batch` prompts of different lengths (a query's three
  prompts by default), one `fast_ig` per prompt vs one `fast_ig_batch` (shared staircase passes);
  their ratio is the throughput gain of multi-prompt batching.
- `logprob` / `logprob-full`: the log-probability increase of the same `--batch` prompts as one
  query, as the attribution job computes it (`logprob_top_k`: the exact top `--top-k` neurons,
  pruned by bounds that use the model's direction ranges, computed once per model and timed
  apart) and in full for every neuron (`logprob_increase`); the output gives its cost relative
  to the IG of the same prompts (`fast-loop`). Skipped for a model it does not apply to.

The reference and Captum may run on `--ref-layers` evenly spaced layers only (default: all on CPU,
4 on CUDA); their time is then extrapolated linearly to all layers, and the output says so. Ratios
are given as the median of the per-round ratios (same round, same load) and as the ratio of the
median times. Never asserts on time.

Peak memory is measured in one more call per method after the timed rounds: on CPU the largest
increase of the process's resident set size during the call (psutil, sampled every 10 ms in a
thread, after glibc's malloc_trim has handed back the memory freed by earlier calls); on CUDA
torch.cuda.max_memory_allocated during the call minus the memory allocated before it.

Models: by default a random Llama (`--preset cpu-small`: 4 layers, hidden 1024, intermediate
2752, 8 heads, vocabulary 32000, random 128-token prompt; `--preset llama2-7b` on CUDA: the
Llama-2-7B shape in bfloat16 built on the GPU, 200 tokens). `--model PATH` loads a real model
directory (`save_pretrained` layout) with its tokenizer, in `--dtype` (default float32 on CPU);
`--prompt-file FILE` holds the prompts as text, separated by lines `---` (default: a
multiple-choice question written here); prompts are encoded as the workflow does (`--prompt-format`,
`--answer-token`), and the target is the letter `--answer`.

Captum is a benchmark-only dependency, not needed by the package or its tests: `pip install -r
bench/requirements.txt` (pinned; its declared requirements are all satisfied by the project's, so
torch stays at its pinned version). Without it the `captum` method is skipped with a message.

    python bench/bench_attribution.py                         # CPU default
    python bench/bench_attribution.py --model DIR --prompt-file prompts.txt --ref-layers 4
    python bench/bench_attribution.py --device cuda --preset llama2-7b
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from pathlib import Path

import torch

from qrnca.attribution import fast_ig, fast_ig_batch, reference_ig
from qrnca.attribution.logprob import (direction_ranges, logprob_applicability, logprob_increase,
                                       logprob_top_k)
from qrnca.models import layouts

PRESETS = {
    # name: (layers, hidden, intermediate, heads, kv_heads, vocab, tokens, dtype)
    "cpu-small": (4, 1024, 2752, 8, 8, 32000, 128, "float32"),
    "llama2-7b": (32, 4096, 11008, 32, 32, 32000, 200, "bfloat16"),
}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
METHODS = ("fast", "reference", "captum", "fast-loop", "fast-batched", "logprob", "logprob-full")
#: methods timed on all `--batch` prompts at once (their time per prompt is divided by the batch)
BATCHED = ("fast-loop", "fast-batched", "logprob", "logprob-full")
DEFAULT_PROMPT = (
    "You will be asked a multiple-choice question. Respond with the letter which corresponds to "
    "the correct answer, followed by a period. There is no need to provide an explanation, so your "
    "response should be very short.\nNow here is the question:\nThe energy given up by electrons as "
    "they move through the electron transport chain is used to\n A. make glucose\n B. make NADH\n "
    "C. produce ATP\n D. break down glucose\n\nResponse:"
)


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


def _release_free_heap() -> None:
    """Hand memory freed by earlier calls back to the OS (glibc), so that an RSS increase
    measures this call and not what an earlier, larger call left in the heap."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


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

            _release_free_heap()
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


def timed(fn, device: str):
    """(seconds, result) of one call."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - start, result


def peak_memory(fn, device: str) -> int:
    """Peak memory increase (bytes) of one call (`PeakMemory`)."""
    with PeakMemory(device) as mem:
        fn()
    return mem.peak


def captum_ig(model, input_ids: torch.Tensor, target_id: int, *, steps: int, layers,
              method: str = "riemann_right") -> torch.Tensor:
    """Layer IG at the last position by `captum.attr.LayerIntegratedGradients`, as a Captum user
    would compute the paper's quantity (module docstring). Returns (L, n) float32; layers not
    computed are zero."""
    from captum.attr import LayerIntegratedGradients

    downs = layouts.down_projections(model)  # model.model.layers[l].mlp.down_proj for Llama
    width = layouts.grid_shape(model)[1]
    keep = {}

    def forward(ids, keep_last):
        keep["last"] = keep_last  # (batch, 1): 1 = the prompt as it is, 0 = the IG baseline
        logits = model(input_ids=ids, logits_to_keep=1).logits[:, -1]
        return torch.softmax(logits.float(), dim=-1)[:, target_id]

    def zero_last(module, args):
        x = args[0]
        last = x[:, -1:] * keep["last"].to(x.dtype)[:, :, None]
        return (torch.cat([x[:, :-1], last], dim=1), *args[1:])

    device = input_ids.device
    ones, zeros = torch.ones(1, 1, device=device), torch.zeros(1, 1, device=device)
    out = torch.zeros(len(downs), width)
    for layer in layers:
        handle = downs[layer].register_forward_pre_hook(zero_last)  # before Captum's own hooks
        try:
            lig = LayerIntegratedGradients(forward, downs[layer])
            attr = lig.attribute((input_ids, ones), baselines=(input_ids, zeros), n_steps=steps,
                                 method=method, attribute_to_layer_input=True)
        finally:
            handle.remove()
        out[layer] = attr[0, -1].float().cpu()
    return out


def spread(count: int, total: int) -> list[int]:
    """`count` evenly spaced layers of `total` (first and last included)."""
    if count >= total:
        return list(range(total))
    if count == 1:
        return [total // 2]
    return sorted({round(i * (total - 1) / (count - 1)) for i in range(count)})


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


def real_model(args):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qrnca.models.loading import PromptEncoding

    dtype = DTYPES[args.dtype or "float32"]
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(args.device)
    model = model.eval().requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    text = Path(args.prompt_file).read_text("utf-8") if args.prompt_file else DEFAULT_PROMPT
    prompts = [p.strip("\n") for p in text.split("\n---\n") if p.strip()]
    encoding = PromptEncoding(answer_token=args.answer_token, prompt_format=args.prompt_format)
    target = encoding.letters(tokenizer)[args.answer]
    ids = [encoding.ids(tokenizer, p) for p in prompts]
    name = f"{args.model} ({type(model).__name__}, {sum(p.numel() for p in model.parameters()):,} parameters)"
    return model, ids, target, name, dtype


def synthetic(args):
    cuda = args.device.startswith("cuda")
    preset = args.preset or ("llama2-7b" if cuda else "cpu-small")
    layers, hidden, inter, heads, kv, vocab, tokens, dtype_name = PRESETS[preset]
    dtype = DTYPES[args.dtype or dtype_name]
    tokens = args.tokens or tokens
    model = build(preset, args.device, dtype, args.kv_heads)
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, vocab, (1, tokens), generator=gen)
    ids[0, 0] = 1
    name = (f"random Llama preset {preset}: {layers} layers, hidden {hidden}, intermediate {inter}, "
            f"heads {heads}/kv {args.kv_heads or kv}, vocab {vocab}")
    return model, [ids], 29909, name, dtype  # any id; "A" in the Llama-2 vocabulary


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="a model directory (save_pretrained layout)")
    parser.add_argument("--prompt-file", default=None, help="with --model: prompts separated by '---' lines")
    parser.add_argument("--prompt-format", default="raw", choices=["raw", "chat"])
    parser.add_argument("--answer-token", default="bare", choices=["bare", "leading_space"])
    parser.add_argument("--answer", default="A", help="the target letter (with --model)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default=None,
                        help="random model shape (default: cpu-small on CPU, llama2-7b on CUDA)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default=None)
    parser.add_argument("--tokens", type=int, default=None, help="random prompt length incl. BOS")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--grid", default="paper", choices=["paper", "released"],
                        help="IG grid of fast, reference and the batched runs (Captum: riemann_right = paper)")
    parser.add_argument("--kv-heads", type=int, default=None, help="grouped-query attention")
    parser.add_argument("--ref-layers", type=int, default=None,
                        help="layers reference and Captum compute, evenly spaced (time extrapolated to all)")
    parser.add_argument("--max-rows", type=int, default=None, help="fast: rows per pass")
    parser.add_argument("--batch", type=int, default=3, help="prompts of fast-loop / fast-batched")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--top-k", type=int, default=256,
                        help="logprob: the neurons kept per query (the config's baseline_top_k)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(methods) - set(METHODS)
    if unknown:
        parser.error(f"unknown methods {sorted(unknown)}")
    if "captum" in methods:
        try:
            import captum  # noqa: F401
        except ImportError:
            print("captum is not installed (pip install -r bench/requirements.txt): skipping it")
            methods.remove("captum")

    t0 = time.perf_counter()
    model, ids, target, name, dtype = real_model(args) if args.model else synthetic(args)
    ids = [i.to(args.device) for i in ids]
    n_layers = layouts.grid_shape(model)[0]
    # the batch: the given prompts, then the first one cut shorter (7 tokens less each time)
    batch = list(ids[: args.batch])
    while len(batch) < args.batch:
        cut = ids[0].shape[1] - 7 * len(batch)
        batch.append(ids[0][:, : max(cut, 2)])
    first = batch[0]
    ref_layers = spread(args.ref_layers or (min(4, n_layers) if cuda else n_layers), n_layers)
    print(f"model: {name}, {dtype}, on {args.device} (loaded in {time.perf_counter() - t0:.1f} s); "
          f"torch {torch.__version__}, threads {torch.get_num_threads()}")
    print(f"prompts: {[b.shape[1] for b in batch]} tokens (the first for fast / reference / "
          f"Captum), target id {target}, m = {args.steps}, grid {args.grid}; reference and Captum "
          f"on layers {ref_layers} of {n_layers}")

    steps, grid = args.steps, args.grid
    calls = {
        "fast": lambda: fast_ig(model, first, target, steps=steps, ig_grid=grid, max_rows=args.max_rows),
        "reference": lambda: reference_ig(model, first, target, steps=steps, ig_grid=grid,
                                          layers=ref_layers),
        "captum": lambda: captum_ig(model, first, target, steps=steps, layers=ref_layers),
        "fast-loop": lambda: [fast_ig(model, b, target, steps=steps, ig_grid=grid,
                                      max_rows=args.max_rows) for b in batch],
        "fast-batched": lambda: fast_ig_batch(model, batch, [target] * len(batch), steps=steps,
                                              ig_grid=grid, max_rows=args.max_rows),
    }
    # the log-probability increase of the batch's prompts as one query, as the attribution job
    # computes it (top k, with the model's direction ranges computed once per job), and in full
    if any(m.startswith("logprob") for m in methods):
        reason = logprob_applicability(model)
        if reason:
            print(f"logprob: not applicable to this model ({reason}): skipped")
            methods = [m for m in methods if not m.startswith("logprob")]
        else:
            states = [r.state for r in fast_ig_batch(model, batch, [target] * len(batch),
                                                     steps=steps, ig_grid=grid)]
            t_ranges, ranges = timed(lambda: direction_ranges(model), args.device)
            print(f"direction ranges (once per model): {t_ranges:.2f} s")
            calls["logprob"] = lambda: logprob_top_k(model, [states], [[target] * len(states)],
                                                     args.top_k, ranges)
            calls["logprob-full"] = lambda: logprob_increase(model, states, [target] * len(states))
    # warm-up (kernels, allocator, lazy init) on a short prompt
    short = first[:, :8]
    fast_ig(model, short, target, steps=2)
    fast_ig_batch(model, [short, short[:, :5]], [target] * 2, steps=2)
    reference_ig(model, short, target, steps=2, layers=[0])
    if "captum" in methods:
        captum_ig(model, short, target, steps=2, layers=[0])

    times = {m: [] for m in methods}
    results = {}
    for r in range(args.rounds):
        order = list(methods)
        if r % 2 and "fast-loop" in order and "fast-batched" in order:  # alternate who goes first
            i, j = order.index("fast-loop"), order.index("fast-batched")
            order[i], order[j] = order[j], order[i]
        line = []
        for m in order:
            seconds, results[m] = timed(calls[m], args.device)
            times[m].append(seconds)
            line.append(f"{m} {seconds:.3f}")
        print(f"round {r + 1}: " + ", ".join(line) + " s", flush=True)

    # memory in one more call per method, apart from the timed rounds (sampling and handing
    # freed memory back to the OS would cost time)
    peaks = {m: peak_memory(calls[m], args.device) for m in methods}
    partial = len(ref_layers) < n_layers
    scale = {m: (n_layers / len(ref_layers) if m in ("reference", "captum") and partial else 1.0)
             for m in methods}
    per_prompt = {m: (len(batch) if m in BATCHED else 1) for m in methods}
    mem_kind = ("torch.cuda.max_memory_allocated increase" if cuda
                else "peak RSS increase, psutil sampled every 10 ms")
    note = f"; reference and Captum EXTRAPOLATED from {len(ref_layers)} layers" if partial else ""
    print(f"\nseconds per prompt (all {n_layers} layers{note}), over {args.rounds} interleaved "
          "rounds:")
    for m in methods:
        ts = [t * scale[m] / per_prompt[m] for t in times[m]]
        print(f"  {m:13s} min {min(ts):9.3f}  median {statistics.median(ts):9.3f}   "
              f"peak memory {peaks[m] / 2**20:8.1f} MiB")
    print(f"  (peak memory: of one more call after the rounds, so fast-loop / fast-batched cover all "
          f"{len(batch)} prompts; {mem_kind})")

    def ratio(a, b):
        if a not in times or b not in times:
            return
        rounds = [(ta * scale[a] / per_prompt[a]) / (tb * scale[b] / per_prompt[b])
                  for ta, tb in zip(times[a], times[b])]
        medians = (statistics.median(times[a]) * scale[a] / per_prompt[a]) / \
                  (statistics.median(times[b]) * scale[b] / per_prompt[b])
        print(f"  {a} / {b}: {statistics.median(rounds):7.1f} x (median of per-round ratios; "
              f"range {min(rounds):.1f}-{max(rounds):.1f}; ratio of medians {medians:.1f})")

    print("ratios (time per prompt, larger = the second is faster):")
    ratio("reference", "fast")
    ratio("captum", "fast")
    ratio("fast-loop", "fast-batched")  # the same prompts: the gain of sharing passes
    ratio("logprob-full", "logprob")  # the gain of the bounds
    if "logprob" in times and "fast-loop" in times:
        share = [a / b for a, b in zip(times["logprob"], times["fast-loop"])]
        print(f"  log-probability increase / IG of the same {len(batch)} prompts (one query): "
              f"{statistics.median(share):.2f} x (median of per-round ratios; range "
              f"{min(share):.2f}-{max(share):.2f}; target <= 1)")

    print("agreement:")
    fast = fast_ig(model, first, target, steps=steps, ig_grid=grid)
    if "reference" in results:
        ref = results["reference"].ig[ref_layers]
        print(f"  max |fast - reference| / max |reference| over layers {ref_layers}: "
              f"{relative(fast.ig[ref_layers], ref):.2e}; p0 fast {fast.p0:.6g}, reference "
              f"{results['reference'].p0:.6g}")
    if "captum" in results:
        paper = fast if grid == "paper" else fast_ig(model, first, target, steps=steps, ig_grid="paper")
        released = fast_ig(model, first, target, steps=steps, ig_grid="released")
        cap = results["captum"][ref_layers]
        print(f"  Captum riemann_right vs fast ig_grid paper: max |diff| / max |fast| = "
              f"{relative(cap, paper.ig[ref_layers]):.2e} (vs ig_grid released: "
              f"{relative(cap, released.ig[ref_layers]):.2e})")
        if "reference" in results and grid == "paper":
            print(f"  Captum riemann_right vs reference (paper grid): max |diff| / max |reference| = "
                  f"{relative(cap, results['reference'].ig[ref_layers]):.2e}")
    if "fast-loop" in results and "fast-batched" in results:
        worst = max(relative(b.ig, s.ig) for b, s in zip(results["fast-batched"], results["fast-loop"]))
        print(f"  fast-batched vs fast-loop: max over prompts of max |diff| / max |loop| = {worst:.2e}")


if __name__ == "__main__":
    main()
