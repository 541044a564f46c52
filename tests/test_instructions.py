"""Stages 2-3 examples on the real Llama-3 tokenizer: masking round trip, middle cut, task prefix, reasoning, replay."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest

from omics.config import SYSTEM_PROMPT, TrainConfig
from omics.data.instructions import chat_examples, reasoning_records, sample_replay
from omics.data.packing import IGNORE
from omics.data.validate import DataError, DataReport

BOS, EOT, EOS = 128000, 128009, 128001
SHORTENED = "examples shortened in the middle of their longest sequence"
ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>\n\n"
USER_TURN = re.compile(r"<\|start_header_id\|>user<\|end_header_id\|>\n\n(.*?)<\|eot_id\|>", re.S)


@pytest.fixture(scope="module")
def chat_tokenizer(tiny_model):
    from omics.model import load_tokenizer

    return load_tokenizer(tiny_model, chat=True)


def write_jsonl(path: Path, records: list) -> Path:
    """Records (dicts, or raw strings written as they are) one per line."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records), encoding="utf-8")
    return path


def build(path: Path, tokenizer, **config) -> tuple[list[tuple[list[int], list[int]]], DataReport, dict]:
    report, meta = DataReport(str(path)), {}
    examples = list(chat_examples(path, tokenizer, TrainConfig(**config), report, meta))
    return examples, report, meta


def split(example: tuple[list[int], list[int]]) -> tuple[list[int], list[int]]:
    """(prompt ids, trained ids): the prompt is the masked head, everything after it is trained."""
    ids, labels = example
    head = next(i for i, label in enumerate(labels) if label != IGNORE)
    return ids[:head], ids[head:]


def dna(n: int, seed: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice("ACGT") for _ in range(n))


RECORDS = [
    {"input": "<dna>ACGTTGCAAGGCTTA<dna> Is this DNA sequence GC-rich?",
     "output": "The sequence is negative for high GC content.", "label": "negative", "task": "emp-gcrich"},
    {"input": "What is the GC content of <dna>GGGCCCAT<dna>?", "output": "The GC content is 75.00%.",
     "label": 75.0, "task": "gc_content"},
    {"input": "Is this protein soluble? <protein>MKKLLPTAAAGLLLLAAQPAMA<protein>",
     "output": "Yes, it is predicted to be soluble.", "label": True, "task": "Solubility-x"},
    {"input": "Predict hk and dev activity: <dna>ACGTACGTAC<dna>", "output": "hk 1.25, dev -0.5",
     "label": {"hk": 1.25, "dev": -0.5}, "task": "enhancer_activity-x"},
    {"input": "Which modifications? <rna>ACGUACGUUAGC<rna>", "output": "m6A, pseudouridine",
     "label": ["m6A", "pseudouridine"], "task": "Modification-x"},
    {"input": "Família? ünïcödé «quoted» text\nwith a newline <rna>GGAUCC<rna>",
     "output": "Ünïcode answer: 日本語 — \"quoted\"", "label": "tRNA", "task": "NoncodingRNAFamily-x"},
]


# ------------------------------------------------------------------------------- masking round trip


