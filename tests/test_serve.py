"""`omics serve`: a real server process on a free port, answered over real HTTP by the official `openai` client,
checked against transformers' own generate on the same prompt; vLLM's command line by exec'ing a stand-in."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
import torch

from omics.model import chat_template, end_of_turn_id, load_model, load_tokenizer
from omics.model_card import ModelCard
from omics.serve.chat_format import chat_format
from omics.stages import ANSWER_TAGS
from tests.helpers import cli

ROOT = Path(__file__).resolve().parent.parent
KEY_ENV = "OMICS_TEST_SERVE_KEY"
KEY = "sk-test-7f3a9c1e-never-logged"
REASONING_PROMPT = "Reason step by step, then answer."  # the card's: what a request without a system turn gets
QUESTION = [{"role": "user", "content": "Is ACGTACGTTTGA a promoter?"}]
BATCH_TOKENS = 400  # the server's --batch-tokens


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def reasoning_model(tiny_model: Path, folder: Path) -> Path:
    """The tiny model's files plus an omics_model.json of a reasoning (Stage 3) model with its own prompt."""
    folder.mkdir()
    for item in tiny_model.iterdir():
        (folder / item.name).symlink_to(item)
    ModelCard(stage="stage3", answer_tags=ANSWER_TAGS, reasoning_prompt=REASONING_PROMPT).write(folder)
    return folder


@dataclass
class Server:
    process: subprocess.Popen
    log: Path
    url: str
    name: str

    def client(self, key: str = KEY) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url, api_key=key, max_retries=0, timeout=120)

    def chat(self, messages: list[dict], **options) -> openai.types.chat.ChatCompletion:
        return self.client().chat.completions.create(model=self.name, messages=messages, **options)


@pytest.fixture(scope="module")
def server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Server:
    """One server for the module: the reasoning model, a key, a long batching window (concurrent requests of a
    test land in one batch), answers of 8 tokens unless asked, batches of at most 400 tokens."""
    folder = tmp_path_factory.mktemp("serve")
    model = reasoning_model(tiny_model, folder / "reasoner")
    port, log = free_port(), folder / "server.log"
    command = [sys.executable, "-m", "omics.cli", "serve", "--model", str(model), "--port", str(port),
               "--api-key-env", KEY_ENV, "--batch-window-ms", "250", "--max-new-tokens", "8",
               "--batch-tokens", str(BATCH_TOKENS)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), KEY_ENV: KEY}
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    served = Server(process, log, f"http://127.0.0.1:{port}/v1", "reasoner")
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, log.read_text()
        try:
            served.client().models.list()
            break
        except openai.APIConnectionError:
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.3)
    yield served
    process.terminate()
    process.wait(timeout=30)


