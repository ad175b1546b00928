"""Table 5: value vectors of common neurons read through the unembedding, on tiny models with a
planted neuron whose top token is known."""

import json

import pandas as pd
import pytest
import torch

from qrnca.errors import InputError
from qrnca.io import write_csv
from qrnca.models.layouts import down_proj_weight, final_norm
from qrnca.models.tiny import build_model, train_word_tokenizer
from qrnca.neurons import vocab_projection as vp

CORPUS = ["the cat sat on the mat in May , 1999 . A B C D", "June of dog ; house 42 ."]


@pytest.fixture(scope="module")
def tokenizer():
    return train_word_tokenizer(CORPUS)


def _model(tokenizer, arch="llama"):
    torch.manual_seed(0)
    return build_model(arch, vocab_size=len(tokenizer), layers=2, hidden=32, intermediate=16,
                       heads=2, seed=0)


def test_planted_value_vector_ranks_its_token_first(tokenizer):
    model = _model(tokenizer)
    target = tokenizer.convert_tokens_to_ids("May")
    w_u = model.get_output_embeddings().weight
    with torch.no_grad():
        w_u[target] *= 5.0  # well clear of every other row
        down_proj_weight(model, 1)[:, 3] = w_u[target]
    common = {"threshold": 2, "clusters": 10, "neurons": [[1, 3], [0, 0]], "counts": [7, 4]}
    table = vp.table5(model, tokenizer, common, top_k=3, through_norm=False)
    assert list(table.columns) == list(vp.TABLE5_COLUMNS)
    assert len(table) == 6
    first = table[(table["layer"] == 1) & (table["index"] == 3)].set_index("rank")
    assert first.loc[1, "token_id"] == target and first.loc[1, "token"] == "May"
    assert first.loc[1, "clusters"] == 7 and first.loc[1, "category"] == "month"
    v = down_proj_weight(model, 1)[:, 3].detach()
    assert first.loc[1, "score"] == pytest.approx(float(w_u[target].detach() @ v), rel=1e-5)
    assert list(first["score"]) == sorted(first["score"], reverse=True)
    # File order (by count) is kept.
    assert list(table.drop_duplicates(["layer", "index"])["index"]) == [3, 0]


def test_through_norm_uses_the_final_norm_scale_and_can_change_the_ranking(tokenizer):
    model = _model(tokenizer)
    t1, t2 = (tokenizer.convert_tokens_to_ids(t) for t in ("cat", "dog"))
    w_u = model.get_output_embeddings().weight
    with torch.no_grad():
        w_u.mul_(0.01)
        w_u[t1] = torch.cat([torch.ones(16), torch.zeros(16)])  # |w1|^2 = 16
        w_u[t2] = torch.cat([torch.zeros(16), 1.5 * torch.ones(16)])  # |w2|^2 = 36
        down_proj_weight(model, 0)[:, 5] = w_u[t1] + w_u[t2]
        final_norm(model).weight.copy_(torch.cat([torch.ones(16), 0.1 * torch.ones(16)]))
    common = {"neurons": [[0, 5]], "counts": [3]}
    raw = vp.table5(model, tokenizer, common, top_k=2, through_norm=False).set_index("rank")
    normed = vp.table5(model, tokenizer, common, top_k=2, through_norm=True).set_index("rank")
    assert raw.loc[1, "token"] == "dog" and raw.loc[1, "score"] == pytest.approx(36.0, rel=1e-4)
    assert normed.loc[1, "token"] == "cat" and normed.loc[1, "score"] == pytest.approx(16.0, rel=1e-4)
    assert normed.loc[2, "token"] == "dog" and normed.loc[2, "score"] == pytest.approx(3.6, rel=1e-3)


def test_gemma_norm_scale_is_one_plus_weight_and_gpt2_columns_are_read_transposed(tokenizer):
    gemma = _model(tokenizer, "gemma")
    with torch.no_grad():
        final_norm(gemma).weight.fill_(0.5)
    assert torch.allclose(vp.norm_scale(gemma), torch.full((32,), 1.5))
    gpt2 = _model(tokenizer, "gpt2")
    target = tokenizer.convert_tokens_to_ids("house")
    w_u = gpt2.get_output_embeddings().weight
    with torch.no_grad():
        w_u[target] *= 5.0
        gpt2.transformer.h[1].mlp.c_proj.weight[9, :] = w_u[target]  # Conv1D: (in, out)
    table = vp.table5(gpt2, tokenizer, {"neurons": [[1, 9]], "counts": [2]}, top_k=1,
                      through_norm=False)
    assert table.loc[0, "token"] == "house"


