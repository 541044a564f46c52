"""The two learning checks the demo prints at its end, computed from the metrics files it wrote."""

from __future__ import annotations

import json

from omics.commands.demo import learning_checks


def test_learning_checks_weight_compliance_by_answers(tmp_path):
    files = {
        "stage2": {"overall": {"mixed_score_mean": 74.5}, "tasks": {}},
        "stage3": {"overall": {"mixed_score_mean": 70.0}, "tasks": {
            "a": {"n": 30, "format_compliance": 100.0}, "b": {"n": 10, "format_compliance": 60.0}}},
        "stage3/direct": {"overall": {"mixed_score_mean": 73.75}, "tasks": {}},
    }
    for folder, document in files.items():
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "metrics.json").write_text(json.dumps(document))
    text = learning_checks(tmp_path)
    assert "90.0% of the answers" in text and "a 100%, b 60%" in text  # (30 x 100 + 10 x 60) / 40
    assert "73.75 against Stage 2's 74.50 (-0.75" in text
