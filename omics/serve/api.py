"""The built-in server's HTTP side: OpenAI's /v1/chat/completions, /v1/completions and /v1/models.

Requests and responses follow OpenAI's shapes (streams as server-sent events of chunks ending with
`data: [DONE]`; errors as `{"error": {message, type, param, code}}` with the matching status), so the official
`openai` client and tools written for it work unchanged.
"""

from __future__ import annotations

import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from jinja2 import TemplateError
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from transformers import PreTrainedTokenizerBase

from omics.serve.engine import Engine, Finish, Sampling


class APIError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status)


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]

    def as_dict(self) -> dict[str, str]:
        """The message as a chat template reads it ("developer" is the newer name of "system")."""
        content = self.content if isinstance(self.content, str) else "".join(part.text for part in self.content)
        return {"role": "system" if self.role == "developer" else self.role, "content": content}


class StreamOptions(BaseModel):
    include_usage: bool = False


class GenerationRequest(BaseModel):
    """The settings both endpoints share; fields this server does not use (user, metadata, …) are ignored."""

    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: StreamOptions | None = None
    logprobs: bool | int | None = None


class ChatRequest(GenerationRequest):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)


class CompletionRequest(GenerationRequest):
    prompt: str | list[str]


@dataclass(frozen=True)
class ServerSettings:
    served_name: str
    max_new_tokens: int  # a request's max_tokens when it gives none
    context_length: int  # prompt + answer tokens the model takes
    api_key: str | None


def sse(document: dict[str, Any] | str) -> str:
    return f"data: {document if isinstance(document, str) else json.dumps(document, ensure_ascii=False)}\n\n"


class Endpoints:
    """One request's path from JSON to the engine and back, shared by chat and plain completions."""

    def __init__(self, engine: Engine, tokenizer: PreTrainedTokenizerBase, settings: ServerSettings):
        self.engine, self.tokenizer, self.settings = engine, tokenizer, settings
        self.created = int(time.time())

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.settings.served_name, "object": "model",
                                            "created": self.created, "owned_by": "omics",
                                            "max_model_len": self.settings.context_length}]}

    def chat_prompt(self, request: ChatRequest) -> list[int]:
        """The model's chat template applied (its default system prompt when the request has no system turn),
        tokenised as training did: the template writes BOS, so no special tokens are added."""
        try:
            text = self.tokenizer.apply_chat_template([m.as_dict() for m in request.messages],
                                                      add_generation_prompt=True, tokenize=False)
        except TemplateError as err:
            raise APIError(400, f"the model's chat template refused these messages: {err}", "messages") from None
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def completion_prompt(self, request: CompletionRequest) -> list[int]:
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if len(prompts) != 1:
            raise APIError(400, f"prompt: {len(prompts)} prompts given; this server takes one per request (send "
                           "one request per prompt: concurrent requests are batched)", "prompt")
        return self.tokenizer(prompts[0])["input_ids"]  # BOS first, as for any plain-text prompt

    def sampling(self, request: GenerationRequest, prompt_ids: list[int], max_tokens: int | None) -> Sampling:
        """The request's settings, checked: what this server cannot do is refused, never silently ignored."""
        if request.model != self.settings.served_name:
            raise APIError(404, f"the model '{request.model}' does not exist: this server serves "
                           f"'{self.settings.served_name}' (GET /v1/models)", "model", "model_not_found")
        if (request.n or 1) != 1:
            raise APIError(400, f"n={request.n}: this server returns one choice per request (n=1); send n "
                           "requests instead (concurrent requests are batched)", "n")
        if request.logprobs:
            raise APIError(400, "logprobs are not supported by this server", "logprobs")
        room = self.settings.context_length - len(prompt_ids)
        if room < 1 or (max_tokens or 0) > room:
            raise APIError(400, f"the prompt has {len(prompt_ids)} tokens and max_tokens is "
                           f"{max_tokens or 'unset'}: this model takes {self.settings.context_length} tokens in "
                           "all; shorten the prompt or lower max_tokens", "max_tokens")
        stop = [request.stop] if isinstance(request.stop, str) else request.stop or []
        temperature = 1.0 if request.temperature is None else request.temperature
        return Sampling(max_tokens=max_tokens or min(self.settings.max_new_tokens, room), temperature=temperature,
                        top_p=1.0 if request.top_p is None else request.top_p,
                        stop=tuple(s for s in stop if s), seed=request.seed)

    async def answer(self, request: GenerationRequest, prompt_ids: list[int], max_tokens: int | None,
                     chat: bool) -> dict[str, Any] | StreamingResponse:
        sampling = self.sampling(request, prompt_ids, max_tokens)
        reply = Reply(chat, self.settings.served_name, len(prompt_ids))
        events = self.engine.generate(prompt_ids, sampling)
        if request.stream:
            usage = bool(request.stream_options and request.stream_options.include_usage)
            return StreamingResponse(reply.stream(events, usage), media_type="text/event-stream")
        pieces = []
        async for event in events:
            if isinstance(event, Finish):
                return reply.whole("".join(pieces), event)
            pieces.append(event)
        raise RuntimeError("the engine ended a request without its Finish")


