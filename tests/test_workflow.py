"""The demo DAG end to end through the real Snakemake CLI, and the ways users rerun and audit it.

One session-scoped run of the whole demo (conftest.py `demo`: a synthetic world, a tiny Llama
trained on CPU, every later rule unchanged) feeds every test here; tests that change files work on
copies of it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from demo_workflow import (DATASETS, DEMO, MODEL, SHARED, copy_workflow, job_counts, read_csv,
                           snakemake)
from slurm_stub_helpers import flag_value, rule_of, run_with_slurm_stubs

pytestmark = pytest.mark.slow


def test_demo_builds_every_table_and_figure(demo):
    results = demo / "results"
    expected = [
        results / "paper_comparison.md",
        results / "paper_comparison.csv",
        *(results / MODEL / "tables" / name for name in [
            "table3_qr_neurons.csv", "table4_pcr.csv", "table6_editing.csv",
            "table7_prediction.csv", "fig2a_overlap.csv", "fig2b_layers.csv"]),
        *(results / MODEL / "figures" / f"{name}.{ext}" for ext in ("pdf", "png")
          for name in ["fig2a_overlap", "fig2b_layers"]),
    ]
    for dataset in DATASETS:
        expected += [
            results / MODEL / dataset / "accuracy.csv",
            results / MODEL / "tables" / f"table5_common_tokens_{dataset}.csv",
            *(results / MODEL / "figures" / f"fig3_{op}_{dataset}.{ext}"
              for op in ("boost", "suppress") for ext in ("pdf", "png")),
            *(results / MODEL / "figures" / f"fig5_heatmap_{dataset}.{ext}" for ext in ("pdf", "png")),
        ]
    missing = [str(p.relative_to(demo)) for p in expected if not p.is_file() or p.stat().st_size == 0]
    assert not missing
    assert "Nothing to be done" in snakemake(demo, *DEMO, "-n").stdout


def test_demo_model_answers_its_own_prompts(demo):
    for dataset in DATASETS:
        table = read_csv(demo / "results" / MODEL / dataset / "accuracy.csv")
        rows = {r["group"]: r for r in table if r["used"] == "True"}  # the encoding in use
        assert float(rows["ALL"]["accuracy"]) >= 0.9, (dataset, rows["ALL"])


def test_demo_finds_qr_neurons_for_every_query(demo):
    table = read_csv(demo / "results" / MODEL / "tables" / "table3_qr_neurons.csv")
    overall = [r for r in table if r["group"] == "ALL"]
    assert len(overall) == len(DATASETS)
    for row in overall:
        assert 1 <= float(row["mean_neurons"]) <= 20


def test_every_result_has_provenance(demo):
    prov = demo / "results" / "provenance"
    for dataset in DATASETS:
        record = prov / "results" / MODEL / dataset / "neurons" / "qrnca.jsonl.json"
        assert record.is_file(), record


def test_one_figure_is_rebuilt_alone(demo_copy):
    target = f"results/{MODEL}/figures/fig5_heatmap_{DATASETS[0]}.pdf"
    (demo_copy / target).unlink()
    dry = snakemake(demo_copy, *DEMO, "-n", target)
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_counts(dry.stdout) == {"fig5": 1}
    run = snakemake(demo_copy, *DEMO, "--cores", "1", target)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (demo_copy / target).is_file()


def test_changing_a_plot_parameter_reruns_only_that_figure(demo, tmp_path):
    change = tmp_path / "bins.yaml"
    change.write_text("analysis:\n  heatmap_bins: 8\n")
    dry = snakemake(demo, "--configfile", "config/demo.yaml", str(change), "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    assert job_counts(dry.stdout) == {"fig5": len(DATASETS), "all": 1}


def test_force_and_recursive_rerun_are_dry_runnable(demo):
    target = f"results/{MODEL}/figures/fig3_boost_{DATASETS[0]}.pdf"
    forced = snakemake(demo, *DEMO, "-n", "-f", target)
    assert job_counts(forced.stdout) == {"fig3": 1}
    downstream = job_counts(snakemake(demo, *DEMO, "-n", "-R", "select_qrnca").stdout)
    assert downstream["select_qrnca"] == len(DATASETS)
    assert {"baseline_neurons", "evaluate", "table4", "fig5"} <= set(downstream)
    assert "attribute" not in downstream and "train_demo_model" not in downstream


def test_list_changes_and_summary(demo):
    # Snakemake 9.27.1 lists every output with recorded params under --list-changes params, changed
    # or not (ParamsChange objects are iterated for their files); code and input are exact.
    for kind in ("params", "code", "input"):
        assert snakemake(demo, *DEMO, "--list-changes", kind).returncode == 0
    assert snakemake(demo, *DEMO, "--list-changes", "code").stdout.strip() == ""
    assert snakemake(demo, *DEMO, "--list-changes", "input").stdout.strip() == ""
    summary = snakemake(demo, *DEMO, "--summary")
    assert summary.returncode == 0
    assert f"results/{MODEL}/tables/table4_pcr.csv" in summary.stdout


def test_report_holds_every_table_and_figure(demo):
    run = snakemake(demo, *DEMO, "--report", "report.zip", timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    # captions are valid reStructuredText: docutils reports nothing (e.g. "(ERROR/3)")
    output = run.stdout + run.stderr
    assert not re.search(r"\((ERROR|WARNING|SEVERE)/\d\)", output), output[-3000:]
    assert "ERROR" not in output and "WARNING" not in output, output[-3000:]
    import zipfile

    names = "\n".join(zipfile.ZipFile(demo / "report.zip").namelist())
    for item in ["table3_qr_neurons.csv", "table4_pcr.csv", "table6_editing.csv",
                 "table7_prediction.csv", "fig2a_overlap.pdf", "fig5_heatmap_demo-domain.pdf",
                 "fig3_suppress_demo-language.pdf", "paper_comparison.md"]:
        assert item in names, item


def lineage(workdir: Path, path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qrnca.workflow.lineage", path], cwd=workdir,
                          text=True, capture_output=True, timeout=300)


def test_lineage_names_every_upstream_file_and_detects_a_change(demo_copy):
    figure = f"results/{MODEL}/figures/fig3_suppress_{DATASETS[0]}.pdf"
    clean = lineage(demo_copy, figure)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    for upstream in [f"results/{MODEL}/{DATASETS[0]}/evaluation/qrnca.jsonl",
                     f"results/{MODEL}/{DATASETS[0]}/neurons/qrnca.jsonl",
                     f"results/{MODEL}/{DATASETS[0]}/attribution/shard0of2.jsonl",
                     f"results/datasets/{DATASETS[0]}.jsonl",
                     f"results/models/{MODEL}",
                     "results/demo_world/mmlu"]:
        assert upstream in clean.stdout, upstream
    assert re.search(r"[0-9a-f]{12}", clean.stdout)
    raw = demo_copy / "results/demo_world/mmlu/test/high_school_biology_test.csv"
    raw.write_text(raw.read_text() + "\n")
    changed = lineage(demo_copy, figure)
    assert changed.returncode == 1
    assert "changed" in changed.stdout and "results/demo_world/mmlu" in changed.stdout


def test_gpu_and_cpu_rules_through_the_real_slurm_plugin(demo_copy, tmp_path):
    accuracy = f"results/{MODEL}/{DATASETS[0]}/accuracy.csv"
    layers = f"results/{MODEL}/figures/fig2b_layers.pdf"
    for rel in (accuracy, layers):
        (demo_copy / rel).unlink()
    run = run_with_slurm_stubs(demo_copy, [*DEMO, "--jobs", "2", accuracy, layers],
                               env={"QRNCA_SLURM_ACCOUNT": "testacct", "QRNCA_SLURM_PARTITION": "cpu",
                                    "QRNCA_SLURM_GPU_PARTITION": "gpu",
                                    "PYTHONPATH": str(demo_copy)},
                               timeout=900, state_dir=tmp_path / "slurm_state")
    assert run.result.returncode == 0, run.output()[-5000:]
    by_rule = {rule_of(argv): argv for argv in run.sbatch}
    assert set(by_rule) == {"score_accuracy", "fig2b"}
    gpu = by_rule["score_accuracy"]
    assert "--gpus=v100:1" in gpu or flag_value(gpu, "--gres") == "gpu:v100:1"
    assert flag_value(gpu, "--mem") == "32000" and flag_value(gpu, "-t", "--time") == "60"
    assert flag_value(gpu, "-p", "--partition") == "gpu"
    cpu = by_rule["fig2b"]
    assert not any(a.startswith("--gpus") or a.startswith("--gres") for a in cpu)
    assert (demo_copy / accuracy).is_file() and (demo_copy / layers).is_file()


def test_paper_config_dry_runs_without_network(tmp_path):
    work = copy_workflow(tmp_path / "paper")
    dry = snakemake(work, "-n")
    assert dry.returncode == 0, dry.stderr[-3000:]
    counts = job_counts(dry.stdout)
    assert counts["attribute"] == 2 * 2 * 8  # models x datasets x shards
    assert counts["download_model"] == 2 and counts["fetch_raw"] == 2
    assert counts["evaluate"] == 4 and counts["paper_comparison"] == 1


def test_paper_dag_through_the_slurm_profile_lists_resources(tmp_path):
    work = copy_workflow(tmp_path / "paper")
    run = run_with_slurm_stubs(work, ["-n"], env={"QRNCA_SLURM_ACCOUNT": "testacct",
                                                  "QRNCA_SLURM_PARTITION": "cpu"},
                               timeout=300, state_dir=tmp_path / "state")
    assert run.result.returncode == 0, run.output()[-3000:]
    out = run.output()
    assert re.search(r"rule attribute:.*?resources:[^\n]*gpu=1[^\n]*gpu_model=v100", out, re.S)
    assert run.sbatch == []


def test_bad_config_value_is_named(tmp_path):
    work = copy_workflow(tmp_path / "bad")
    dry = snakemake(work, *DEMO, "-n", "--config", "answer_token=first_letter")
    assert dry.returncode != 0
    message = dry.stdout + dry.stderr
    assert "answer_token" in message and "first_letter" in message


@pytest.mark.skipif(not (SHARED / "mmlu").is_dir(), reason="needs ../shared/data")
def test_paper_dag_on_real_raw_data_with_a_tiny_random_model(tmp_path):
    """The paper's own DAG (datasets named domain / language, all methods, every table and the
    paper comparison) on the real raw MMLU and mLAMA files, scaled down and with a tiny random
    Llama instead of a 7B model: catches what the synthetic world cannot (real prompts, six
    scripts, repeated MMLU options, the paper-value comparisons)."""
    from qrnca.datasets import build_from_spec
    from qrnca.models.tiny import save_tiny

    domain = {"name": "domain", "source": "mmlu", "raw": str(SHARED / "mmlu"),
              "groups": {s: 2 for s in ["biology", "physics", "chemistry", "mathematics",
                                        "computer_science", "geography"]}}
    language = {"name": "language", "source": "mlama", "raw": str(SHARED / "mlama"),
                "languages": ["ar", "en", "fr", "ja", "ru", "zh"],
                "relations": ["P19", "P108", "P1303", "P159", "P17"], "facts_per_relation": 1}
    corpus = [p for spec in (domain, language) for q in build_from_spec(spec, spec["raw"])
              for p in q["prompts"]]
    corpus += [p for q in build_from_spec(domain, domain["raw"], split="val") for p in q["prompts"]]
    save_tiny(tmp_path / "model", "llama", corpus, layers=2, hidden=32, intermediate=64)
    work = copy_workflow(tmp_path / "paper")
    import yaml

    (work / "rehearsal.yaml").write_text(yaml.safe_dump({
        "models": [{"name": "tiny-random", "path": str(tmp_path / "model"), "dtype": "float32"}],
        "datasets": [domain, language],
        "attribution": {"device": "cpu", "shards": 1},
    }))
    run = snakemake(work, "--configfile", "rehearsal.yaml", "--cores", "2")
    assert run.returncode == 0, run.stderr[-6000:]
    tables = work / "results" / "tiny-random" / "tables"
    table3 = read_csv(tables / "table3_qr_neurons.csv")
    assert {r["group"] for r in table3} >= {"biology", "computer_science", "ar", "zh", "ALL"}
    assert all(r["paper_mean"] for r in table3 if r["group"] in ("biology", "ja"))
    comparison = read_csv(work / "results" / "paper_comparison.csv")
    statuses = {}
    for row in comparison:
        statuses.setdefault(row["table"], set()).add(row["status"])
    for table in ("table3", "table4", "table6", "table7"):
        assert "compared" in statuses[table] or "within bound" in statuses[table], (table, statuses)
        assert "not produced" not in statuses[table], (table, statuses)


@pytest.mark.parametrize("override, message", [
    ("selection:\n  threshold: 0.1\nattribution:\n  store_fraction: 0.15\n",
     "store_fraction must not exceed selection.threshold"),
    ("methods: [random, activation]\n", "'methods' must include qrnca"),
    ("models:\n  - {name: m, dtype: float32}\n", "models"),
])
def test_impossible_config_stops_before_any_job(tmp_path, override, message):
    work = copy_workflow(tmp_path / "bad")
    (work / "override.yaml").write_text(override)
    dry = snakemake(work, "--configfile", "config/demo.yaml", "override.yaml", "-n")
    assert dry.returncode != 0
    assert message in dry.stdout + dry.stderr
