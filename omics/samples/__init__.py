"""Bundled demo data (regenerate with `python -m omics.samples.make_samples`)."""
