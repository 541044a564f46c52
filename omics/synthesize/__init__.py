"""`omics synthesize`: Stage 3 reasoning data from Stage 2 data, written by a teacher model over the OpenAI API.

select.py picks and keys the lines, prompt.py asks and checks, limits.py paces the requests, files.py keeps the
append-only results a rerun resumes from, run.py drives them.
"""
