"""Table, CSV/JSON output and case picking."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from synth.evaluation.protocol import EvalResult, ImageRecord
from synth.evaluation.report import format_table, pick_cases, write_results
from synth.metrics import METRIC_NAMES


def _result(values_per_run: list[dict[str, float]]) -> EvalResult:
    per_run = [
        {"a": {m: v for m in METRIC_NAMES}, "b": {m: 0.5 for m in METRIC_NAMES}}
        for v in values_per_run
    ]
    per_run[0]["b"]["P-PRO"] = float("nan")
    return EvalResult(
        config={
            "dataset": "folder",
            "data": "/d",
            "eval_size": [32, 32],
            "model_size": [32, 32],
            "prompt_select": "random",
            "convention_description": "standard: raw maps",
        },
        runs=[f"seed {i}" for i in range(len(per_run))],
        categories=["a", "b"],
        per_run=per_run,
        images=[
            ImageRecord("seed 0", "a", "/d/a/test/x.png", "/d/a/normal/n.png", 1, "anomaly", 0.25)
        ],
        notes=["something to know"],
    )


def test_table_shows_percent_mean_std_and_notes():
    text = format_table(_result([0.8, 0.9]))
    assert "convention: standard: raw maps" in text
    assert "seed 0, seed 1 (mean ± std over 2 runs)" in text
    assert "| a | 85.0±5.0 |" in text
    row_b = next(line for line in text.splitlines() if line.startswith("| b |"))
    assert row_b.endswith("| n/a |")
    mean = next(line for line in text.splitlines() if line.startswith("| **mean**"))
    assert mean.startswith("| **mean** | 67.5±2.5 |")
    assert text.rstrip().endswith("note: something to know")


def test_single_run_has_no_std():
    assert "| a | 80.0 |" in format_table(_result([0.8]))


def test_files_written_with_nan_as_null(tmp_path):
    paths = write_results(_result([0.8, 0.9]), tmp_path / "out")
    doc = json.loads(paths[0].read_text())
    assert doc["summary"]["a"]["I-ROC"] == pytest.approx({"mean": 0.85, "std": 0.05})
    assert doc["summary"]["b"]["P-PRO"] == {"mean": None, "std": None}
    assert doc["per_run"][0]["categories"]["b"]["P-PRO"] is None
    assert "numpy" in doc["versions"]
    rows = list(csv.DictReader(paths[1].read_text().splitlines()))
    assert [r["category"] for r in rows] == ["a", "b", "mean"]
    assert rows[1]["P-PRO"] == "" and float(rows[0]["I-ROC_std"]) == 0.05
    images = list(csv.DictReader(paths[2].read_text().splitlines()))
    assert images[0]["score"] == "0.25" and images[0]["defect"] == "anomaly"


def test_pick_cases_ranks_misses_and_false_alarms_first():
    labels = np.array([0, 0, 1, 1, 0])
    scores = np.array([0.1, 0.9, 0.2, 0.8, 0.3])
    worst, best = pick_cases(labels, scores, 2)
    assert worst == [1, 2]  # the hottest normal image, then the coldest anomalous one
    assert best == [0, 3]
    assert pick_cases(labels, scores, 10)[0] == [1, 2, 4, 3, 0]
