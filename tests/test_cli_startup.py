"""The command line as a user meets it: fast start without torch, --version, --help texts, no third-party noise."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from omics.cli import build_parser, main
from omics.device import use_cuda

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def python(code: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=300)


def test_help_score_and_compare_import_neither_torch_nor_transformers(tmp_path):
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(row) + "\n" for row in (
        {"task": "emp-x", "label": "positive", "model_output": "yes"},
        {"task": "emp-x", "label": "negative", "model_output": "no"})))
    commands = [["--help"], ["stage2", "train", "--help"]]
    commands += [["score", "--predictions", str(answers), "--out", str(tmp_path / f"stage{s}")] for s in (2, 3)]
    commands += [["compare", "--stages", "2", "3", "--metrics-root", str(tmp_path)]]
    code = ("import json, sys\nimport omics.cli\nfor argv in json.loads(sys.argv[1]):\n"
            "    try:\n        assert omics.cli.main(argv) == 0, argv\n    except SystemExit as done:\n"
            "        assert done.code == 0, argv\n"
            "    print('imported after', argv[0], sorted({'torch', 'transformers'} & set(sys.modules)))")
    done = python(code, json.dumps(commands))
    assert done.returncode == 0, done.stderr
    imported = [line for line in done.stdout.splitlines() if line.startswith("imported after")]
    assert imported == [f"imported after {name} []" for name in ("--help", "stage2", "score", "score", "compare")]
    assert (tmp_path / "comparison.md").is_file()  # compare really ran


def test_version_names_the_release_and_the_checkouts_commit():
    done = subprocess.run([sys.executable, "-m", "omics.cli", "--version"], capture_output=True, text=True, env=ENV)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert done.returncode == 0
    assert re.fullmatch(r"omics \d+\.\d+\.\d+\S* \(git [0-9a-f]{12}\)\n", done.stdout), done.stdout
    assert done.stdout.split("git ")[1][:12] == commit[:12]


def subcommands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every command line of the parser tree, with its parser: ('stage2', 'train'), ('score',), …"""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from subcommands(sub, (*prefix, name))


def test_every_help_shows_its_defaults_and_one_example(capsys):
    checked = 0
    for command, parser in subcommands(build_parser()):
        with pytest.raises(SystemExit):
            main([*command, "--help"])
        text = capsys.readouterr().out
        assert re.search(r"\nexample:\n  omics \S", text), command
        defaults = [a for a in parser._actions if a.option_strings and a.default not in (None, False, [])
                    and a.default is not argparse.SUPPRESS]
        for action in defaults:  # each option with a default says it, in its text or as "(default: …)"
            options = "\n" + text.split("\noptions:\n")[1]
            line = options[options.index(f"\n  {action.option_strings[0]}"):].split("\n  -")[1]
            assert "default" in line, (command, action.option_strings)
        checked += len(defaults)
    assert checked > 50  # the tree was walked (stage train/evaluate, bench, generate, …)


def test_third_party_notices_only_with_verbose(tiny_model, tmp_path):
    """A real model command, as a user runs it and with --verbose (two fresh processes, side by side: libraries
    print some notices once per process): the tokenizer's and torchao's notices, library deprecation warnings and
    the one-GPU line on a CPU-only machine only show with --verbose."""
    (tmp_path / "q.jsonl").write_text(json.dumps({"input": "Is ACGTACGT a promoter?"}) + "\n")
    generate = [sys.executable, "-m", "omics.cli", "generate", "--model", str(tiny_model), "--data", "q.jsonl",
                "--max-new-tokens", "2", "--out"]
    runs = [subprocess.Popen(argv, cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            for argv in ([*generate, "a.jsonl"], [*generate[:3], "--verbose", *generate[3:], "b.jsonl"])]
    quiet, verbose = (run.communicate(timeout=300)[1] for run in runs)
    assert [run.returncode for run in runs] == [0, 0], quiet + verbose
    notices = ("clean_up_tokenization_spaces", "_pytree.py", "Failed to load", "Detected no triton")
    assert all(n in verbose for n in notices[:2]), verbose  # what the libraries print on their own
    assert not [n for n in notices if n in quiet], quiet
    assert ("one-GPU rule" in quiet) == use_cuda() and "device: CPU" in quiet