@dataclass
class Reply:
    """The response documents of one request, in OpenAI's chat or plain completion shapes."""

    chat: bool
    model: str
    prompt_tokens: int

    def __post_init__(self) -> None:
        self.id = f"{'chatcmpl' if self.chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _document(self, choice: dict[str, Any], chunk: bool) -> dict[str, Any]:
        kind = ("chat.completion" + ".chunk" * chunk) if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model,
                "choices": [{"index": 0, "logprobs": None, **choice}]}

    def usage(self, finish: Finish) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": finish.completion_tokens,
                "total_tokens": self.prompt_tokens + finish.completion_tokens}

    def whole(self, text: str, finish: Finish) -> dict[str, Any]:
        content = {"message": {"role": "assistant", "content": text}} if self.chat else {"text": text}
        return {**self._document({**content, "finish_reason": finish.reason}, chunk=False),
                "usage": self.usage(finish)}

    def _chunk(self, text: str | None, finish_reason: str | None = None, role: bool = False) -> dict[str, Any]:
        if self.chat:
            delta = ({"role": "assistant"} if role else {}) | ({} if text is None else {"content": text})
            return self._document({"delta": delta, "finish_reason": finish_reason}, chunk=True)
        return self._document({"text": text or "", "finish_reason": finish_reason}, chunk=True)

    async def stream(self, events: AsyncIterator[str | Finish], usage: bool) -> AsyncIterator[str]:
        """Server-sent events: (chat: the role first) a chunk per piece of text, the finish reason, optionally
        the usage, then [DONE]; a failure mid-stream is sent as an error event."""
        if self.chat:
            yield sse(self._chunk("", role=True))
        try:
            async for event in events:
                if isinstance(event, Finish):
                    yield sse(self._chunk(None, event.reason))
                    if usage:
                        yield sse({**self._document({}, chunk=True), "choices": [], "usage": self.usage(event)})
                else:
                    yield sse(self._chunk(event))
        except Exception as err:  # the batch failed (logged by the engine): the client is told, not cut off
            yield sse(internal_error(err).body())
        yield sse("[DONE]")


def internal_error(err: Exception) -> APIError:
    return APIError(500, f"generation failed ({type(err).__name__}: {err}); see the server log", kind="server_error")


def validation_message(err: RequestValidationError) -> tuple[str, str | None]:
    """The first problem of an invalid request as one line, and the parameter it concerns."""
    problem = err.errors()[0]
    where = [str(part) for part in problem.get("loc", ()) if part != "body"]
    if problem.get("type") == "json_invalid":  # loc: ("body", character offset)
        return f"the request body is not valid JSON (at character {where[0] if where else '?'})", None
    if not where:  # not a JSON object at all, e.g. form-encoded (curl -d without a JSON Content-Type)
        return "the request body must be a JSON object, sent with 'Content-Type: application/json'", None
    return f"{'.'.join(where)}: {problem.get('msg', 'invalid')}", where[0]


def create_app(engine: Engine, tokenizer: PreTrainedTokenizerBase, settings: ServerSettings) -> FastAPI:
    app = FastAPI(title="omics serve", docs_url=None, redoc_url=None, openapi_url=None)
    endpoints = Endpoints(engine, tokenizer, settings)
    expected = f"Bearer {settings.api_key}".encode() if settings.api_key else None

    @app.middleware("http")
    async def authorize(request: Request, call_next):
        sent = request.headers.get("authorization", "").encode()
        if expected is not None and request.url.path != "/health" and not hmac.compare_digest(sent, expected):
            return APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' with the "
                            "key of the server's --api-key-env variable", code="invalid_api_key").response()
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness for load balancers and scripts, without the key (as vLLM's server)."""
        return {"status": "ok"}

    @app.exception_handler(APIError)
    async def api_error(request: Request, err: APIError) -> JSONResponse:
        return err.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError) -> JSONResponse:
        return APIError(400, *validation_message(err)).response()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> JSONResponse:
        code = "not_found" if err.status_code == 404 else None
        return APIError(err.status_code, f"{request.method} {request.url.path}: {err.detail}", code=code).response()

    @app.exception_handler(Exception)
    async def failed(request: Request, err: Exception) -> JSONResponse:
        return internal_error(err).response()

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return endpoints.models()

    @app.post("/v1/chat/completions")
    async def chat_completions(request: ChatRequest):
        max_tokens = request.max_completion_tokens or request.max_tokens
        return await endpoints.answer(request, endpoints.chat_prompt(request), max_tokens, chat=True)

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest):
        return await endpoints.answer(request, endpoints.completion_prompt(request), request.max_tokens, chat=False)

    return app