@pytest.fixture(scope="module")
def reference(tiny_model: Path):
    """transformers' greedy answer to token ids, decoded as the server decodes (the model in this process)."""
    model = load_model(tiny_model).eval()
    tokenizer = load_tokenizer(tiny_model, chat=True)  # Llama-3.1's format (with any system turn given)

    def generate(ids: list[int], max_new_tokens: int = 8) -> tuple[str, int]:
        with torch.no_grad():
            out = model.generate(input_ids=torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                 eos_token_id=[end_of_turn_id(tokenizer), tokenizer.eos_token_id],
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[0, len(ids):].tolist()
        text = tokenizer.decode(new, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return text, len(new)

    return tokenizer, generate


def chat_ids(tokenizer, messages: list[dict]) -> list[int]:
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]


def test_models_list_and_the_api_key(server: Server) -> None:
    assert [m.id for m in server.client().models.list().data] == ["reasoner"]
    for key in ("wrong-key", KEY + "x"):
        with pytest.raises(openai.AuthenticationError, match="Authorization: Bearer KEY"):
            server.client(key).chat.completions.create(model="reasoner", messages=QUESTION)
    bare = httpx.get(f"{server.url}/models")  # no Authorization header at all
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "invalid_api_key"
    assert KEY not in Path(f"/proc/{server.process.pid}/cmdline").read_text()  # read from the environment
    root = server.url.removesuffix("/v1")
    assert httpx.get(f"{root}/health").json() == {"status": "ok"}  # liveness needs no key, as vLLM's


def test_chat_is_the_models_template_with_its_default_system_prompt(server: Server, reference) -> None:
    """No system message: the card's reasoning prompt as the system turn; a system message of its own replaces
    it. The answer is transformers' greedy answer to exactly those token ids."""
    tokenizer, generate = reference
    expected_ids = chat_ids(tokenizer, [{"role": "system", "content": REASONING_PROMPT}, *QUESTION])
    answer = server.chat(QUESTION, temperature=0, max_tokens=6)
    text, generated = generate(expected_ids, 6)
    assert answer.usage.prompt_tokens == len(expected_ids)
    assert answer.choices[0].message.content == text and answer.usage.completion_tokens == generated
    assert answer.choices[0].finish_reason == ("length" if generated == 6 else "stop")
    own = [{"role": "system", "content": "Answer in one word."}, *QUESTION]
    assert server.chat(own, temperature=0, max_tokens=1).usage.prompt_tokens == len(chat_ids(tokenizer, own))


def test_streamed_text_equals_the_whole_answer(server: Server) -> None:
    whole = server.chat(QUESTION, temperature=0)
    chunks = list(server.chat(QUESTION, temperature=0, stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content and len(text) > 0
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.model_dump() == whole.usage.model_dump() and not chunks[-1].choices
    with httpx.stream("POST", f"{server.url}/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                      json={"model": "reasoner", "messages": QUESTION, "stream": True, "max_tokens": 3}) as raw:
        events = [line for line in raw.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    assert len(events) >= 3 + 2  # the role, the text as it came (3 tokens), the finish reason, [DONE]


def test_plain_completion(server: Server, reference) -> None:
    tokenizer, generate = reference
    prompt = "ACGTACGTTTGA"
    done = server.client().completions.create(model="reasoner", prompt=prompt, max_tokens=5, temperature=0)
    ids = tokenizer(prompt)["input_ids"]
    assert ids[0] == tokenizer.bos_token_id and done.usage.prompt_tokens == len(ids)
    text, generated = generate(ids, 5)
    assert done.choices[0].text == text and done.usage.completion_tokens == generated


def test_stop_strings_cut_the_answer_streamed_or_not(server: Server) -> None:
    full = server.chat(QUESTION, temperature=0).choices[0].message.content
    stop = full[len(full) // 2:len(full) // 2 + 2]
    expected = full[:full.index(stop)]
    cut = server.chat(QUESTION, temperature=0, stop=[stop, "never-in-it"])
    assert cut.choices[0].message.content == expected and cut.choices[0].finish_reason == "stop"
    streamed = server.chat(QUESTION, temperature=0, stop=stop, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == expected


def test_sampling_with_a_seed_repeats(server: Server) -> None:
    first, again = (server.chat(QUESTION, temperature=1.0, top_p=0.9, seed=11).choices[0].message.content
                    for _ in range(2))
    assert first == again


def test_refusals_in_openais_error_shape(server: Server) -> None:
    with pytest.raises(openai.BadRequestError, match="n=2: this server returns one choice"):
        server.chat(QUESTION, n=2)
    with pytest.raises(openai.NotFoundError, match="this server serves 'reasoner'"):
        server.client().chat.completions.create(model="gpt-4o", messages=QUESTION)
    with pytest.raises(openai.BadRequestError, match="this model takes 4096 tokens in all"):
        server.chat(QUESTION, max_tokens=5000)
    headers = {"Authorization": f"Bearer {KEY}"}
    invalid = httpx.post(f"{server.url}/chat/completions", headers=headers, json={"model": "reasoner"})
    assert invalid.status_code == 400 and invalid.json()["error"]["message"].startswith("messages: ")
    assert httpx.get(f"{server.url}/nothing", headers=headers).json()["error"]["code"] == "not_found"
    broken = httpx.post(f"{server.url}/chat/completions", headers={**headers, "Content-Type": "application/json"},
                        content=b'{"model": "reasoner", "messages": [}')
    assert broken.json()["error"]["message"] == "the request body is not valid JSON (at character 35)"
    form = httpx.post(f"{server.url}/chat/completions", headers=headers, data={"model": "reasoner"})  # curl -d
    assert "sent with 'Content-Type: application/json'" in form.json()["error"]["message"]


def test_concurrent_requests_are_batched_and_answer_as_alone(server: Server) -> None:
    """Four requests at once: one batch of four in the log, each answer equal to its answer asked alone."""
    questions = [[{"role": "user", "content": "ACGT" * n}] for n in (1, 3, 5, 9)]
    alone = [server.chat(q, temperature=0).choices[0].message.content for q in questions]
    logged = len(server.log.read_text().splitlines())

    async def together() -> list[str]:
        client = openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)
        answers = await asyncio.gather(*(client.chat.completions.create(
            model="reasoner", messages=q, temperature=0) for q in questions))
        return [a.choices[0].message.content for a in answers]

    assert asyncio.run(together()) == alone
    batches = [int(n) for n in re.findall(r"batch of (\d+) request", new_lines(server, logged))]
    assert sum(batches) == 4 and max(batches) > 1, batches  # 4 in one batch unless the machine is very busy


def test_batches_keep_to_the_token_budget(server: Server, reference) -> None:
    """Four requests of 200 tokens each (prompt + max_tokens) under a 400-token budget: batches of two at most."""
    tokenizer, _ = reference
    question = [{"role": "user", "content": "ACGT " * 50}]
    prompt_tokens = len(chat_ids(tokenizer, [{"role": "system", "content": REASONING_PROMPT}, *question]))
    assert 150 < prompt_tokens < 200
    logged = len(server.log.read_text().splitlines())

    async def together() -> list[int]:
        client = openai.AsyncOpenAI(base_url=server.url, api_key=KEY, max_retries=0, timeout=120)
        answers = await asyncio.gather(*(client.chat.completions.create(
            model="reasoner", messages=question, temperature=0, max_tokens=200 - prompt_tokens) for _ in range(4)))
        return [a.usage.prompt_tokens for a in answers]

    assert asyncio.run(together()) == [prompt_tokens] * 4
    batches = [int(n) for n in re.findall(r"batch of (\d+) request", new_lines(server, logged))]
    assert sum(batches) == 4 and max(batches) <= BATCH_TOKENS // 200, batches


def test_a_stream_given_up_leaves_its_batch(server: Server) -> None:
    """A client that stops reading after two pieces of a 2,000-token answer (more than --batch-tokens: it runs
    alone): the worker drops it at once."""
    logged = len(server.log.read_text().splitlines())
    stream = server.chat(QUESTION, temperature=0, max_tokens=2000, stream=True)
    for _ in range(3):  # the role, then two pieces of text
        next(stream)
    stream.close()
    deadline = time.monotonic() + 60
    while not (done := re.findall(r"batch done: (\d+) tokens generated", new_lines(server, logged))):
        assert time.monotonic() < deadline, new_lines(server, logged)
        time.sleep(0.2)
    assert int(done[0]) < 500, done
    assert KEY not in server.log.read_text()  # after every test above


def new_lines(server: Server, after: int) -> str:
    return "\n".join(server.log.read_text().splitlines()[after:])


def test_vllm_is_execd_with_the_models_template_and_the_key_in_its_environment(tiny_model, tmp_path, monkeypatch,
                                                                              caplog) -> None:
    """What `omics serve --backend vllm` hands to exec: vLLM's command line and environment."""
    model = reasoning_model(tiny_model, tmp_path / "reasoner")
    (tmp_path / "vllm").write_text("#!/bin/sh\n")
    (tmp_path / "vllm").chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.setenv(KEY_ENV, KEY)
    caplog.set_level(logging.INFO, logger="omics")
    execd = []
    monkeypatch.setattr(os, "execve", lambda path, argv, env: execd.append((path, argv, env)))
    port = str(free_port())
    assert cli(monkeypatch, tmp_path, "serve", "--model", str(model), "--backend", "vllm", "--port", port,
               "--api-key-env", KEY_ENV, "--dtype", "bf16", "--served-model-name", "s3") == 0
    [(path, argv, env)] = execd
    assert path == argv[0] == str(tmp_path / "vllm")
    assert argv[1:-1] == ["serve", str(model), "--served-model-name", "s3", "--host", "127.0.0.1", "--port", port,
                          "--dtype", "bfloat16", "--tensor-parallel-size", "1", "--generation-config", "auto",
                          "--chat-template"]
    assert Path(argv[-1]).read_text() == chat_template(REASONING_PROMPT)
    assert env["VLLM_API_KEY"] == KEY and env["CUDA_VISIBLE_DEVICES"] == "0"  # the one GPU pinned
    assert "starting vLLM's server" in caplog.text and KEY not in caplog.text + " ".join(argv)


def test_auto_picks_transformers_without_vllm(tmp_path, monkeypatch) -> None:
    from omics.commands.serve import choose_backend
    from omics.device import use_cuda
    from omics.errors import UserError

    monkeypatch.setenv("PATH", str(tmp_path))
    assert choose_backend("auto") == "transformers"
    with pytest.raises(UserError, match="no `vllm` command in this environment"):
        choose_backend("vllm")
    (tmp_path / "vllm").write_text("#!/bin/sh\n")
    (tmp_path / "vllm").chmod(0o755)
    assert choose_backend("auto") == ("vllm" if use_cuda() else "transformers")  # vLLM serves on a GPU only
    assert choose_backend("vllm") == "vllm"


def test_one_line_errors(tiny_model, tmp_path, monkeypatch, caplog) -> None:
    """A missing model folder, a port in use, an unset key variable, a --mode the model has not: exit 2, one line."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        monkeypatch.delenv(KEY_ENV, raising=False)
        cases = {("--model", str(tmp_path / "missing")): f"no model at {tmp_path / 'missing'}",
                 ("--model", str(tiny_model), "--port", port): f"127.0.0.1:{port} is already in use",
                 ("--model", str(tiny_model), "--api-key-env", KEY_ENV): f"--api-key-env {KEY_ENV}: that environ",
                 ("--model", str(tiny_model), "--mode", "reasoning"): "has no omics_model.json, so its modes"}
        for argv, message in cases.items():
            caplog.clear()
            assert cli(monkeypatch, tmp_path, "serve", *argv) == 2
            assert message in caplog.records[-1].getMessage()


def test_a_folder_not_saved_by_omics_keeps_its_own_template(tmp_path, caplog) -> None:
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "{{ messages[0]['content'] }}"}))
    format_ = chat_format(tmp_path, None)
    assert format_.template is None and "using the tokenizer's own chat template" in caplog.text


def test_bf16_engine_answers_as_transformers_generate(tiny_model) -> None:
    """A couple of bf16 tokens through the engine (alone, then two requests in one batch)."""
    from omics.commands.serve import stop_token_ids
    from omics.serve.engine import Batching, Engine, Finish, Sampling

    model = load_model(tiny_model, dtype="bf16").eval()
    tokenizer = load_tokenizer(tiny_model, chat=True)
    engine = Engine(model, tokenizer, stop_token_ids(model, tokenizer), Batching(window_s=0.2))
    prompts = [chat_ids(tokenizer, QUESTION), tokenizer("ACGT")["input_ids"]]

    async def answer(ids: list[int]) -> tuple[str, Finish]:
        events = [event async for event in engine.generate(ids, Sampling(max_tokens=2, temperature=0))]
        return "".join(events[:-1]), events[-1]

    async def together() -> list[tuple[str, Finish]]:
        return await asyncio.gather(*(answer(ids) for ids in prompts))

    text, finish = asyncio.run(answer(prompts[0]))
    with torch.no_grad():
        out = model.generate(input_ids=torch.tensor([prompts[0]]), max_new_tokens=2, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    assert model.dtype == torch.bfloat16 and finish == Finish("length", 2)
    assert text == tokenizer.decode(out[0, len(prompts[0]):], skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)
    assert [finish for _, finish in asyncio.run(together())] == [Finish("length", 2)] * 2


def test_streamed_pieces_are_whole_characters_and_stop_before_a_stop_string(tokenizer) -> None:
    """Tokens fed one by one (a character's UTF-8 bytes split over tokens, as 🧬's are): the pieces sent hold
    no half character and add up to the text; a stop string split over pieces is never sent."""
    from omics.serve.engine import Finish, Job, Sampling, _Row

    text = "ACGT 🧬 ДНК 遺伝子 ok"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split()) + 3  # some characters really span tokens

    def pieces(stop: tuple[str, ...]) -> list:
        sent = []
        row = _Row(Job([], Sampling(max_tokens=len(ids), stop=stop), sent.append), frozenset(), tokenizer)
        for token in ids:
            if row.push(token):
                break
        return sent

    whole = pieces(())
    assert "".join(whole[:-1]) == text and whole[-1] == Finish("length", len(ids))
    assert not [piece for piece in whole[:-1] if "\ufffd" in piece]
    cut = pieces(("遺伝",))
    assert "".join(cut[:-1]) == "ACGT 🧬 ДНК " and cut[-1].reason == "stop"


def test_synthesize_asks_omics_serve_as_its_teacher(server, tmp_path, monkeypatch):
    """The two halves of issue 14 end to end: `omics synthesize` asks the served (random, tiny) model, whose
    replies fail the checks, so every line is asked again with the reason and then rejected with it."""
    from tests.helpers import head

    (tmp_path / "data.jsonl").write_text("".join(f"{row}\n" for row in head("stage2_train.jsonl", 3)))
    monkeypatch.setenv(KEY_ENV, KEY)
    assert cli(monkeypatch, tmp_path, "synthesize", "--data", "data.jsonl", "--out", "r.jsonl", "--base-url",
               server.url, "--model", server.name, "--api-key-env", KEY_ENV, "--max-retries", "1",
               "--max-tokens", "8") == 0
    rejected = [json.loads(line) for line in (tmp_path / "r.rejected.jsonl").read_text().splitlines()]
    summary = json.loads((tmp_path / "r.summary.json").read_text())
    assert len(rejected) == 3 and all(row["reason"] for row in rejected)
    assert (summary["totals"]["requested"], summary["totals"]["accepted"]) == (3, 0)
    assert summary["retries"]["feedback"] == 3 and summary["totals"]["tokens"]["completion"] > 0