def test_masking_round_trip(chat_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", RECORDS)
    examples, report, _ = build(path, chat_tokenizer, max_length=512, task_prefix_fraction=0.0)
    assert len(examples) == len(RECORDS)
    assert report.skipped == Counter() and not report.notes
    for record, example in zip(RECORDS, examples, strict=True):
        ids, labels = example
        assert len(ids) == len(labels)
        prompt, trained = split(example)
        # labels are IGNORE exactly on the prompt, and equal the input ids everywhere else
        assert labels == [IGNORE] * len(prompt) + trained
        assert IGNORE not in trained
        # the trained tokens are exactly the output followed by the end-of-turn token
        assert chat_tokenizer.decode(trained, skip_special_tokens=False) == record["output"] + "<|eot_id|>"
        assert trained[-1] == EOT and trained.count(EOT) == 1
        # one BOS, first
        assert ids[0] == BOS and ids.count(BOS) == 1
        # identical prompt ids for training and generation
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": record["input"]}]
        expected = chat_tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
        assert prompt == expected["input_ids"]
        assert chat_tokenizer.decode(prompt).endswith(ASSISTANT_HEADER)


def test_output_whitespace_is_stripped_before_training(chat_tokenizer, tmp_path):
    record = {**RECORDS[0], "output": "  The sequence is negative.\n"}
    examples, _, _ = build(write_jsonl(tmp_path / "t.jsonl", [record]), chat_tokenizer, max_length=512)
    assert chat_tokenizer.decode(split(examples[0])[1]) == "The sequence is negative.<|eot_id|>"


def test_pad_token_is_not_a_stop_token(chat_tokenizer):
    assert chat_tokenizer.pad_token_id is not None
    assert chat_tokenizer.pad_token_id not in (EOT, EOS, chat_tokenizer.eos_token_id)
    assert chat_tokenizer.convert_tokens_to_ids("<|eot_id|>") == EOT
    assert chat_tokenizer.bos_token_id == BOS


def test_custom_system_prompt_is_used(chat_tokenizer, tmp_path):
    examples, _, _ = build(write_jsonl(tmp_path / "t.jsonl", RECORDS[:1]), chat_tokenizer, max_length=512,
                           system_prompt="Answer like a biologist.")
    text = chat_tokenizer.decode(split(examples[0])[0])
    assert "system<|end_header_id|>\n\nAnswer like a biologist.<|eot_id|>" in text
    assert SYSTEM_PROMPT not in text


# ---------------------------------------------------------------------------------------- middle cut


def test_long_example_is_cut_inside_its_longest_sequence(chat_tokenizer, tmp_path):
    long_dna, short_rna = dna(3000, seed=1), "ACGUACGUACGUAAGG"
    question = "Is this sequence GC-rich? Answer briefly."
    record = {"input": f"Look at <rna>{short_rna}<rna> and <dna>{long_dna}<dna> {question}",
              "output": "The sequence is positive for high GC content.", "label": "positive", "task": "emp-gcrich"}
    fits = {**RECORDS[0]}
    examples, report, _ = build(write_jsonl(tmp_path / "t.jsonl", [fits, record]), chat_tokenizer, max_length=256)
    assert len(examples) == 2
    assert report.notes[SHORTENED] == 1
    assert sum(report.skipped.values()) == 0
    ids, _ = examples[1]
    assert len(ids) <= 256
    prompt, trained = split(examples[1])
    assert chat_tokenizer.decode(trained) == record["output"] + "<|eot_id|>"  # the answer fully trained
    text = chat_tokenizer.decode(prompt)
    assert ids[0] == BOS and ids.count(BOS) == 1
    # the end of the prompt is intact: the question after the sequence, end of turn, assistant header
    assert text.endswith(f"<dna> {question}<|eot_id|>{ASSISTANT_HEADER}")
    user = USER_TURN.search(text).group(1)
    kept = re.search(r"<dna>(.*)<dna>", user).group(1)
    # the cut is inside the long sequence (its two ends kept), the other sequence is untouched
    assert user.startswith(f"Look at <rna>{short_rna}<rna> and <dna>")
    assert 16 <= len(kept) < len(long_dna)
    head = len(kept) // 2
    assert long_dna.startswith(kept[:head]) and long_dna.endswith(kept[head:])
    # the prompt is the chat-template prompt of the shortened question
    messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]
    assert prompt == chat_tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                        tokenize=True)["input_ids"]


def test_example_no_sequence_cut_can_fit_is_shortened_never_dropped(chat_tokenizer, tmp_path):
    """No tagged sequence: the question's middle goes; an answer that alone fills max_length loses its middle
    too (half the room each); several sequences are cut in turn. Every example is kept and counted per task."""
    untagged = {"input": "Describe this: " + "word " * 400 + "Answer briefly.", "output": "ok", "label": "positive",
                "task": "emp-x"}
    long_answer = {"input": "<dna>ACGT<dna> Explain.", "output": "long " * 400 + "The end.", "label": "negative",
                   "task": "emp-x"}
    many = {"input": " and ".join(f"<dna>{dna(300, i)}<dna>" for i in range(6)) + " Explain.", "output": "ok",
            "label": "negative", "task": "emp-y"}
    path = write_jsonl(tmp_path / "t.jsonl", [RECORDS[0], untagged, RECORDS[1], long_answer, many])
    examples, report, _ = build(path, chat_tokenizer, max_length=256)
    assert len(examples) == 5 and not report.skipped
    assert all(len(ids) <= 256 for ids, _ in examples)
    prompt, trained = split(examples[1])
    assert chat_tokenizer.decode(prompt).endswith(f"Answer briefly.<|eot_id|>{ASSISTANT_HEADER}")
    assert chat_tokenizer.decode(trained) == "ok<|eot_id|>"
    prompt, trained = split(examples[3])
    assert chat_tokenizer.decode(prompt).endswith(f"Explain.<|eot_id|>{ASSISTANT_HEADER}")
    answer = chat_tokenizer.decode(trained)
    assert answer.startswith("long long") and answer.endswith("The end.<|eot_id|>") and len(trained) > 64
    assert "Explain.<|eot_id|>" in chat_tokenizer.decode(split(examples[4])[0])
    assert report.shortened == {"emp-x": {"question": 1, "answer": 1}, "emp-y": {"sequence": 1}}
    assert report.to_dict()["shortened"] == {"emp-x": {"question": 1, "answer": 1}, "emp-y": {"sequence": 1}}


