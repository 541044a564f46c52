"""`omics serve --model DIR`: an OpenAI-compatible API server for a model folder (omics_model.json or plain HF).

`--backend auto` execs vLLM's own server when vLLM is installed and a GPU is present, else runs the built-in
one (transformers, FastAPI + uvicorn) that batches concurrent requests. Either way the model's chat template,
default system prompt and stop tokens are the ones omics trained it with (omics.serve.chat_format).
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from argparse import Namespace
from pathlib import Path
from typing import TYPE_CHECKING

from omics.errors import UserError

if TYPE_CHECKING:
    from omics.serve.chat_format import ChatFormat

log = logging.getLogger("omics")
BACKENDS = ("auto", "vllm", "transformers")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def read_api_key(variable: str | None) -> str | None:
    """The key from the environment variable named by --api-key-env (never from the command line)."""
    if variable is None:
        return None
    key = os.environ.get(variable, "").strip()
    if not key:
        raise UserError(f"--api-key-env {variable}: that environment variable is not set or empty; "
                        f"export {variable}=YOUR_KEY first (or drop --api-key-env to serve without a key)")
    return key


def choose_backend(requested: str) -> str:
    """`auto`: vLLM with its `vllm` command and a GPU, else transformers; `vllm` without that command is refused."""
    from omics.device import use_cuda
    from omics.serve.vllm_server import vllm_executable

    found = vllm_executable() is not None
    if requested == "vllm" and not found:
        raise UserError("--backend vllm: no `vllm` command in this environment; run .venv-vllm/bin/omics serve "
                        "(make vllm-env) or use --backend transformers")
    if requested == "vllm" or (requested == "auto" and found and use_cuda()):
        return "vllm"
    return "transformers"


def listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before the model loads: a port in use fails at once, not after minutes."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:
            raise UserError(f"{host}:{port} is already in use (another server?); stop it or pass --port N") from None
        if err.errno == errno.EACCES:
            raise UserError(f"{host}:{port}: permission denied (ports below 1024 need root); pass --port 8000"
                            ) from None
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror or err}); pass --host 127.0.0.1 or an "
                        "address of this machine") from None
    return sock


def stop_token_ids(model, tokenizer) -> set[int]:
    """Where answers end: the generation config's eos ids (omics saves end-of-turn and eos there), the
    tokenizer's eos and, where the vocabulary has it, Llama-3's end of turn."""
    from omics.model import END_OF_TURN

    configured = model.generation_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured]) | {tokenizer.eos_token_id}
    if END_OF_TURN in tokenizer.get_vocab():
        ids.add(tokenizer.convert_tokens_to_ids(END_OF_TURN))
    return {i for i in ids if i is not None}


def serve_builtin(args: Namespace, model_dir: Path, name: str, api_key: str | None, chat: ChatFormat) -> None:
    """Load the one model, start the generation worker and answer HTTP until Ctrl-C."""
    import uvicorn

    from omics.device import default_batch_tokens
    from omics.model import load_model, load_tokenizer
    from omics.serve.api import ServerSettings, create_app
    from omics.serve.engine import Batching, Engine

    sock = listen(args.host, args.port)
    tokenizer = load_tokenizer(model_dir, chat=False)
    if chat.template is not None:
        tokenizer.chat_template = chat.template
    model = load_model(model_dir, dtype=args.dtype).eval()
    batching = Batching(args.max_batch, default_batch_tokens(args.batch_tokens), args.batch_window_ms / 1000)
    engine = Engine(model, tokenizer, stop_token_ids(model, tokenizer), batching)
    settings = ServerSettings(name, args.max_new_tokens, model.config.max_position_embeddings, api_key)
    log.info("serving %s as '%s' on http://%s:%d/v1 (transformers, %s, %s; batches of up to %d requests and %d "
             "tokens, collected for %d ms)%s", model_dir, name, args.host, args.port, model.dtype, model.device,
             batching.requests, batching.tokens, args.batch_window_ms, "; API key required" if api_key else "")
    config = uvicorn.Config(create_app(engine, tokenizer, settings), log_config=None, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn has shut down cleanly by then; asyncio re-raises the Ctrl-C
        log.info("server stopped")


def run(args: Namespace) -> None:
    from omics.model import require_model_dir
    from omics.serve.chat_format import chat_format

    model_dir = require_model_dir(args.model, "Pass a model folder omics saved (e.g. archive/models/stage2) "
                                  "or any Hugging Face model folder.")
    limits = {"--max-batch": args.max_batch, "--max-new-tokens": args.max_new_tokens,
              "--batch-tokens": args.batch_tokens}
    for option, value in limits.items():
        if value is not None and value < 1:
            raise UserError(f"{option} must be at least 1, got {value}")
    api_key = read_api_key(args.api_key_env)
    if api_key is None and args.host not in LOOPBACK:
        log.warning("serving on %s without --api-key-env: anyone who can reach this machine can use the model",
                    args.host)
    name = args.served_model_name or model_dir.resolve().name
    chat = chat_format(model_dir, args.mode)
    log.info("chat format: %s%s", chat.described,
             f"; a request without a system message gets: {chat.system_prompt!r}" if chat.system_prompt else "")
    if choose_backend(args.backend) == "vllm":
        from omics.serve.vllm_server import exec_vllm, vllm_command, vllm_executable

        listen(args.host, args.port).close()  # the port is free: say so now, not from vLLM after loading
        return exec_vllm(vllm_command(vllm_executable(), model_dir, name, chat, args.host, args.port, args.dtype),
                         api_key)
    log.info("generation backend: transformers (built-in server)%s",
             "" if args.backend == "transformers" else "; install vLLM (make vllm-env) for faster serving on GPU")
    serve_builtin(args, model_dir, name, api_key, chat)
