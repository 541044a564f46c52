"""A scripted OpenAI-compatible teacher for the `omics synthesize` tests: real HTTP on a free port (http.server in
a thread), answered to the real `openai` client. Each question gets the behaviours its script lists, one per
request for it (then "good"), and every request is recorded (arrival time, messages, Authorization header)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REASONING = ("Counting the residues of the sequence and weighing the features that decide this property, step by "
             "step, leads to the stated conclusion.")
WRONG_ANSWER = "I cannot determine it."
SLOW_S = 5.0  # past the tests' --timeout, which leaves room for a loaded machine's ordinary replies


def reply_for(behaviour: str, answer: str) -> tuple[str, str]:
    """(content, finish_reason) of a scripted reply to a question whose known answer is `answer`."""
    replies = {
        "good": f"<reasoning>{REASONING}</reasoning> <answer>{answer}</answer>",
        "malformed": f"Sure! <reasoning>{REASONING} <answer>{answer}</answer>",
        "leak": f"<reasoning>The given answer says so, and counting the bases of the sequence agrees with it."
                f"</reasoning> <answer>{answer}</answer>",
        "restate": f"<reasoning>{answer}</reasoning> <answer>{answer}</answer>",
        "empty": f"<reasoning> </reasoning> <answer>{answer}</answer>",
        "wrong": f"<reasoning>{REASONING}</reasoning> <answer>{WRONG_ANSWER}</answer>",
        "cut": f"<reasoning>{REASONING}",
    }
    return replies[behaviour], "length" if behaviour == "cut" else "stop"


class TeacherServer:
    """`with TeacherServer(script) as teacher:` serves at `teacher.url` (…/v1); `script`: a substring of the
    question → behaviours ("good", "malformed", "leak", "restate", "empty", "wrong", "cut", "slow", or an HTTP
    error status such as "429"); `delay`: seconds every other reply takes."""

    def __init__(self, script: dict[str, list[str]] | None = None, usage: tuple[int, int] = (100, 20),
                 retry_after: str = "1", delay: float = 0.0):
        self.script, self.usage, self.retry_after, self.delay = script or {}, usage, retry_after, delay
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True  # closing does not wait for a slow reply nobody waits for any more
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def behaviour(self, question: str) -> str:
        asked = sum(r["messages"][0]["content"] == question for r in self.requests)
        for marker, behaviours in self.script.items():
            if marker in question:
                return behaviours[asked] if asked < len(behaviours) else "good"
        return "good"

    def asked(self, marker: str) -> list[dict]:
        return [r for r in self.requests if marker in r["messages"][0]["content"]]

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        teacher = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # the client timed out and left
                    self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                question = body["messages"][0]["content"]
                with teacher.lock:
                    behaviour = teacher.behaviour(question)
                    teacher.requests.append({"time": time.monotonic(), "messages": body["messages"],
                                             "authorization": self.headers.get("Authorization"),
                                             "behaviour": behaviour})
                if behaviour.isdigit():  # an HTTP error
                    headers = {"Retry-After": teacher.retry_after} if behaviour == "429" else {}
                    self.send(int(behaviour), {"error": {"message": f"scripted {behaviour}", "type": "test"}}, headers)
                    return
                time.sleep(SLOW_S if behaviour == "slow" else teacher.delay)
                answer = question.rsplit("Answer:\n", 1)[1].strip()
                content, finish = reply_for("good" if behaviour == "slow" else behaviour, answer)
                prompt, completion = teacher.usage
                self.send(200, {"id": "chatcmpl-test", "object": "chat.completion", "created": int(time.time()),
                                "model": body["model"], "choices": [{"index": 0, "finish_reason": finish, "message":
                                                                     {"role": "assistant", "content": content}}],
                                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                          "total_tokens": prompt + completion}})

        return Handler

    def __enter__(self) -> TeacherServer:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