def test_max_length_below_the_fixed_prompt_is_refused(chat_tokenizer, tmp_path):
    with pytest.raises(DataError, match="max_length=16 leaves no room.*system prompt"):
        build(write_jsonl(tmp_path / "t.jsonl", RECORDS[:1]), chat_tokenizer, max_length=16)


# --------------------------------------------------------------------------------------- task prefix

LABELS = [("num", 3.5, "Regression"), ("int", 7, "Regression"), ("obj", {"a": 1.0, "b": 2.0}, "Regression"),
          ("bool", False, "Classification"), ("str", "positive", "Classification"),
          ("list", ["x", "y"], "Classification")]


def prefix_records(n: int) -> list[dict]:
    records = []
    for i in range(n):
        task, label, _ = LABELS[i % len(LABELS)]
        records.append({"input": f"Question {i} about <dna>{dna(12, i)}<dna>?", "output": f"Answer {i}.",
                        "label": label, "task": f"task_{task}"})
    return records


def user_turns(tokenizer, examples) -> list[str]:
    return [USER_TURN.search(tokenizer.decode(split(e)[0])).group(1) for e in examples]


@pytest.fixture(scope="module")
def prefix_file(tmp_path_factory) -> tuple[Path, list[dict]]:
    records = prefix_records(200)
    return write_jsonl(tmp_path_factory.mktemp("prefix") / "train.jsonl", records), records


