"""The evaluator's task registry: a TaskSpec per task, built from the label summaries of the training and
evaluation files, and the paper table's columns with the paper's own values (evaluation.md §2)."""

from __future__ import annotations

import functools
from typing import Any

from omics.families import FAMILIES, THRESHOLDS, family_of, known_family, omics_group
from omics.labels import LabelSummary
from omics.tasktypes import TaskSpec, recognise

# The paper table (evaluation.md §2): column → (family, output key of a multi-output family), in the
# contract's order, and the paper's own values (paper metric ×100; S12 = stages 1+2, S123 = all three).
PAPER_COLUMNS: dict[str, tuple[str, str | None]] = {
    **{f: (f, None) for f in ("emp", "pd", "cpd", "tf_h", "tf_m", "antibody_antigen", "rna_protein_interaction",
                              "promoter_enhancer_interaction")},
    "enhancer_activity_hk": ("enhancer_activity", "hk"),
    "enhancer_activity_dev": ("enhancer_activity", "dev"),
    **{f: (f, None) for f in ("Isoform", "MeanRibosomeLoading", "ProgrammableRNASwitches", "CRISPROnTarget",
                              "Stability", "Fluorescence", "Thermostability", "NoncodingRNAFamily", "Solubility",
                              "Modification", "FunctionEC", "sirnaEfficiency")},
}
PAPER_RESULTS: dict[str, tuple[float, float]] = {  # arXiv 2412.19191, test split (paper-recipe.md)
    "emp": (8.10, 3.64), "pd": (49.01, 58.18), "cpd": (41.18, 44.54), "tf_h": (19.07, 24.45),
    "tf_m": (27.94, 39.91), "antibody_antigen": (10.26, 1.06), "rna_protein_interaction": (70.80, 74.26),
    "promoter_enhancer_interaction": (1.68, 3.37), "enhancer_activity_hk": (59.74, 57.24),
    "enhancer_activity_dev": (46.82, 45.92), "Isoform": (50.68, 59.01), "MeanRibosomeLoading": (29.12, 47.64),
    "ProgrammableRNASwitches": (26.65, 26.57), "CRISPROnTarget": (-2.99, -0.02), "Stability": (56.76, 60.25),
    "Fluorescence": (1.49, 2.57), "Thermostability": (44.59, 45.07), "NoncodingRNAFamily": (62.77, 63.09),
    "Solubility": (62.07, 63.02), "Modification": (57.45, 59.06), "FunctionEC": (19.35, 19.79),
    "sirnaEfficiency": (56.31, 56.25),
}  # fmt: skip


def build_task_specs(
    summary: dict[str, Any], eval_summary: dict[str, Any] | None = None
) -> dict[str, TaskSpec]:
    """TaskSpecs for every task in either summary.

    `summary` is the training file's summary when there is one (else the evaluation file's), and
    `eval_summary` the evaluation file's. Label ranges, class vocabularies (EC numbers included) and
    class words come from both together, so that a perfect prediction always scores 100 and parsing
    knows every name; the baseline comes from `summary` (the training labels) where it has the task.
    Unknown families: numbers → regression (only 0 and 1 → binary), objects of numbers →
    multi_regression, lists or comma-joined strings → multilabel, spellings that all have a
    positive/negative reading (bools, yes/no, soluble/insoluble…) → binary, other strings → multiclass.
    """
    eval_summary = eval_summary or {}
    specs: dict[str, TaskSpec] = {}
    for task in sorted(set(summary) | set(eval_summary)):
        parts = [LabelSummary.from_dict(task, d[task]) for d in (summary, eval_summary) if task in d]
        merged = functools.reduce(LabelSummary.merge, parts)
        family = known_family(task)
        task_type = recognise(merged, family)
        metric, group = FAMILIES[family][1:] if family else (task_type.default_metric, omics_group(merged.tags))
        fields = task_type.describe(merged, family)
        baselines = (task_type.baseline(p, fields, family) for p in parts)
        specs[task] = TaskSpec(
            task=task,
            family=family_of(task),
            type=task_type.name,
            paper_metric=metric,
            threshold=THRESHOLDS.get(family) if family is not None else None,
            omics_group=group,
            baseline=next((b for b in baselines if b is not None), None),
            **fields,
        )
    return specs
