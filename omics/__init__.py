"""omics: ChatMultiOmics (Biology-Instructions) on one GPU, in three stages over one shared core."""

__version__ = "0.1.0"