def test_task_prefix_everywhere(chat_tokenizer, prefix_file):
    path, records = prefix_file
    examples, _, meta = build(path, chat_tokenizer, max_length=256, task_prefix_fraction=1.0)
    kinds = {f"task_{task}": kind for task, _, kind in LABELS}
    for record, user in zip(records, user_turns(chat_tokenizer, examples), strict=True):
        assert user == f"[{kinds[record['task']]}: {record['task']}] {record['input']}"
    # the task summary is filled per task whatever the prefix
    summary = meta["task_summary"]
    assert set(summary) == set(kinds)
    assert all(summary[task]["n"] == 200 // 6 + (i < 200 % 6) for i, task in enumerate(kinds))


def test_task_prefix_nowhere(chat_tokenizer, prefix_file):
    path, records = prefix_file
    examples, _, _ = build(path, chat_tokenizer, max_length=256, task_prefix_fraction=0.0)
    assert user_turns(chat_tokenizer, examples) == [r["input"] for r in records]


def test_task_prefix_fraction_and_determinism(chat_tokenizer, prefix_file):
    path, records = prefix_file
    runs = [user_turns(chat_tokenizer, build(path, chat_tokenizer, max_length=256, task_prefix_fraction=0.3)[0])
            for _ in range(2)]
    assert runs[0] == runs[1]
    prefixed = [u.startswith(("[Regression: ", "[Classification: ")) for u in runs[0]]
    assert 0.2 <= sum(prefixed) / len(records) <= 0.4
    for record, user, has in zip(records, runs[0], prefixed, strict=True):
        assert user.endswith(record["input"]) and (user == record["input"]) != has


def test_task_summary_per_task(chat_tokenizer, tmp_path):
    records = [
        {"input": "q <dna>ACGT<dna>", "output": "12.5", "label": 12.5, "task": "reg"},
        {"input": "q <dna>ACGT<dna>", "output": "-3", "label": -3, "task": "reg"},
        {"input": "q <dna>ACGT<dna>", "output": "40", "label": 40, "task": "reg"},
        {"input": "q <rna>ACGU<rna>", "output": "tRNA", "label": "tRNA", "task": "cls"},
        {"input": "q <rna>ACGU<rna>", "output": "rRNA", "label": "rRNA", "task": "cls"},
    ]
    _, _, meta = build(write_jsonl(tmp_path / "t.jsonl", records), chat_tokenizer, max_length=256)
    summary = meta["task_summary"]
    assert set(summary) == {"reg", "cls"}
    assert summary["reg"]["n"] == 3 and (summary["reg"]["min"], summary["reg"]["max"]) == (-3, 40)
    assert summary["cls"]["n"] == 2 and set(summary["cls"]["classes"]) == {"tRNA", "rRNA"}
    assert json.loads(json.dumps(summary)) == summary  # stored in data_report.json


def test_label_type_conflicting_with_its_task_is_reported_by_line(chat_tokenizer, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [
        {"input": "q1 <dna>ACGT<dna>", "output": "12.5", "label": 12.5, "task": "reg"},
        {"input": "q2 <dna>ACGT<dna>", "output": "3", "label": 3, "task": "reg"},
        {"input": "q3 <dna>ACGT<dna>", "output": "a 1, b 2", "label": {"a": 1.0, "b": 2.0}, "task": "reg"},
        {"input": "q4 <dna>ACGT<dna>", "output": "7", "label": 7, "task": "reg"},
    ])
    try:
        examples, report, _ = build(path, chat_tokenizer, max_length=256)
    except ValueError as err:  # refusing the file is fine too, if the message says where
        assert f"{path}:3" in str(err)
    else:
        assert len(examples) == 3
        assert [n for lines in report.examples.values() for n in lines] == [3]


# ---------------------------------------------------------------------------------- Stage 3 reasoning

REASONING_OUTPUTS = {
    1: "<reasoning>41 of 62 bases are G or C.</reasoning> <answer>The sequence is GC-rich.</answer>",
    2: "The sequence is GC-rich.",  # missing tags
    3: "<reasoning>41 of 62 bases are G or C.</reasoning> <answer>The sequence is GC-rich.",  # unclosed
    4: "<reasoning>outer <reasoning>inner</reasoning></reasoning> <answer>GC-rich.</answer>",  # nested
    5: "<reasoning>41 of 62.</reasoning> <answer>GC-rich.</answer> And some text after it.",  # extra text
    6: "\n <reasoning>Counted.\nTwo lines.</reasoning>\n<answer>Not GC-rich.</answer> ",  # well-formed
    7: "<answer>GC-rich.</answer> <reasoning>backwards</reasoning>",  # wrong order
}
WELL_FORMED = [1, 6]


@pytest.fixture
def reasoning_file(tmp_path) -> Path:
    return write_jsonl(tmp_path / "reasoning.jsonl", [
        {"input": f"Is <dna>{dna(20, n)}<dna> GC-rich?", "output": out, "label": "positive", "task": "emp-gcrich"}
        for n, out in REASONING_OUTPUTS.items()])


def test_reasoning_skip(reasoning_file):
    report = DataReport(str(reasoning_file))
    kept = reasoning_records(reasoning_file, report, TrainConfig(on_bad_reasoning="skip"))
    assert [r["line"] for r in kept] == WELL_FORMED
    bad = sorted(set(REASONING_OUTPUTS) - set(WELL_FORMED))
    assert sum(report.skipped.values()) == len(bad)
    assert sorted(n for lines in report.examples.values() for n in lines) == bad
    assert "reasoning" in report.summary()


def test_reasoning_skip_report_accounts_each_line_once(reasoning_file):
    report = DataReport(str(reasoning_file))
    kept = reasoning_records(reasoning_file, report, TrainConfig(on_bad_reasoning="skip"))
    assert report.valid == len(kept)
    assert report.valid + sum(report.skipped.values()) == report.lines - report.blank


def test_reasoning_keep(reasoning_file):
    report = DataReport(str(reasoning_file))
    kept = reasoning_records(reasoning_file, report, TrainConfig(on_bad_reasoning="keep"))
    assert [r["line"] for r in kept] == sorted(REASONING_OUTPUTS)
    assert [r["output"] for r in kept] == list(REASONING_OUTPUTS.values())
    assert sum(report.skipped.values()) == 0
    assert sum(report.notes.values()) == len(REASONING_OUTPUTS) - len(WELL_FORMED)


def test_reasoning_stop_names_file_and_line(reasoning_file):
    with pytest.raises(DataError) as err:
        reasoning_records(reasoning_file, DataReport(str(reasoning_file)), TrainConfig(on_bad_reasoning="stop"))
    assert f"{reasoning_file}:2:" in str(err.value)
    assert "on_bad_reasoning" in str(err.value)


def test_reasoning_all_bad_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "r.jsonl", [{"input": "q", "output": "no tags", "label": 1, "task": "t"}] * 3)
    with pytest.raises(DataError, match=r"no valid example in 3 lines[\s\S]*reasoning"):
        reasoning_records(path, DataReport(str(path)), TrainConfig())


def test_reasoning_examples_train_the_whole_tagged_output(chat_tokenizer, reasoning_file):
    config = TrainConfig(max_length=256)
    report, meta = DataReport(str(reasoning_file)), {}
    records = reasoning_records(reasoning_file, report, config)
    examples = list(chat_examples(reasoning_file, chat_tokenizer, config, report, meta, records=iter(records)))
    assert [chat_tokenizer.decode(split(e)[1]) for e in examples] == [
        REASONING_OUTPUTS[n].strip() + "<|eot_id|>" for n in WELL_FORMED]


