"""`stageN train --dry-run`: its loss marks are the trainer's label masks, its step and token counts a real run's,
and it writes nothing into the run folders, even beside a finished run."""

from __future__ import annotations

import contextlib
import io
import json
import random
import re
from itertools import groupby
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import SAMPLES, cli, head

from omics.data.packing import IGNORE, PackedCollator
from omics.dryrun import LOSS_COLOUR, Preview, render

SETTINGS = [f"--set={item}" for item in (
    "max_length=128", "micro_batch_size=4", "grad_accum=3", "epochs=1", "max_steps=-1", "save_steps=1000",
    "logging_steps=1", "lora_r=4", "lora_alpha=8", "gradient_checkpointing=false")]
SHOWN = 3


def train_lines() -> list[str]:
    """40 sample lines after a copy of the second with a sequence too long for max_length (so it is shortened)."""
    lines = head("stage2_train.jsonl", 40)
    record = json.loads(lines[1])
    sequence = record["input"].split("<dna>")[1]
    record["input"] = record["input"].replace(sequence, "".join(random.Random(0).choices("ACGT", k=600)))
    return [json.dumps(record), *lines]


def tree(root: Path) -> dict[str, tuple[int, int]]:
    """Every path under `root` (the data cache aside) with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
            if "cache" not in p.relative_to(root).parts}


@pytest.fixture(scope="module")
def run(tiny_model, tmp_path_factory):
    """A real one-epoch Stage 2 run, then a dry run of the same command over its finished folders."""
    root = tmp_path_factory.mktemp("dryrun")
    (root / "train.jsonl").write_text("\n".join(train_lines()) + "\n", encoding="utf-8")
    command = ["stage2", "train", "--data", "train.jsonl", "--base-model", str(tiny_model), "--output-dir",
               "models/stage2", "--metrics-dir", "metrics/stage2", *SETTINGS]
    with pytest.MonkeyPatch.context() as mp:
        assert cli(mp, root, *command) == 0
        before = tree(root)
        out = io.StringIO()  # capsys is function-scoped
        with contextlib.redirect_stdout(out):
            code = cli(mp, root, *command, "--dry-run", str(SHOWN))
    return SimpleNamespace(root=root, code=code, out=out.getvalue(), before=before, after=tree(root),
                           summary=json.loads((root / "metrics/stage2/run_summary.json").read_text()))


def printed_examples(out: str) -> list[str]:
    """The rendered examples of a dry run's output, in order."""
    body = out.split("== the whole file")[0]
    return [chunk[chunk.index("<|begin_of_text|>"):].strip("\n") for chunk in body.split("\n-- example ")[1:]]


def rendered(tokenizer, ids: list[int], loss: list[bool]) -> str:
    runs = groupby(zip(ids, loss, strict=True), key=lambda pair: pair[1])
    return "".join(f"[[{text}]]" if marked else text for marked, run in runs
                   for text in [tokenizer.decode([i for i, _ in run], clean_up_tokenization_spaces=False)])


def test_dry_run_writes_nothing_beside_a_finished_run(run):
    assert run.code == 0
    assert run.after == run.before
    assert "read from the cache" in run.out  # the finished run's tokenised data, not tokenised again


def test_loss_marks_are_the_trainers_label_masks(run, tiny_model):
    """Each printed example equals, marks included, an example of the blocks the real run trained on, collated
    by the trainer's collator; they are the file's first examples, the first one shortened."""
    from omics.config import load_config
    from omics.model import load_tokenizer
    from omics.paths import cache_dir, default_config
    from omics.stage2.train import STAGE
    from omics.train import build_dataset

    tokenizer = load_tokenizer(tiny_model, chat=True)
    config = load_config(default_config(2), [item.removeprefix("--set=") for item in SETTINGS])
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(run.root)  # the real run's cached blocks: what it trained on
        blocks, _ = build_dataset(STAGE, run.root / "train.jsonl", tokenizer, config, {},
                                  cache_dir(Path("models/stage2")))
    batch = PackedCollator(tokenizer.pad_token_id)(list(blocks))
    trained = set()
    for row, block in enumerate(blocks):
        start = 0
        for length in block["lengths"]:
            span = slice(start, start + length)
            ids, labels = batch["input_ids"][row, span].tolist(), batch["labels"][row, span]
            trained.add(rendered(tokenizer, ids, (labels != IGNORE).tolist()))
            start += length
    shown = printed_examples(run.out)
    assert len(shown) == SHOWN
    assert all(example in trained for example in shown)
    questions = [json.loads(line)["input"] for line in train_lines()[1:SHOWN]]
    assert all(question in example for question, example in zip(questions, shown[1:], strict=True))
    assert shown[2].endswith("[[The sequence is positive for high GC content.<|eot_id|>]]")
    first = run.out.split("\n-- example 2")[0]
    assert "examples shortened in the middle of their longest sequence" in first
    assert re.search(r"prompt: [\d,]+ → \d+ tokens \([\d,]+ cut from token \d+ on\)", first)


def test_steps_and_tokens_are_a_real_runs(run):
    steps, tokens = re.search(r"schedule: ([\d,]+) optimizer steps .*?, ([\d,]+) tokens trained", run.out).groups()
    assert int(steps.replace(",", "")) == run.summary["steps"]
    assert int(tokens.replace(",", "")) == run.summary["tokens_seen"]
    assert run.summary["steps"] > 1


@pytest.mark.parametrize("stage, data", [
    (1, ["--data", str(SAMPLES / "stage1_train.txt")]),
    (2, ["--data", str(SAMPLES / "stage2_train.jsonl")]),
    (3, ["--data", str(SAMPLES / "stage3_train.jsonl"), "--replay-data", str(SAMPLES / "stage2_train.jsonl")]),
])
def test_every_stage_dry_runs_on_the_bundled_samples(stage, data, tiny_model, tmp_path, monkeypatch, capsys):
    code = cli(monkeypatch, tmp_path, f"stage{stage}", "train", *data, "--base-model", str(tiny_model),
               "--output-dir", "models", "--metrics-dir", "metrics", "--set", "max_length=128", "--dry-run", "1")
    out = capsys.readouterr().out
    assert code == 0
    assert not (tmp_path / "models").exists() and not (tmp_path / "metrics").exists()
    assert not list(tmp_path.glob(".*lock"))
    example = printed_examples(out)[0]
    if stage == 1:  # loss on every token but the first
        assert example.startswith("<|begin_of_text|>[[") and example.endswith("]]") and example.count("[[") == 1
    else:  # loss on the answer and its end of turn only
        assert example.count("[[") == 1 and example.endswith("<|eot_id|>]]")
        assert "<|start_header_id|>assistant<|end_header_id|>\n\n[[" in example
    for line in ("token lengths of the", "packing: ", "schedule: ", "trainable parameters (", "memory: peak "):
        assert line in out


def test_colour_on_a_terminal(tokenizer):
    preview = Preview([tokenizer.bos_token_id, 32, 33], [False, True, True], [], {})
    assert render(tokenizer, preview, colour=True) == f"<|begin_of_text|>{LOSS_COLOUR}AB\033[0m"
    assert render(tokenizer, preview, colour=False) == "<|begin_of_text|>[[AB]]"
