"""`omics variant-effect --model DIR --data variants.tsv --out scores.tsv`: zero-shot variant scores.

Each variant's score is llr = alt_ll - ref_ll: the natural-log likelihood of the alt window minus that of
the ref window, each summed over all of the window's tokens after BOS (the tokenizer may split the two
windows differently, so whole windows are compared, never single tokens). llr > 0: the model finds the
alternative more likely than the reference. Windows and indels: see omics/sequence_tools/variants.py.
Every variant is checked before the model loads; scores are written VARIANTS at a time into a hidden file
that becomes --out only when complete.
"""

from __future__ import annotations

import csv
from argparse import Namespace
from itertools import islice

from omics.errors import UserError

VARIANTS = 2048  # variants scored together (their ref and alt windows sorted by length)
SCORE_COLUMNS = ("window", "ref_ll", "alt_ll", "llr")


def run(args: Namespace) -> int:
    from tqdm import tqdm

    from omics.device import default_batch_tokens
    from omics.io import atomic_open, ensure_writable
    from omics.model import load_model, load_tokenizer, require_model_dir
    from omics.sequence_tools.scoring import log_likelihoods
    from omics.sequence_tools.variants import read_variants, references

    ensure_writable(args.out, args.overwrite)
    genomes = references(args.data)  # read once: a genome's FASTA takes minutes
    checked = read_variants(args.data, args.window, genomes)  # every variant checked before the model loads
    first = next(checked, None)
    if first is None:
        raise UserError(f"{args.data}: no variants below the header")
    total, header = 1 + sum(1 for _ in checked), [*first.row, *SCORE_COLUMNS]
    model_dir = require_model_dir(args.model, "Pass a model folder (e.g. archive/models/stage1).")
    model = load_model(model_dir, dtype=args.dtype).eval()
    tokenizer = load_tokenizer(model_dir, chat=False)
    variants = read_variants(args.data, args.window, genomes)
    with (atomic_open(args.out) as handle,
          tqdm(total=2 * total, desc=f"score {args.data.name}", unit="window") as bar):  # ref and alt each
        writer = csv.DictWriter(handle, fieldnames=header, delimiter="\t", lineterminator="\n")
        writer.writeheader()
        while batch := list(islice(variants, VARIANTS)):
            scores = log_likelihoods(model, tokenizer, [w for v in batch for w in (v.ref_window, v.alt_window)],
                                     default_batch_tokens(args.batch_tokens), bar)
            for variant, ref_ll, alt_ll in zip(batch, scores[::2], scores[1::2], strict=True):
                writer.writerow({**variant.row, "window": f"{variant.start}-{variant.end}", "ref_ll": f"{ref_ll:.6f}",
                                 "alt_ll": f"{alt_ll:.6f}", "llr": f"{alt_ll - ref_ll:.6f}"})
    print(f"{total} variants scored into {args.out} (llr = alt_ll - ref_ll, natural log; > 0: alt more likely)")
    return total