# ---------------------------------------------------------------------------------------------- replay


@pytest.fixture
def replay_file(tmp_path) -> tuple[Path, list[dict]]:
    records = [{"input": f"replay question {i}", "output": f"answer {i}", "label": i, "task": "replay_task"}
               for i in range(1, 51)]
    return write_jsonl(tmp_path / "replay.jsonl", records), records


@pytest.mark.parametrize(("ratio", "reasoning"), [(1.0, 7), (0.5, 7), (0.3, 20), (2.0, 4)])
def test_sample_replay_count(replay_file, ratio, reasoning):
    path, records = replay_file
    count = round(ratio * reasoning)
    report = DataReport(str(path))
    drawn = sample_replay(path, count, report, TrainConfig(replay_ratio=ratio))
    assert len(drawn) == count
    by_input = {r["input"]: r for r in records}
    lines = []
    for record in drawn:
        original = by_input[record["input"]]
        assert {k: record[k] for k in ("input", "output", "label", "task")} == original
        line = int(record["line"].removeprefix("replay:"))
        assert record["line"] == f"replay:{line}" and records[line - 1] == original
        lines.append(line)
    assert len(set(lines)) == count  # drawn without replacement
    assert report.valid == len(records)  # one pass over the whole file


def test_sample_replay_is_deterministic_with_the_seed(replay_file):
    path, _ = replay_file

    def draw(seed: int) -> list[str]:
        return [r["line"] for r in sample_replay(path, 10, DataReport(str(path)), TrainConfig(seed=seed))]

    assert draw(1) == draw(1)
    assert draw(1) != draw(2)


def test_sample_replay_short_file_returns_everything(tmp_path):
    records = [{"input": f"q{i}", "output": f"a{i}", "label": "yes", "task": "t"} for i in range(5)]
    path = write_jsonl(tmp_path / "short.jsonl", records)
    drawn = sample_replay(path, 12, DataReport(str(path)), TrainConfig())
    assert sorted(r["input"] for r in drawn) == sorted(r["input"] for r in records)


def test_sample_replay_zero(replay_file):
    path, _ = replay_file
    assert sample_replay(path, 0, DataReport(str(path)), TrainConfig()) == []


def test_sample_replay_is_uniform(replay_file):
    """Over many seeds every line is drawn about count/n of the time, the last ones included."""
    path, records = replay_file
    picks = Counter()
    seeds = 300
    for seed in range(seeds):
        picks.update(r["line"] for r in sample_replay(path, 10, DataReport(str(path)), TrainConfig(seed=seed)))
    expected = seeds * 10 / len(records)  # 60
    assert len(picks) == len(records)
    assert all(0.5 * expected < c < 1.5 * expected for c in picks.values()), picks


def test_sample_replay_skips_bad_lines(tmp_path):
    path = write_jsonl(tmp_path / "replay.jsonl", [
        {"input": "q1", "output": "a1", "label": 1, "task": "t"}, "{not json",
        {"input": "q3", "output": "a3", "task": "t"}, {"input": "q4", "output": "a4", "label": 4, "task": "t"}])
    report = DataReport(str(path))
    drawn = sample_replay(path, 5, report, TrainConfig())
    assert sorted(r["line"] for r in drawn) == ["replay:1", "replay:4"]
    assert sorted(n for lines in report.examples.values() for n in lines) == [2, 3]


def test_prompt_encoder_equals_whole_prompt_tokenisation(tiny_model):
    """The fast path (fixed parts tokenised once) gives exactly the ids of tokenising the rendered prompt."""
    from omics.config import SYSTEM_PROMPT
    from omics.data.instructions import PromptEncoder, prompt_text
    from omics.model import load_tokenizer

    tokenizer = load_tokenizer(tiny_model, chat=True)
    from helpers import SAMPLES

    questions = [json.loads(line)["input"] for name in ("stage2_train.jsonl", "stage3_train.jsonl")
                 for line in (SAMPLES / name).read_text().splitlines()[:300]]
    questions += ["  padded question  ", "\\nstarts with a newline", "[Regression: gc] 42 is it?", "7 bases",
                  "<dna>ACGT<dna>", "ends with newline\\n", "'s apostrophe first", "tab\\tinside"]
    for system in (SYSTEM_PROMPT, "Short system."):
        encode = PromptEncoder(tokenizer, system)
        whole = tokenizer([prompt_text(tokenizer, q, system) for q in questions], add_special_tokens=False)
        assert encode(questions) == whole["input_ids"]
