"""`omics vocab build`: learn the merges, write the tokenizer, resize the base model with mean-initialised rows."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from omics.data.packing import file_sha256, model_fingerprint
from omics.errors import UserError
from omics.io import write_json, write_text
from omics.model import load_tokenizer, new_vocabulary_rows, require_model_dir, save_trained
from omics.model_card import ModelCard
from omics.vocab.learn import GROUPS, TextGuard, extend_spec, learn_merges, sample_sequences
from omics.vocab.report import file_sequences, markdown, stage1_tokens, stage2_tokens, text_check, tokens_per_molecule

log = logging.getLogger("omics")
REPORT = "vocab_report"


def extended_tokenizer(base: PreTrainedTokenizerBase, spec: dict) -> PreTrainedTokenizerBase:
    """The base tokenizer (its special tokens, pad, settings) with `spec` as its tokenizer.json, loaded the way
    any user loads it: AutoTokenizer on a folder."""
    with tempfile.TemporaryDirectory() as folder:
        base.save_pretrained(folder)
        write_text(Path(folder) / "tokenizer.json", json.dumps(spec, ensure_ascii=False))
        return AutoTokenizer.from_pretrained(folder)


def mean_rows(model: PreTrainedModel, base: PreTrainedTokenizerBase, new_ids: dict[str, int], size: int) -> None:
    """Resize the embedding and output matrices to `size` rows; each new token's rows are the mean of the rows of
    the base tokenizer's pieces of its text (a tied matrix is set once)."""
    model.resize_token_embeddings(size, mean_resizing=False)
    pieces = {token_id: base(base.convert_tokens_to_string([token]), add_special_tokens=False)["input_ids"]
              for token, token_id in new_ids.items()}
    with torch.no_grad():
        matrices = (model.get_input_embeddings(), model.get_output_embeddings())
        for weight in {matrix.weight.data_ptr(): matrix.weight for matrix in matrices}.values():
            for token_id, ids in pieces.items():
                weight[token_id] = weight[ids].float().mean(dim=0).to(weight.dtype)


def build(data: Path, out: Path, base_dir: Path, sizes: dict[str, int], sample_mb: float,
          eval_data: Path | None = None, stage2_data: Path | None = None) -> dict[str, Any]:
    """Learn `sizes[group]` new tokens per molecule group on `data`, save the extended base model to `out` and
    its report (vocab_report.json/.md) beside it; returns the report."""
    started = time.time()
    base_dir = require_model_dir(base_dir, "Pass --base-model DIR (the model Stage 1 would start from).")
    base = load_tokenizer(base_dir, chat=False)
    sample, data_report = sample_sequences(data, int(sample_mb * 2**20))
    if not any(sample.learn.values()):
        raise UserError(f"{data}: --sample-mb {sample_mb} sampled none of its {data_report.valid} sequences; "
                        "raise --sample-mb")
    guard = TextGuard(base)
    merges = {group: learn_merges(base, sample.learn[group], sizes[group], guard) for group in GROUPS}
    spec = json.loads(base.backend_tokenizer.to_str())
    spec, new_ids = extend_spec(spec, [merge for group in GROUPS for merge in merges[group]])
    tokenizer = extended_tokenizer(base, spec)
    pair = {"before": base, "after": tokenizer}
    vocabulary = {"before": len(base), "after": len(tokenizer), "added": len(new_ids),
                  "first_new_id": len(base), "merges": sum(map(len, merges.values())),
                  **{group: sum(left + right in new_ids for left, right in merges[group]) for group in GROUPS}}
    for group in GROUPS:
        if vocabulary[group] < sizes[group]:
            log.warning("%s: %d new %s tokens, not %d: no pair of tokens left that the sample holds twice",
                        data, vocabulary[group], group, sizes[group])
    report = {
        "base_model": str(base_dir), "data": {"path": str(data), "sha256": file_sha256(data)},
        "vocabulary": vocabulary, "sample": {"rate": round(sample.rate, 6), "residues": dict(sample.sampled_residues),
                                             "file_residues": dict(sample.file_residues)},
        "heldout": tokens_per_molecule(pair, sample.heldout),
        "eval_data": tokens_per_molecule(pair, file_sequences(eval_data)) if eval_data else None,
        "stage2_tokens": stage2_tokens(stage2_data, pair) if stage2_data else None,
        "text_check": text_check(pair, list(new_ids), guard),
    }
    report["stage1_tokens"] = stage1_tokens(sample.file_residues, report["heldout"] or report["eval_data"] or {})
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype="auto")  # resized in the dtype it is stored in
    mean_rows(model, base, new_ids, len(tokenizer))
    card = ModelCard(stage="vocab", base_model={"path": str(base_dir.resolve()), "fingerprint": model_fingerprint(
        base_dir)}, vocabulary={"base_vocabulary": len(base),  # a vocab folder's own untrained rows stay listed
                                "new_token_ids": sorted([*new_vocabulary_rows(base_dir), *new_ids.values()]),
                                "merges": vocabulary["merges"], "data": report["data"]})
    save_trained(model, tokenizer, out, card=card)
    report["seconds"] = round(time.time() - started, 1)
    write_json(out / f"{REPORT}.json", report)
    text = markdown(report)
    write_text(out / f"{REPORT}.md", text)
    print(text)
    return report
