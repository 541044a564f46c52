"""`omics synthesize`: see omics/synthesize/ (a package of its own: selection, prompt, pacing, files)."""

from omics.synthesize.run import run

__all__ = ["run"]
