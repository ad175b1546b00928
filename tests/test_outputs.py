"""Every output is written whole or not at all, with one permission, the same bytes on a rerun,
and a failure (a full disk) that names the file."""

import os

import numpy as np
import pandas as pd
import pytest

from qrnca.errors import OutputError
from qrnca.io import OUTPUT_MODE, atomic_open, write_json, write_jsonl
from qrnca.outputs.evaluation_plots import save_group_changes
from qrnca.outputs.plots import fig2b_layers

BIG = [{"id": f"q{i}", "text": "x" * 200} for i in range(2000)]  # ~450 KiB


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.mark.parametrize("write", [
    lambda path: write_jsonl(path, BIG),
    lambda path: write_json(path, BIG),
])
def test_a_full_disk_names_the_file_and_leaves_the_old_one(small_disk, write):
    disk, _ = small_disk
    target = disk / "out.jsonl"
    target.write_text("old\n")
    with pytest.raises(OutputError, match=rf"cannot write {disk}/out.jsonl: No space left on device"):
        write(target)
    assert target.read_text() == "old\n"  # never half-written
    assert _leftovers(disk) == []  # no temporary file either


def test_a_full_disk_while_drawing_a_figure_names_it(small_disk):
    disk, _ = small_disk
    by_group = _by_group()
    with pytest.raises(OutputError, match=rf"cannot write {disk}/fig.png"):
        save_group_changes(by_group, "boost", [disk / "fig.png"], dpi=600)
    assert list(disk.iterdir()) == []


def test_a_full_disk_while_saving_the_demo_model_names_its_folder(small_disk):
    from qrnca.demo.model import _save_atomically
    from qrnca.models.tiny import build_model, train_word_tokenizer

    disk, mounted = small_disk
    if not mounted:
        pytest.skip("safetensors writes from Rust: only a real full disk fails it")
    tokenizer = train_word_tokenizer(["a b c d A B C D"])
    model = build_model("llama", vocab_size=len(tokenizer), layers=2, hidden=64, intermediate=256,
                        heads=4)
    with pytest.raises(OutputError, match=rf"cannot write {disk}/model"):
        _save_atomically(model, tokenizer, {"seed": 0}, disk / "model")
    assert list(disk.iterdir()) == []


def _by_group():
    return pd.DataFrame({"op": ["boost", "boost"], "group": ["a", "b"],
                         "change_related": [0.5, 0.25], "change_unrelated": [0.01, -0.02]})


def test_every_writer_gives_one_permission(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", [{"x": 1}])
    write_json(tmp_path / "b.json", {"x": 1})
    with atomic_open(tmp_path / "c.csv") as fh:
        fh.write("x\n1\n")
    save_group_changes(_by_group(), "boost", [tmp_path / "d.pdf", tmp_path / "d.png"])
    fig2b_layers({"x": pd.DataFrame({"layer": [0, 1], "neurons": [3, 1]})},
                 [tmp_path / "e.pdf", tmp_path / "e.png"])
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in tmp_path.iterdir()}
    assert set(modes.values()) == {oct(OUTPUT_MODE)}, modes


def test_figures_3_and_4_are_byte_identical_on_a_rerun_and_honour_the_dpi(tmp_path):
    """The Figure 3 / 4 PDFs used to embed their creation date; every figure now goes through
    `qrnca.outputs.plots.save_figure`."""
    paths = [tmp_path / "f.pdf", tmp_path / "f.png"]
    save_group_changes(_by_group(), "boost", paths)
    first = [p.read_bytes() for p in paths]
    assert b"CreationDate" not in first[0]
    save_group_changes(_by_group(), "boost", paths)
    assert [p.read_bytes() for p in paths] == first
    save_group_changes(_by_group(), "boost", [tmp_path / "hi.png"], dpi=300)
    assert _png_width(tmp_path / "hi.png") == pytest.approx(2 * _png_width(paths[1]), rel=0.02)


def _png_width(path) -> int:
    return int.from_bytes(path.read_bytes()[16:20], "big")


def test_figure_dpi_reaches_every_figure(tmp_path):
    from qrnca.outputs.analysis import heatmap_grids
    from qrnca.outputs.plots import fig2a_overlap, fig5_heatmaps

    overlap = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
    distribution = pd.DataFrame({"layer": [0, 1], "neurons": [3, 1]})
    rows = [{"id": f"q{i}", "group": g, "shape": [2, 8], "neurons": [[0, i], [1, 2]],
             "score": [1.0, 0.5]} for i, g in enumerate(["a", "b", "a"])]
    draw = {
        "fig2a": lambda out, dpi: fig2a_overlap({"d": overlap}, [out], dpi=dpi),
        "fig2b": lambda out, dpi: fig2b_layers({"d": distribution}, [out], dpi=dpi),
        "fig5": lambda out, dpi: fig5_heatmaps(heatmap_grids(rows, n_bins=4), [out], dpi=dpi),
        "fig3": lambda out, dpi: save_group_changes(_by_group(), "boost", [out], dpi=dpi),
    }
    for name, figure in draw.items():
        figure(tmp_path / f"{name}-100.png", 100)
        figure(tmp_path / f"{name}-200.png", 200)
        ratio = _png_width(tmp_path / f"{name}-200.png") / _png_width(tmp_path / f"{name}-100.png")
        assert ratio == pytest.approx(2, rel=0.03), name


def test_nothing_is_written_outside_the_temporary_file_on_error(tmp_path):
    target = tmp_path / "x.json"
    with pytest.raises(RuntimeError):
        with atomic_open(target) as fh:
            fh.write("{")
            raise RuntimeError("killed")
    assert not target.exists() and os.listdir(tmp_path) == []
    assert np.isfinite(OUTPUT_MODE)
