"""The paper's task families (evaluation.md §2): each family's task type, paper metric and omics group, and the
family of a task id. Plain data and string functions, cheap for every layer to import; the type names are
those of omics.tasktypes."""

from __future__ import annotations

import re

# family (task id prefix) → (type, paper metric, omics group), from evaluation.md §2 and the paper.
FAMILIES: dict[str, tuple[str, str, str]] = {
    "emp": ("binary", "MCC", "DNA"),
    "pd": ("binary", "MCC", "DNA"),
    "cpd": ("binary", "MCC", "DNA"),
    "tf_h": ("binary", "MCC", "DNA"),
    "tf_m": ("binary", "MCC", "DNA"),
    "antibody_antigen": ("binary", "MCC", "multi-molecule"),
    "rna_protein_interaction": ("binary", "MCC", "multi-molecule"),
    "promoter_enhancer_interaction": ("binary", "MCC", "multi-molecule"),
    "enhancer_activity": ("multi_regression", "PCC", "DNA"),
    "Isoform": ("regression", "R2", "RNA"),
    "MeanRibosomeLoading": ("regression", "R2", "RNA"),
    "ProgrammableRNASwitches": ("multi_regression", "mean_R2", "RNA"),
    "CRISPROnTarget": ("regression", "Spearman", "RNA"),
    "Stability": ("regression", "Spearman", "protein"),
    "Fluorescence": ("regression", "Spearman", "protein"),
    "Thermostability": ("regression", "Spearman", "protein"),
    "NoncodingRNAFamily": ("multiclass", "accuracy", "RNA"),
    "Solubility": ("binary", "accuracy", "protein"),
    "Modification": ("multilabel", "macro_AUC", "RNA"),
    "FunctionEC": ("multilabel", "Fmax", "protein"),
    "sirnaEfficiency": ("regression", "mixed_score", "multi-molecule"),
}
_FAMILY_LOOKUP = {name.lower(): name for name in FAMILIES}
# the paper's evaluator renames these before cutting the family off, so tf-h-0 and tf-m-1 stay apart
_FAMILY_RENAMES = re.compile(r"^tf-([hm])", re.I)
THRESHOLDS = {"sirnaEfficiency": 30.0}  # paper A.3.1: positive = remaining mRNA below 30 %
# the paper's multi-output tasks state their numbers in this order, whatever a label's JSON key order
FIXED_KEYS = {"enhancer_activity": ["hk", "dev"], "ProgrammableRNASwitches": ["ON", "OFF", "ON_OFF"]}
EC_FAMILY = "FunctionEC"  # its labels and answers are EC numbers, not class names
ALL_SUFFIX = "_all"  # task ids ending so repeat their parts: own row, left out of the paper table's pooling
_TAG_GROUP = {"dna": "DNA", "rna": "RNA", "protein": "protein"}


def family_of(task: str) -> str:
    """`emp-H3` → `emp`, `tf-h-0` → `tf_h`: the id before the first `-`, after the paper's tf-h/tf-m renames."""
    return _FAMILY_RENAMES.sub(lambda m: f"{m.group()[:2]}_{m.group(1)}", task).split("-", 1)[0]


def known_family(task: str) -> str | None:
    """The registry's spelling of the task's family, matched case-insensitively; None if not a known one."""
    return _FAMILY_LOOKUP.get(family_of(task).lower())


def pooled_family(task: str) -> str | None:
    """The paper-table family a task's examples are pooled into; None for unknown families and `*_all` tasks."""
    return None if task.endswith(ALL_SUFFIX) else known_family(task)


def omics_group(tags: set[str]) -> str:
    """The omics group of an unknown family's task, from the sequence tags its questions use."""
    groups = {_TAG_GROUP[t] for t in tags}
    if not groups:
        return "unknown"
    return groups.pop() if len(groups) == 1 else "multi-molecule"
