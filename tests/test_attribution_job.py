"""The per-shard attribution job: record format, resumability, errors."""

import json
import logging
from pathlib import Path

import pytest
import torch

from qrnca.attribution import attribute_dataset, fast_ig, shard_queries
from qrnca.attribution import job as job_module
from qrnca.consistency import query_sha256
from qrnca.errors import AttributionError, InputError
from qrnca.models.loading import PromptEncoding, letter_token_ids
from qrnca.models.tiny import build_model, train_word_tokenizer


WORDS = "what is the capital of france spain italy paris rome madrid berlin answer respond letter"


def _queries(n=4):
    out = []
    for q in range(n):
        prompts, answers, options = [], [], []
        for t in range(3):
            letter = "ABCD"[(q + t) % 4]
            prompts.append(f"respond with the letter . what is the capital of "
                           f"{['france', 'spain', 'italy', 'france'][q]} ? A . paris B . rome "
                           f"C . madrid D . berlin {'answer :' if t else 'letter :'}")
            answers.append(letter)
            options.append(["paris", "rome", "madrid", "berlin"])
        out.append({"id": f"q{q}", "group": ["geo", "geo", "hist", "hist"][q], "relation": None,
                    "fact": str(q), "prompts": prompts, "answers": answers, "options": options,
                    "gold": "paris", "source": {"kind": "test", "file": "x", "row": q}})
    return out


@pytest.fixture(scope="module")
def setup():
    tok = train_word_tokenizer([WORDS + " A B C D . ? :"])
    model = build_model("llama", vocab_size=len(tok), layers=2, hidden=32, intermediate=48,
                        heads=4, kv_heads=2)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, 0.3)
    return model, tok


def _run(setup, path, queries=None, **kw):
    model, tok = setup
    kw.setdefault("steps", 4)
    kw.setdefault("progress", False)
    return attribute_dataset(model, tok, queries or _queries(), path, **kw)


def test_record_format_and_values(setup, tmp_path):
    model, tok = setup
    out = _run(setup, tmp_path / "shard0of1.jsonl", baseline_top_k=10, store_fraction=0.05)
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["q0", "q1", "q2", "q3"]
    first = records[0]
    assert list(first) == ["id", "group", "shape", "prompts", "activation", "logprob_increase",
                           "query_sha256"]
    assert first["query_sha256"] == query_sha256(_queries()[0])
    assert first["shape"] == [2, 48] and first["group"] == "geo" and len(first["prompts"]) == 3
    # the stored neurons are exactly those >= 5% of the max, ranked, with the fast IG's values
    letters = letter_token_ids(tok, "bare")
    ids = PromptEncoding().ids(tok, _queries()[0]["prompts"][1])
    ig = fast_ig(model, ids, letters[_queries()[0]["answers"][1]], steps=4).ig
    rec = first["prompts"][1]
    assert rec["n_neurons"] == 96 and rec["ig_max"] == pytest.approx(float(ig.max()), rel=1e-6)
    expected = {(l, i) for l, i in (ig >= 0.05 * ig.max()).nonzero().tolist()}
    assert {tuple(n) for n in rec["neurons"]} == expected
    assert rec["ig"] == sorted(rec["ig"], reverse=True)
    for (l, i), score in zip(rec["neurons"], rec["ig"]):
        assert score == pytest.approx(float(ig[l, i]), rel=1e-6)
    assert 0 < rec["p0"] < 1
    for key in ("activation", "logprob_increase"):
        assert len(first[key]["neurons"]) == 10 and first[key]["scores"] == sorted(first[key]["scores"], reverse=True)
    assert not (tmp_path / "shard0of1.jsonl.partial").exists()


def test_shards_partition_the_queries(setup, tmp_path):
    queries = _queries()
    assert [q["id"] for q in shard_queries(queries, (1, 3))] == ["q1"]
    assert [q["id"] for q in shard_queries(queries, (0, 3))] == ["q0", "q3"]
    with pytest.raises(InputError, match="shard"):
        shard_queries(queries, (3, 3))
    out = _run(setup, tmp_path / "s.jsonl", shard=(0, 2))
    assert [json.loads(l)["id"] for l in out.read_text().splitlines()] == ["q0", "q2"]


