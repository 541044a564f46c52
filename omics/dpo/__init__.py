"""Preference tuning (DPO) as a stage: `omics dpo train|evaluate`, its folders and config like every stage's."""
