"""Conformance: every column of the paper table from answers in the dataset's styles, scored by `omics score`
on the paper evaluator's .jsonl format; expected values worked out by hand in the comments, or (for
correlations) by an independent scipy computation × the coverage n_valid / n_total."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import cli
from scipy.stats import pearsonr

from omics.evaluate.tasks import PAPER_COLUMNS

P, N = "positive", "negative"


def _r(x: list[float], y: list[float]) -> float:
    return float(pearsonr(x, y)[0])


# task → [(label, model answer, reference answer)]; labels as the dataset writes them
CASES: dict[str, list[tuple]] = {
    # emp pooled over two subtasks: labels T F | T F T, answers T F | T T (wrong) and "I don't know" (a hedge:
    # invalid → the class opposite to its label, F). Pooled TP 2, TN 1, FP 1, FN 1 → MCC = (2·1 − 1·1)/√(3·3·2·2)
    # = 1/6 = 16.67 (the mean of the two subtasks' MCCs, (1 − 0.25)/2 = 37.5, is not the paper's number)
    "emp-H3": [(P, "Yes, the sequence shows H3 modification marks.", "Yes, H3 marks are present."),
               (N, "No, there is no evidence of H3 marks.", "No, the sequence is not associated with H3 marks.")],
    "emp-H4": [(P, "The sequence is positive for H4 acetylation.", "Yes, H4 acetylation is present."),
               (N, "Yes, H4 marks are present.", "No H4 acetylation is detected."),
               (P, "I don't know.", "Yes.")],
    # labels T F T F, answers T F F F → TP 1, TN 2, FN 1 → (1·2 − 0)/√(1·2·2·3) = 0.57735
    "pd-prom_300_tata": [(P, "Yes, a promoter region is present.", "Yes, a promoter is present."),
                         (N, "No promoter is detected.", "No promoter region."),
                         (P, "No.", "Yes."),
                         (N, "The sequence does not contain a promoter.", "No.")],
    # both right → 1; the _all task (wrong answer) repeats its parts and stays out of the pooling
    "cpd-prom_core_notata": [(P, "Yes, a core promoter is present.", "Yes."), (N, "No core promoter.", "No.")],
    "cpd-prom_core_all": [(P, "negative", "positive")],
    # tf-h and tf-m apart: tf_h both right → 100; tf_m answers T T F for T F F → TP 1, FP 1, TN 1 → 1/√(2·1·2·1) = 0.5
    "tf-h-0": [(P, "Yes, transcription factor binding sites are present.", "Yes."),
               (N, "No, the sequence is not associated with TF binding.", "No.")],
    "tf-m-1": [(P, "positive", "positive"), (N, "positive", "negative"), (N, "negative", "negative")],
    # answers T F F for T T F → TP 1, FN 1, TN 1 → 1/√(1·2·1·2) = 0.5
    "antibody_antigen": [(P, "Yes, binding is predicted.", "Yes, the antibody binds the antigen."),
                         (P, "The antibody does not bind.", "Yes."),
                         (N, "No.", "No, the antibody does not bind.")],
    # "unlikely" is negative; "Maybe." is invalid → F for its T label; T F F F for T F F T → 0.57735
    "rna_protein_interaction": [(P, "Yes, an interaction is present.", "Yes."), (N, "negative", "No."),
                                (N, "Interaction unlikely.", "No."), (P, "Maybe.", "Yes.")],
    # both wrong → MCC −1
    "promoter_enhancer_interaction": [(P, "negative", "positive"), (N, "positive", "negative")],
    # the first label lists dev first; the order stays (hk, dev). hk: 1 2 3 for 1 2 3 → r = 1 × 3/4;
    # dev: 2.5 1 2 for 3 1 2 × 3/4; the 4th answer has no numbers (invalid)
    "enhancer_activity-e": [
        ('{"dev": 3.0, "hk": 1.0}', "Housekeeping activity 1.0, developmental activity 2.5.", "hk 1.0, dev 3.0"),
        ({"hk": 2.0, "dev": 1.0}, "hk: 2.0; dev: 1.0", "hk 2.0, dev 1.0"),
        ("{'hk': 3.0, 'dev': 2.0}", "3.0 and 2.0", "hk 3.0, dev 2.0"),
        ({"hk": 2.0, "dev": 2.0}, "The activity cannot be quantified.", "hk 2.0, dev 2.0")],
    # r² on the 3 valid × 3/4
    "Isoform-i": [(0.1, "The isoform usage ratio is 0.2.", "0.1"), (0.5, "0.4", "0.5"), (0.9, "About 0.8.", "0.9"),
                  (0.3, "No estimate.", "0.3")],
    # a stray huge number is still a prediction (the paper drops |x| > 1000 only in its Mixed Score)
    "MeanRibosomeLoading-m": [(3.0, "The mean ribosome loading is 3.1.", "3.0"), (5.0, "5.2", "5.0"),
                              (7.0, "7000", "7.0")],
    # ON r = 1, OFF r = −1 → r² = 1; ON_OFF 0 0 1 for 0 1 2 → r² = 0.75; mean (1 + 1 + 0.75)/3 = 0.916667
    "ProgrammableRNASwitches-p": [
        ('{"ON_OFF": 0.0, "OFF": 0.0, "ON": 0.0}', "ON 0.0, OFF 2.0, ON/OFF 0.0", "ON 0.0, OFF 0.0, ON/OFF 0.0"),
        ({"ON": 1.0, "OFF": 1.0, "ON_OFF": 1.0}, "1.0, 1.0, 0.0", "ON 1.0, OFF 1.0, ON/OFF 1.0"),
        ({"ON": 2.0, "OFF": 2.0, "ON_OFF": 2.0}, "2.0 0.0 1.0", "ON 2.0, OFF 2.0, ON/OFF 2.0")],
    # ranks: labels 1 3 2 4, answers 2 3 1 4 → d² = 1 + 0 + 1 + 0 → ρ = 1 − 6·2/(4·15) = 0.8
    "CRISPROnTarget-c": [(0.1, "The on-target efficiency is 0.2.", "0.1"), (0.4, "0.5", "0.4"), (0.2, "0.1", "0.2"),
                         (0.8, "0.9", "0.8")],
    # ρ = −1 on 3 valid × 3/4 = −0.75
    "Stability-s": [(1.0, "The stability score is 3.", "1.0"), (2.0, "2", "2.0"), (3.0, "1", "3.0"),
                    (4.0, "unknown", "4.0")],
    "Fluorescence-f": [(3.2, "3.0", "3.2"), (3.5, "3.6", "3.5"), (3.9, "3.8", "3.9")],  # ρ = 1
    # ranks: labels 1 3 2 4, answers 1 2 3 4 → ρ = 0.8
    "Thermostability-t": [(40.0, "The melting point is 45.5 °C.", "40.0"), (60.0, "58", "60.0"), (50.0, "62", "50.0"),
                          (70.0, "71", "70.0")],
    # plurals and spaces read (miRNAs, 5S rRNA); "Group II intron" names no class → wrong; Intron_gpI is not found
    # inside Intron_gpII → 4/5
    "NoncodingRNAFamily-n": [("tRNA", "The sequence is a tRNA.", "This RNA belongs to the tRNA family."),
                             ("miRNA", "This is one of the miRNAs.", "miRNA"),
                             ("5S_rRNA", "It is a 5S rRNA.", "5S_rRNA"),
                             ("Intron_gpII", "Group II intron.", "Intron_gpII"),
                             ("Intron_gpI", "Intron_gpI", "The family is Intron_gpI.")],
    # soluble / insoluble read whatever the labels' words; "I don't know." invalid → wrong; 2/4
    "Solubility-s": [(P, "The protein is soluble.", "The protein is soluble."),
                     (N, "The protein is insoluble.", "The protein is insoluble."),
                     (P, "The protein is insoluble.", "The protein is predicted to be soluble."),
                     (N, "I don't know.", "The protein is not soluble.")],
    # classes Am, m6A, none (labels); answers [m6A] [none] [Am] and "Psi" (not a label class: invalid, empty)
    # AUC = (1 + TPR − FPR)/2: m6A (1010 vs 1000) 0.75, none (0101 vs 0100) 0.75, Am 1 → 2.5/3 = 0.8333
    "Modification-m": [("m6A", "The sequence has m6A modification sites.", "m6A sites are present."),
                       ("none", "No modifications were detected.", "No modifications were detected."),
                       ("Am,m6A", "Modifications: Am.", "The modifications are Am and m6A."),
                       ("none", "Psi sites are present.", "None.")],
    # vocabulary 1.1.1.1, 2.7.11.1, 3.4.21.4 (labels); 9.9.9.9 is outside it and ignored. Precision over samples
    # with predictions (1, 1) = 1, recall (1, 1/2, 0) = 0.5 → F = 2·1·0.5/1.5 = 0.6667
    "FunctionEC-e": [("EC 2.7.11.1", "The enzyme is EC 2.7.11.1.", "EC 2.7.11.1"),
                     ("EC 1.1.1.1, EC 3.4.21.4", "EC 1.1.1.1 and EC 9.9.9.9", "EC 1.1.1.1, EC 3.4.21.4"),
                     ("EC 1.1.1.1", "No EC number can be assigned.", "The EC number is 1.1.1.1.")],
    # paper A.3.1 (hand-computed in test_metrics.test_sirna_paper_mixed_score): 53.6
    "sirnaEfficiency-s": [(10.0, "The mRNA remaining percentage is 20.", "The remaining percentage is 10.00%."),
                          (25.0, "35%", "25.00%"), (40.0, "28", "40.00%"), (60.0, "unknown", "60.00%"),
                          (80.0, "70.00%", "80.00%")],
}

EXPECTED = {
    "emp": 16.67, "pd": 57.74, "cpd": 100.0, "tf_h": 100.0, "tf_m": 50.0, "antibody_antigen": 50.0,
    "rna_protein_interaction": 57.74, "promoter_enhancer_interaction": -100.0,
    "enhancer_activity_hk": 75.0, "enhancer_activity_dev": round(75 * _r([3, 1, 2], [2.5, 1, 2]), 2),
    "Isoform": round(75 * _r([0.1, 0.5, 0.9], [0.2, 0.4, 0.8]) ** 2, 2),
    "MeanRibosomeLoading": round(100 * _r([3, 5, 7], [3.1, 5.2, 7000]) ** 2, 2),
    "ProgrammableRNASwitches": 91.67, "CRISPROnTarget": 80.0, "Stability": -75.0, "Fluorescence": 100.0,
    "Thermostability": 80.0, "NoncodingRNAFamily": 80.0, "Solubility": 50.0, "Modification": 83.33,
    "FunctionEC": 66.67, "sirnaEfficiency": 53.6,
}  # fmt: skip


def _write_paper_file(path: Path) -> Path:
    with path.open("w") as f:
        for i, (task, cases) in enumerate(CASES.items()):
            for label, answer, reference in cases:
                answer_key = "result" if i % 2 else "model_output"  # the paper's evaluator accepts both
                row = {"task": task, "label": label, answer_key: answer, "output": reference}
                f.write(json.dumps(row) + "\n")  # no `input`: the paper's format does not need one
    return path


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("conformance")
    path = _write_paper_file(tmp / "answers.jsonl")
    mp = pytest.MonkeyPatch()
    try:
        assert cli(mp, tmp, "score", "--predictions", str(path), "--out", str(tmp / "out")) == 0
    finally:
        mp.undo()
    return json.loads((tmp / "out" / "metrics.json").read_text())


def test_every_paper_column_matches_the_hand_computed_value(scored: dict) -> None:
    assert list(EXPECTED) == list(PAPER_COLUMNS)  # the 22 columns, in the contract's order
    assert scored["paper_table"] == EXPECTED
    assert list(scored["paper_table"]) == list(PAPER_COLUMNS)


def test_the_dataset_reference_answers_parse_back(scored: dict) -> None:
    rates = {task: r["reference_parse_rate"] for task, r in scored["tasks"].items()}
    assert rates == dict.fromkeys(CASES, 1.0)


def test_every_task_keeps_its_own_row(scored: dict) -> None:
    assert set(scored["tasks"]) == set(CASES)
    # the _all task is its own row: its one answer is wrong
    assert scored["tasks"]["cpd-prom_core_all"]["accuracy"] == 0.0
    assert scored["tasks"]["emp-H4"]["valid_rate"] == round(2 / 3, 4)  # the hedge is invalid