def test_resume_after_a_kill_recomputes_only_unfinished(setup, tmp_path, monkeypatch):
    reference = _run(setup, tmp_path / "clean.jsonl").read_bytes()

    real = job_module.attribute_prompts  # one call per query: its three prompts
    calls = []

    def dying(model, input_ids, target_ids, **kw):
        calls.append(len(input_ids))
        if len(calls) == 3:  # the third query
            raise KeyboardInterrupt("simulated kill")
        return real(model, input_ids, target_ids, **kw)

    monkeypatch.setattr(job_module, "attribute_prompts", dying)
    path = tmp_path / "shard.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _run(setup, path, batch_queries=2)  # the kill hits the second batch: q0, q1 are kept
    partial = tmp_path / "shard.jsonl.partial"
    assert not path.exists()
    assert [json.loads(l)["id"] for l in partial.read_text().splitlines()] == ["q0", "q1"]
    # a write cut short by the kill: a truncated last line is dropped on resume
    with open(partial, "a") as fh:
        fh.write('{"id": "q2", "group": "hi')

    counting = []

    def counted(model, input_ids, target_ids, **kw):
        counting.append(len(input_ids))
        return real(model, input_ids, target_ids, **kw)

    monkeypatch.setattr(job_module, "attribute_prompts", counted)
    _run(setup, path, batch_queries=2)
    assert counting == [3, 3]  # two queries x three prompts, nothing else recomputed
    assert path.read_bytes() == reference
    assert not partial.exists()


def test_resume_inside_a_batch_writes_what_an_uninterrupted_run_does(setup, tmp_path,
                                                                    monkeypatch):
    """A job killed after q0 and resumed with batches of two computes q1 in the company (q1, q2)
    instead of (q0, q1): the log-probability increase of a query does not depend on its company,
    so the shard is byte-identical to an uninterrupted run."""
    reference = _run(setup, tmp_path / "clean.jsonl", batch_queries=2).read_bytes()
    real_prompts, calls = job_module.attribute_prompts, []  # one call per query

    def dying(model, input_ids, target_ids, **kw):
        calls.append(1)
        if len(calls) == 2:  # q1: q0 (a batch of one here) is kept
            raise KeyboardInterrupt("simulated kill")
        return real_prompts(model, input_ids, target_ids, **kw)

    monkeypatch.setattr(job_module, "attribute_prompts", dying)
    path = tmp_path / "shard.jsonl"
    with pytest.raises(KeyboardInterrupt):
        _run(setup, path, batch_queries=1)
    monkeypatch.setattr(job_module, "attribute_prompts", real_prompts)
    real_queries, batches = job_module.attribute_queries, []

    def recording(model, tokenizer, queries, *args, **kw):
        batches.append([q["id"] for q in queries])
        return real_queries(model, tokenizer, queries, *args, **kw)

    monkeypatch.setattr(job_module, "attribute_queries", recording)
    _run(setup, path, batch_queries=2)
    assert batches == [["q1", "q2"], ["q3"]]  # resumed, not recomputed
    assert path.read_bytes() == reference


def test_batching_queries_for_the_logprob_baseline_changes_no_byte(setup, tmp_path):
    one = _run(setup, tmp_path / "one.jsonl", batch_queries=1).read_bytes()
    assert _run(setup, tmp_path / "three.jsonl", batch_queries=3).read_bytes() == one
    assert b'"logprob_increase":{"neurons"' in one


def _killed_after(setup, path, monkeypatch, query=2, **kw):
    """Run until the `query`-th query's prompts, then die as a kill would: the partial file is
    kept."""
    real = job_module.attribute_prompts  # one call per query: its three prompts
    calls = []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == query:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(job_module, "attribute_prompts", dying)
    with pytest.raises(RuntimeError):
        _run(setup, path, batch_queries=1, **kw)
    monkeypatch.setattr(job_module, "attribute_prompts", real)
    assert Path(str(path) + ".partial").exists()


