"""GRPO: reinforcement tuning on the rewards the evaluation computes (omics.rewards), with TRL's GRPOTrainer."""
