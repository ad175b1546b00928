"""Precision study: how much the attribution's floating-point precision changes what QRNCA finds.

For one model and a slice of the real domain dataset (MMLU), the fast IG of every prompt is
computed in each precision and compared with a float64 run of the same code:

- per prompt: the Jaccard index of the coarse neuron set (IG > t × max, t = 0.2) and the maximum
  absolute difference of the IG scores relative to the largest float64 score;
- per query: the Jaccard index of the final QR-neuron set (QRNCA over all queries of the slice);
- the PCR (boost / suppress) of each precision's QR neurons, all evaluated by the same float32
  model, so a PCR change is due to the neurons chosen and nothing else.

Precisions: float64 (the reference), float32, bfloat16, float16 (the IG, attention and vocabulary
softmaxes are float32 in every precision: "float16 with float32 softmax"), and tf32 (float32
weights with TF32 matrix products; CUDA only, skipped elsewhere). Never asserts anything; prints a
Markdown table and writes it (and a CSV) when --out is given.

    python bench/precision_study.py --model resources/models/smollm2-135m-instruct \\
        --prompt-format chat --answer-token bare --mmlu ../data/mmlu --per-subject 2
    python bench/precision_study.py --tiny llama --mmlu ../data/mmlu --per-subject 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import pandas as pd
import torch

from qrnca.attribution import fast_ig
from qrnca.attribution.job import sparse_prompt_record
from qrnca.datasets import PAPER_SUBJECTS, build_from_spec
from qrnca.evaluation import runner as ev
from qrnca.models.layouts import grid_shape
from qrnca.models.loading import DTYPES, PromptEncoding, load_model
from qrnca.neurons.selection import run_qrnca
from qrnca.outputs import evaluation_tables as et

PRECISIONS = ("float64", "float32", "tf32", "bfloat16", "float16")
THRESHOLD = 0.2


def jaccard(a: set, b: set) -> float:
    return len(a & b) / len(a | b) if a | b else 1.0


def coarse(ig: torch.Tensor, t: float = THRESHOLD) -> set:
    return set(map(tuple, (ig > t * ig.max()).nonzero().tolist())) if ig.max() > 0 else set()


def tiny_model(arch: str, corpus: list[str], directory: Path):
    """A tiny random model of `arch` with a tokenizer trained on the prompts (for a quick study)."""
    from qrnca.models.tiny import save_tiny

    save_tiny(directory, arch, corpus, layers=4, hidden=64, intermediate=128, heads=4, kv_heads=2)
    return {"name": f"tiny-{arch}", "path": str(directory)}


def attribute(spec, dtype: str, queries, encoding: PromptEncoding, steps: int, device: str):
    """Dense IG (float32 CPU) and p0 of every prompt, in one precision; seconds per prompt."""
    tf32 = dtype == "tf32"
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.backends.cudnn.allow_tf32 = tf32
    model, tok = load_model(spec, device=device, dtype="float32" if tf32 else dtype)
    letters = encoding.letters(tok)
    out, started, prompts = [], time.perf_counter(), 0
    for query in queries:
        per_prompt = []
        for prompt, letter in zip(query["prompts"], query["answers"]):
            ids = encoding.ids(tok, prompt).to(device)
            result = fast_ig(model, ids, letters[letter], steps=steps)
            per_prompt.append((result.ig, result.p0))
            prompts += 1
        out.append(per_prompt)
    return out, (time.perf_counter() - started) / max(prompts, 1), grid_shape(model)


def records_of(queries, attributions, shape) -> list[dict]:
    return [{"id": q["id"], "group": q["group"], "shape": list(shape),
             "prompts": [sparse_prompt_record(ig, p0, 0.05) for ig, p0 in per_prompt]}
            for q, per_prompt in zip(queries, attributions)]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a save_pretrained model directory")
    which.add_argument("--tiny", choices=["llama", "gemma3", "mistral", "gpt2"])
    parser.add_argument("--mmlu", required=True, help="raw MMLU folder (test split)")
    parser.add_argument("--per-subject", type=int, default=2)
    parser.add_argument("--prompt-format", default="raw")
    parser.add_argument("--answer-token", default="bare")
    parser.add_argument("--precisions", default=",".join(PRECISIONS))
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", help="write the table here (.md) and beside it as .csv")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    queries = build_from_spec({"name": "domain", "source": "mmlu", "groups": dict(PAPER_SUBJECTS),
                               "limit": args.per_subject, "verify_checksums": False}, args.mmlu)
    encoding = PromptEncoding(args.answer_token, args.prompt_format)
    if args.tiny:
        import tempfile

        corpus = [p for q in queries for p in q["prompts"]]
        spec = tiny_model(args.tiny, corpus, Path(tempfile.mkdtemp()) / args.tiny)
    else:
        spec = {"name": Path(args.model).name, "path": args.model}
    precisions = [p for p in args.precisions.split(",") if p]
    if "tf32" in precisions and not args.device.startswith("cuda"):
        print("tf32: CUDA only, skipped on", args.device)
        precisions.remove("tf32")
    unknown = [p for p in precisions if p != "tf32" and p not in DTYPES]
    if unknown or "float64" not in precisions:
        raise SystemExit(f"precisions must include float64 and be among {PRECISIONS}: {unknown}")

    runs, seconds = {}, {}
    for precision in precisions:
        runs[precision], seconds[precision], shape = attribute(
            spec, precision, queries, encoding, args.steps, args.device)
        print(f"{precision}: {seconds[precision]:.2f} s per prompt")
    selected = {p: run_qrnca(records_of(queries, runs[p], shape)).rows("qrnca") for p in precisions}

    # PCR of each precision's QR neurons, every one evaluated by the same float32 model
    model, tok = load_model(spec, device=args.device, dtype="float32")
    settings = ev.EvaluationSettings()
    neurons = {p: ev.neuron_sets(selected[p], queries) for p in precisions}
    evaluated = ev.evaluate(model, tok, queries, neurons, settings, encoding, progress=False)
    pcr = {p: et.pcr_summary(evaluated.records[p]).set_index("op")["pcr"] for p in precisions}

    reference = runs["float64"]
    rows = []
    for precision in precisions:
        prompt_jaccard, rel_diff = [], []
        for ref_q, got_q in zip(reference, runs[precision]):
            for (ref_ig, _), (ig, _) in zip(ref_q, got_q):
                prompt_jaccard.append(jaccard(coarse(ref_ig), coarse(ig)))
                rel_diff.append(float((ig - ref_ig).abs().max() / ref_ig.abs().max()))
        query_jaccard = [jaccard(set(map(tuple, a["neurons"])), set(map(tuple, b["neurons"])))
                         for a, b in zip(selected["float64"], selected[precision])]
        rows.append({
            "model": spec["name"], "precision": precision, "queries": len(queries),
            "prompts": len(prompt_jaccard),
            "coarse_jaccard_mean": statistics.fmean(prompt_jaccard),
            "coarse_jaccard_min": min(prompt_jaccard),
            "prompts_coarse_identical": sum(j == 1.0 for j in prompt_jaccard),
            "max_rel_diff_median": statistics.median(rel_diff), "max_rel_diff_max": max(rel_diff),
            "qr_jaccard_mean": statistics.fmean(query_jaccard), "qr_jaccard_min": min(query_jaccard),
            "pcr_boost": pcr[precision]["boost"], "pcr_suppress": pcr[precision]["suppress"],
            "pcr_boost_change": pcr[precision]["boost"] - pcr["float64"]["boost"],
            "pcr_suppress_change": pcr[precision]["suppress"] - pcr["float64"]["suppress"],
            "seconds_per_prompt": seconds[precision],
        })
    table = pd.DataFrame(rows)
    markdown = table.to_markdown(index=False, floatfmt=".3g")
    print(markdown)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(markdown + "\n", encoding="utf-8")
        table.to_csv(out.with_suffix(".csv"), index=False)


if __name__ == "__main__":
    main()