@pytest.mark.parametrize("change, named", [
    ({"steps": 8}, "steps: 4 -> 8"),
    ({"identity": {"dataset_sha256": "new", "model": "m"}}, "identity.dataset_sha256: 'old' -> 'new'"),
    ({"identity": {"dataset_sha256": "old", "model": "m2"}}, "identity.model: 'm' -> 'm2'"),
])
def test_a_partial_from_something_else_is_discarded_with_the_reason(setup, tmp_path, monkeypatch,
                                                                     caplog, change, named):
    path = tmp_path / "s.jsonl"
    _killed_after(setup, path, monkeypatch, identity={"dataset_sha256": "old", "model": "m"})
    kw = {"identity": {"dataset_sha256": "old", "model": "m"}, **change}
    with caplog.at_level(logging.WARNING):
        _run(setup, path, **kw)
    assert "discarding" in caplog.text and named in caplog.text
    steps = kw.get("steps", 4)
    assert path.read_bytes() == _run(setup, tmp_path / "clean.jsonl", steps=steps).read_bytes()


def test_a_partial_of_an_earlier_dataset_is_not_resumed(setup, tmp_path, monkeypatch, caplog):
    """The dataset was rebuilt with another seed (same ids, other gold letters) under a partial
    file: none of the old records survive, whatever ids they carry."""
    path = tmp_path / "s.jsonl"
    old = _queries()
    _killed_after(setup, path, monkeypatch, queries=old, identity={"dataset_sha256": "a"})
    new = _queries()
    for query in new:
        query["answers"] = query["answers"][1:] + query["answers"][:1]
    with caplog.at_level(logging.WARNING):
        _run(setup, path, queries=new, identity={"dataset_sha256": "b"})
    assert "identity.dataset_sha256: 'a' -> 'b'" in caplog.text
    records = [json.loads(l) for l in path.read_text().splitlines()]
    assert [r["query_sha256"] for r in records] == [query_sha256(q) for q in new]
    assert path.read_bytes() == _run(setup, tmp_path / "clean.jsonl", queries=new).read_bytes()


def test_a_partial_without_its_record_is_discarded(setup, tmp_path, monkeypatch, caplog):
    path = tmp_path / "s.jsonl"
    _killed_after(setup, path, monkeypatch)
    Path(str(path) + ".partial.settings.json").unlink()
    with caplog.at_level(logging.WARNING):
        _run(setup, path)
    assert "no readable record" in caplog.text
    assert path.read_bytes() == _run(setup, tmp_path / "clean.jsonl").read_bytes()


def test_max_rows_changes_only_float_rounding_never_the_neurons(setup, tmp_path):
    """`attribution.max_rows` is an execution setting (it plans no rerun): a smaller batch of
    IG rows changes float32 rounding in the last digits (the matmul kernels differ with the batch
    size), never which neurons are stored, their order, or what QRNCA selects from them."""
    from qrnca.neurons.selection import run_qrnca

    def records(path):
        return [json.loads(line) for line in path.read_text().splitlines()]

    whole = records(_run(setup, tmp_path / "whole.jsonl"))
    for max_rows in (1, 3):
        rows = records(_run(setup, tmp_path / f"rows{max_rows}.jsonl", max_rows=max_rows))
        for a, b in zip(whole, rows):
            assert a["id"] == b["id"] and a["activation"] == b["activation"]
            for pa, pb in zip(a["prompts"], b["prompts"]):
                assert pa["neurons"] == pb["neurons"]
                assert pb["ig"] == pytest.approx(pa["ig"], rel=1e-4)
                assert pb["p0"] == pytest.approx(pa["p0"], rel=1e-5)
        for method in ("qrnca", "qrnca_no_ica", "qrnca_with_common"):
            chosen = [(r["id"], r["neurons"]) for r in run_qrnca(rows).rows(method)]
            assert chosen == [(r["id"], r["neurons"]) for r in run_qrnca(whole).rows(method)]


