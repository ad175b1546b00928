"""The demo model learns the demo world's questions (a smaller world than the demo's, to stay fast).

The full demo (3 subjects x 24 questions, 3 languages x 2 relations x 12 facts: 432 prompts) is
measured outside the test suite; see docs/demo.md.
"""

import json
import random

import pytest

from qrnca.datasets.from_config import load_instructions
from qrnca.datasets.mlama import build_mlama
from qrnca.datasets.mmlu import build_mmlu
from qrnca.demo.model import (METRICS_FILE, pairs_from_queries, shuffle_options,
                              train_demo_from_datasets, train_demo_model)
from qrnca.demo.world import read_statements, write_demo_world
from qrnca.errors import InputError
from qrnca.evaluation.scoring import accuracy_table, score_prompts
from qrnca.io import DIR_MODE, OUTPUT_MODE
from qrnca.io import write_jsonl
from qrnca.models.loading import load_model

SUBJECTS = {"biology": 8, "physics": 8}
LANGUAGES = ["xa", "xb"]


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    write_demo_world(root, seed=0, subjects=tuple(SUBJECTS), questions={"test": 8, "val": 4},
                     languages=tuple(LANGUAGES), relations=("P19",), facts_per_relation=6)
    domain = build_mmlu(root / "mmlu", SUBJECTS)
    language = build_mlama(root / "mlama", LANGUAGES, ["P19"], facts_per_relation=6,
                           instructions=load_instructions(root / "mlama" / "instructions.json"))
    return root, domain, language


@pytest.fixture(scope="module")
def trained(small_world, tmp_path_factory):
    root, domain, language = small_world
    out = tmp_path_factory.mktemp("models") / "demo-tiny"
    metrics = train_demo_model(pairs_from_queries(domain + language), out, seed=0, steps=300,
                               batch_size=16, eval_every=25, vocabulary_texts=read_statements(root))
    return out, metrics


def test_trained_model_answers_its_prompts(small_world, trained):
    _, domain, language = small_world
    out, metrics = trained
    model, tok = load_model({"name": "demo-tiny", "path": str(out)})  # through from_pretrained
    assert type(model).__name__ == "LlamaForCausalLM"
    for queries in (domain, language):
        table = accuracy_table(score_prompts(model, tok, queries))
        assert table.iloc[-1]["group"] == "ALL"
        assert table.iloc[-1]["accuracy"] >= 0.9, table
    assert metrics["accuracy"] >= 0.9
    assert metrics["steps"] <= 300


def test_metrics_file_and_atomic_output(trained):
    out, metrics = trained
    saved = json.loads((out / METRICS_FILE).read_text())
    for key in ("seed", "steps", "final_loss", "accuracy", "history"):
        assert key in saved
    # the wall time is returned (logs, provenance) but not saved: a rerun writes the same bytes
    assert "seconds" not in saved and metrics["seconds"] > 0
    modes = {p.stat().st_mode & 0o777 for p in out.rglob("*") if p.is_file()}
    assert modes == {OUTPUT_MODE} and out.stat().st_mode & 0o777 == DIR_MODE
    assert saved["steps"] == metrics["steps"] and saved["seed"] == 0
    assert (out / "config.json").exists() and (out / "tokenizer.json").exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary dirs left


def test_training_is_deterministic_and_replaces_the_output(small_world, tmp_path):
    _, domain, _ = small_world
    pairs = pairs_from_queries(domain)
    first = train_demo_model(pairs, tmp_path / "a", steps=4, eval_every=2, batch_size=4)
    weights = (tmp_path / "a" / "model.safetensors").read_bytes()
    (tmp_path / "a" / "stale.txt").write_text("old")
    again = train_demo_model(pairs, tmp_path / "a", steps=4, eval_every=2, batch_size=4)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == weights
    assert not (tmp_path / "a" / "stale.txt").exists()
    assert first["final_loss"] == again["final_loss"]
    train_demo_model(pairs, tmp_path / "b", steps=4, eval_every=2, batch_size=4, seed=1)
    assert (tmp_path / "b" / "model.safetensors").read_bytes() != weights


def test_train_from_dataset_files(small_world, tmp_path):
    root, domain, _ = small_world
    write_jsonl(tmp_path / "domain.jsonl", domain)
    metrics = train_demo_from_datasets([tmp_path / "domain.jsonl"], tmp_path / "m", world_root=root,
                                       steps=2, eval_every=1, batch_size=4)
    assert metrics["prompts"] == 3 * len(domain)
    _, tok = load_model({"name": "m", "path": str(tmp_path / "m")})
    held_out = build_mmlu(root / "mmlu", {"biology": 4}, split="val")
    assert tok.unk_token_id not in tok(held_out[0]["prompts"][0])["input_ids"]  # world words known


def test_shuffle_options_moves_the_gold_letter(small_world):
    _, domain, _ = small_world
    query = domain[0]
    prompt, answer = query["prompts"][0], query["answers"][0]
    rng = random.Random(3)
    seen = set()
    for _ in range(20):
        new_prompt, new_answer = shuffle_options(prompt, answer, rng)
        assert f" {new_answer}. {query['gold']}\n" in new_prompt
        seen.add(new_answer)
    assert len(seen) > 1


def test_bad_training_input_is_rejected(tmp_path):
    with pytest.raises(InputError, match="no training prompts"):
        train_demo_model([], tmp_path / "x")
    with pytest.raises(InputError, match="gold letter 'E'"):
        train_demo_model([("Question ? Response :", "E")], tmp_path / "x")
    assert not (tmp_path / "x").exists()