def test_gemma3_projects_through_the_ffn_output_norm_gain(tokenizer):
    """Gemma 3 normalises the FFN output before the residual: what a neuron writes is v scaled by
    that norm's (1 + weight), which can change which token ranks first."""
    model = _model(tokenizer, "gemma3")
    t1, t2 = (tokenizer.convert_tokens_to_ids(t) for t in ("cat", "dog"))
    w_u = model.get_output_embeddings().weight
    post = model.model.layers[0].post_feedforward_layernorm
    with torch.no_grad():
        final_norm(model).weight.zero_()  # final gain 1 + 0 = 1
        w_u.mul_(0.01)
        w_u[t1] = torch.cat([torch.ones(16), torch.zeros(16)])
        w_u[t2] = torch.cat([torch.zeros(16), 1.5 * torch.ones(16)])
        down_proj_weight(model, 0)[:, 5] = w_u[t1] + w_u[t2]
        post.weight.copy_(torch.cat([torch.zeros(16), -0.9 * torch.ones(16)]))  # gains 1 | 0.1
    table = vp.table5(model, tokenizer, {"neurons": [[0, 5]], "counts": [3]}, top_k=2)
    table = table.set_index("rank")
    assert table.loc[1, "token"] == "cat" and table.loc[1, "score"] == pytest.approx(16.0, rel=1e-4)
    assert table.loc[2, "token"] == "dog" and table.loc[2, "score"] == pytest.approx(3.6, rel=1e-3)


def test_bad_common_json_names_the_problem(tokenizer):
    model = _model(tokenizer)
    with pytest.raises(InputError, match="outside the model's neuron grid"):
        vp.table5(model, tokenizer, {"neurons": [[5, 0]], "counts": [1]}, source="x/common.json")
    with pytest.raises(InputError, match="parallel"):
        vp.table5(model, tokenizer, {"neurons": [[0, 0]], "counts": [1, 2]})
    with pytest.raises(InputError, match="top_k"):
        vp.table5(model, tokenizer, {"neurons": [[0, 0]], "counts": [1]}, top_k=0)
    empty = vp.table5(model, tokenizer, {"neurons": [], "counts": []})
    assert empty.empty and list(empty.columns) == list(vp.TABLE5_COLUMNS)


@pytest.mark.parametrize("token,text,expected", [
    ("▁A", "A", "option_letter"), ("ĠD", " D", "option_letter"), ("A", "A", "option_letter"),
    ("▁the", "the", "stop_word"), ("ĠThe", " The", "stop_word"), ("▁May", "May", "month"),
    ("Ġ1999", " 1999", "digit"), (",", ",", "punctuation"), ("▁...", "...", "punctuation"),
    ("▁", " ", "whitespace"), ("▁house", "house", "other"), ("a", "a", "stop_word"),
])
def test_token_categories(token, text, expected):
    assert vp.token_category(token, text) == expected


def test_special_tokens_are_their_own_category():
    assert vp.token_category("</s>", "</s>", special=True) == "special"


def test_summary_counts_top_layer_share_and_categories(tmp_path):
    table = pd.DataFrame({
        "layer": [3, 3, 3, 3, 1, 1], "index": [0, 0, 7, 7, 2, 2], "rank": [1, 2, 1, 2, 1, 2],
        "category": ["option_letter", "stop_word", "month", "other", "punctuation", "option_letter"],
    })
    s = vp.summarize(table, n_layers=4, clusters=20)
    assert s["common_neurons"] == 3 and s["in_top_layer"] == 2 and s["top_layer"] == 3
    assert s["share_top_layer"] == pytest.approx(2 / 3)
    assert s["neurons_per_layer"] == {1: 1, 3: 2}
    assert s["category_counts"]["option_letter"] == 2
    assert s["category_shares"]["option_letter"] == pytest.approx(2 / 6)
    assert s["top1_category_counts"] == {**{c: 0 for c in vp.CATEGORIES}, "option_letter": 1,
                                         "month": 1, "punctuation": 1}
    assert s["category_counts_by_layer"][3]["month"] == 1
    vp.write_summary(tmp_path / "s.json", s)
    assert json.loads((tmp_path / "s.json").read_text())["clusters"] == 20
    write_csv(tmp_path / "t.csv", table)
    assert pd.read_csv(tmp_path / "t.csv").shape == (6, 4)