def test_a_full_disk_names_the_file_and_leaves_no_result(setup, small_disk):
    from qrnca.errors import OutputError

    disk, _ = small_disk
    many = [dict(q, id=f"{q['id']}-{k}") for k in range(8) for q in _queries()]
    with pytest.raises(OutputError, match=r"cannot write .*s\.jsonl(\.partial)?: No space left"):
        _run(setup, disk / "s.jsonl", queries=many, baseline_top_k=200, store_fraction=0.001)
    assert not (disk / "s.jsonl").exists()
    assert not [p for p in disk.iterdir() if p.name.endswith(".tmp")]


def test_nan_scores_raise_naming_the_query(setup, tmp_path, monkeypatch):
    real = job_module.attribute_prompts
    calls = []

    def poisoned(*args, **kw):
        calls.append(1)
        results = real(*args, **kw)
        if len(calls) == 2:  # query q1: its second prompt
            results[1].ig[0, 0] = float("nan")
        return results

    monkeypatch.setattr(job_module, "attribute_prompts", poisoned)
    path = tmp_path / "s.jsonl"
    with pytest.raises(AttributionError, match="'q1', prompt 1"):
        _run(setup, path, batch_queries=1)
    kept = (tmp_path / "s.jsonl.partial").read_text().splitlines()
    assert [json.loads(l)["id"] for l in kept] == ["q0"]


def test_bad_queries_and_options_are_input_errors(setup, tmp_path):
    bad = _queries(1)
    bad[0]["answers"][2] = "E"
    with pytest.raises(InputError, match="'q0', prompt 2.*'E'"):
        _run(setup, tmp_path / "a.jsonl", queries=bad)
    with pytest.raises(InputError, match="method"):
        _run(setup, tmp_path / "b.jsonl", method="quick")


def test_unsupported_family_falls_back_to_reference(tmp_path, caplog):
    tok = train_word_tokenizer([WORDS + " A B C D . ? :"])
    model = build_model("gpt_neox", vocab_size=len(tok), layers=1, hidden=16, intermediate=24, heads=2)
    with caplog.at_level(logging.WARNING, logger="qrnca.attribution"):
        out = attribute_dataset(model, tok, _queries(1), tmp_path / "n.jsonl", steps=2,
                                progress=False, method="fast")
    assert "using the reference" in caplog.text
    record = json.loads(out.read_text())
    assert record["shape"] == [1, 24] and len(record["prompts"]) == 3


def test_reference_method_gives_the_same_records(setup, tmp_path):
    fast = json.loads(_run(setup, tmp_path / "f.jsonl", queries=_queries(1)).read_text())
    ref = json.loads(_run(setup, tmp_path / "r.jsonl", queries=_queries(1), method="reference").read_text())
    for a, b in zip(fast["prompts"], ref["prompts"]):
        assert a["neurons"][:5] == b["neurons"][:5]
        assert a["ig"][:5] == pytest.approx(b["ig"][:5], rel=1e-4)
    assert fast["logprob_increase"]["neurons"][:20] == ref["logprob_increase"]["neurons"][:20]
    assert fast["activation"]["neurons"] == ref["activation"]["neurons"]


@pytest.mark.parametrize("max_rows", [None, 20])
def test_query_prompts_sharing_passes_change_no_byte(setup, tmp_path, monkeypatch, max_rows):
    """The job runs a query's prompts through shared staircase passes (`fast_ig_batch`); its
    output is byte for byte that of one `fast_ig` per prompt (each prompt is cut into the same
    row pieces, and rows never interact)."""
    batched = _run(setup, tmp_path / "batched.jsonl", max_rows=max_rows).read_bytes()

    def one_by_one(model, input_ids, target_ids, *, method, **kw):
        assert method == "fast"
        return [fast_ig(model, ids, t, **kw) for ids, t in zip(input_ids, target_ids)]

    monkeypatch.setattr(job_module, "attribute_prompts", one_by_one)
    assert _run(setup, tmp_path / "single.jsonl", max_rows=max_rows).read_bytes() == batched
