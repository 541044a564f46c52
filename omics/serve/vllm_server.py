"""`omics serve --backend vllm`: vLLM's own OpenAI server on the model folder, prompted as omics prompts it.

The command line is built here and the process replaced by it (`exec`): vLLM then owns the port, the one GPU
pinned through CUDA_VISIBLE_DEVICES (inherited) and the model. The API key travels in VLLM_API_KEY, never on the
command line, where `ps` would show it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

from omics.io import write_text
from omics.serve.chat_format import ChatFormat

log = logging.getLogger("omics")
VLLM_DTYPES = {"auto": "auto", "bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}


def vllm_executable() -> str | None:
    """The `vllm` command of this environment (beside its python, e.g. .venv-vllm/bin), else on PATH."""
    return shutil.which("vllm", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))


def template_file(template: str) -> Path:
    """The template as a file for --chat-template (vLLM reads an inline one with unicode-escape decoding, which
    would alter it), named by its content in the temp folder: never written into the model folder."""
    digest = hashlib.sha256(template.encode()).hexdigest()[:16]
    path = Path(tempfile.gettempdir()) / f"omics-chat-template-{digest}.jinja"
    write_text(path, template)
    return path


def vllm_command(executable: str, model_dir: Path, served_name: str, chat: ChatFormat, host: str, port: int,
                 dtype: str) -> list[str]:
    """`vllm serve` for one model on one GPU, stopping at the generation config's end-of-turn and eos ids (omics
    saves both there), prompted with `chat`'s template."""
    command = [executable, "serve", str(model_dir), "--served-model-name", served_name, "--host", host,
               "--port", str(port), "--dtype", VLLM_DTYPES[dtype], "--tensor-parallel-size", "1",
               "--generation-config", "auto"]
    if chat.template is not None:
        command += ["--chat-template", str(template_file(chat.template))]
    return command


def exec_vllm(command: list[str], api_key: str | None) -> None:
    """Replace this process by vLLM's server (returns only if the exec fails, as an OSError)."""
    env = dict(os.environ)
    if api_key is not None:
        env["VLLM_API_KEY"] = api_key
    log.info("starting vLLM's server: %s%s", shlex.join(command), " (API key in VLLM_API_KEY)" if api_key else "")
    for handler in logging.getLogger().handlers:
        handler.flush()
    os.execve(command[0], command, env)
