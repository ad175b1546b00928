"""Bad values are caught where they enter: a dataset that is empty or repeats an id, a result file
that lacks queries or holds other ones, weights that cannot be read, a non-finite probability."""

import json

import pytest
import torch

from qrnca.consistency import check_query_ids, query_sha256, read_attribution_shards, shard_queries
from qrnca.datasets.queries import read_dataset, write_dataset
from qrnca.errors import DatasetError, InputError, ModelLoadError, NonFiniteError
from qrnca.io import write_jsonl


def _query(qid, group):
    options = [["cell", "rock", "star", "wave"]] * 3
    return {"id": qid, "group": group, "relation": None, "fact": qid,
            "prompts": [f"{qid} prompt {k}" for k in range(3)], "answers": ["A", "A", "A"],
            "options": options, "gold": "cell",
            "source": {"kind": "test", "file": "x", "row": 0}}


def _queries(n=12):
    return [_query(f"q{i:02d}", "bio" if i % 2 else "geo") for i in range(n)]


def _shards(tmp_path, queries, n=2):
    paths = []
    for i in range(n):
        path = tmp_path / f"shard{i}of{n}.jsonl"
        write_jsonl(path, [{"id": q["id"], "group": q["group"], "query_sha256": query_sha256(q)}
                           for q in shard_queries(queries, (i, n))])
        paths.append(path)
    return paths


def test_a_shard_cut_at_a_line_boundary_is_refused_naming_file_and_ids(tmp_path):
    """The final shard lost its last two records (a cut at a line boundary still parses)."""
    queries = _queries()
    paths = _shards(tmp_path, queries)
    assert [r["id"] for r in read_attribution_shards(paths, queries)] == [
        q["id"] for q in shard_queries(queries, (0, 2)) + shard_queries(queries, (1, 2))]
    lines = paths[1].read_text().splitlines(keepends=True)
    paths[1].write_text("".join(lines[:-2]))
    with pytest.raises(InputError, match=r"shard1of2.jsonl: attribution records \(shard 1 of 2\) "
                                         r"do not match the dataset \(missing 2 of 6 queries: "
                                         r"'q09', 'q11'\)"):
        read_attribution_shards(paths, queries)


def test_a_shard_of_another_dataset_version_is_refused(tmp_path):
    """Same ids, other content (the dataset was rebuilt with another seed): the records'
    query_sha256 gives them away."""
    queries = _queries()
    paths = _shards(tmp_path, queries)
    rebuilt = [dict(q, fact=q["fact"] + "!") for q in queries]
    with pytest.raises(InputError, match=r"shard0of2.jsonl: 6 records were computed from other "
                                         r"versions of their queries"):
        read_attribution_shards(paths, rebuilt)


def test_extra_and_repeated_ids_are_named():
    with pytest.raises(InputError, match=r"f: neurons do not match the dataset \(2 queries not in "
                                         r"the dataset: 'x', 'y'; 1 queries more than once: 'a'\)"):
        check_query_ids(["a", "a", "b", "x", "y"], ["a", "b"], "f", what="neurons")
    check_query_ids(["b", "a"], ["a", "b"], "f")  # order is free


def test_an_empty_dataset_is_refused_at_write_and_at_read(tmp_path):
    with pytest.raises(DatasetError, match=r"d.jsonl: no queries"):
        write_dataset(tmp_path / "d.jsonl", [])
    assert not (tmp_path / "d.jsonl").exists()
    (tmp_path / "e.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match=r"e.jsonl: no queries \(an empty dataset\)"):
        read_dataset(tmp_path / "e.jsonl")


def test_duplicate_ids_are_refused_when_the_dataset_is_read(tmp_path):
    """Every script reads its dataset with read_dataset before loading a model, so a repeated id
    stops the job before any GPU work."""
    queries = _queries(3)
    path = tmp_path / "d.jsonl"
    write_jsonl(path, queries + [queries[1]])
    with pytest.raises(DatasetError, match=r"d.jsonl, row 4: duplicate query id 'q01' "
                                           r"\(first on row 2\)"):
        read_dataset(path)
    write_jsonl(path, [dict(queries[0], answers=["A", "B"])])
    with pytest.raises(DatasetError, match=r"d.jsonl, row 1: query 1 \(id 'q00'\)"):
        read_dataset(path)
    write_jsonl(path, queries)
    assert read_dataset(path) == queries


def test_a_truncated_safetensors_file_is_named(tmp_path):
    from qrnca.models.loading import load_model
    from qrnca.models.tiny import save_tiny

    path = save_tiny(tmp_path / "m", "llama", ["a b c d A B C D"], layers=1, hidden=16,
                     intermediate=32)
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=rf"model 'm': cannot load the weights {weights}"):
        load_model({"name": "m", "path": str(path)})


def test_non_finite_letter_probabilities_name_query_and_prompt():
    from qrnca.evaluation.scoring import _records

    probs = torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.1, float("nan"), 0.3, 0.4]])
    with pytest.raises(NonFiniteError, match=r"query 'q1', prompt 2: the model gives non-finite"):
        _records([("q0", "g", 0, "A"), ("q1", "g", 2, "B")], probs, list("ABCD"))


def test_query_digest_is_the_dataset_line(tmp_path):
    query = _queries(1)[0]
    write_jsonl(tmp_path / "d.jsonl", [query])
    import hashlib

    line = (tmp_path / "d.jsonl").read_bytes().rstrip(b"\n")
    assert query_sha256(query) == hashlib.sha256(line).hexdigest()
    assert query_sha256(json.loads(line)) == query_sha256(query)
