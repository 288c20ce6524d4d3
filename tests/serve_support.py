"""A real `tlzoo serve` in a subprocess for the serve tests, and a plain HTTP client for them.

Run as a script (`python tests/serve_support.py serve MODEL ...`) it registers
test/tiny_cnn, uses one intra-op thread (the shared 2-core machine) and runs the
tlzoo CLI in that process, as a user's `tlzoo serve` would run.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parent))

LISTENING = re.compile(r"listening on (http://\S+/)")


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    stderr: list[str]

    @property
    def port(self) -> int:
        return urlsplit(self.url).port

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        return self.process.wait(30)


def start_server(model: Path, *args: str, ready: bool = True, timeout: float = 90) -> Server:
    """`tlzoo serve MODEL --port 0 ARGS`; returns once it listens (and, with `ready`, /health says ok)."""
    command = [sys.executable, str(HERE), "serve", str(model), "--port", "0", *args]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    url = None
    while url is None:
        line = process.stderr.readline()
        if not line:
            raise AssertionError(f"the server ended ({process.wait()}) before listening:\n{''.join(lines)}")
        lines.append(line)
        if found := LISTENING.search(line):
            url = found.group(1)
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the server did not listen in time:\n" + "".join(lines))
    server = Server(process, url, lines)
    while ready and request(server.url + "health")[0] != 200:
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the server did not become healthy:\n" + "".join(lines) + process.stderr.read())
        time.sleep(0.1)
    return server


def request(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
            timeout: float = 60) -> tuple[int, dict, bytes]:
    """(status, headers with lower-case names, body) of one request on a fresh connection."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        connection.request(method, parts.path + (f"?{parts.query}" if parts.query else ""), body=body,
                           headers=headers or {})
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        connection.close()


def read_answer(sock) -> tuple[int, bytes]:
    """(status, body) of the HTTP/1.1 answer arriving on a raw socket (the body by its Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        more = sock.recv(65536)
        if not more:
            raise AssertionError(f"the connection closed before a whole answer: {data[:200]!r}")
        data += more
    head, body = data.split(b"\r\n\r\n", 1)
    length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
    while len(body) < length:
        more = sock.recv(65536)
        if not more:
            break
        body += more
    return int(head.split()[1]), body


def multipart(files: list[tuple[str, bytes]], field: str = "file") -> tuple[bytes, str]:
    """(body, Content-Type) of a form with each (name, data) as a file in `field`."""
    boundary = uuid.uuid4().hex
    chunks = []
    for name, data in files:
        chunks += [f"--{boundary}\r\n".encode(),
                   f'Content-Disposition: form-data; name="{field}"; filename="{name}"\r\n'.encode(),
                   b"Content-Type: application/octet-stream\r\n\r\n", data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f"multipart/form-data; boundary={boundary}"


def post_images(url: str, files: list[tuple[str, bytes]], top_k: int | None = None) -> tuple[int, dict]:
    body, content_type = multipart(files)
    status, _, answer = request(url + "predict" + (f"?top_k={top_k}" if top_k else ""), "POST", body,
                                {"Content-Type": content_type})
    return status, json.loads(answer)


def train_tiny_run(tmp_path: Path) -> tuple[Path, list[Path]]:
    """A two-epoch test/tiny_cnn run (32 px, 3 classes, support.run_tiny) and its six validation images."""
    import pytest
    import torch

    import tlzoo.runtime.device as runtime
    from support import TINY_CNN, make_image_folder, run_tiny
    from tlzoo.registry import reset_registry

    make_image_folder(tmp_path / "data", classes=3, per_class=6, val_per_class=2)
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:  # conftest's one_thread, for a fixture wider than one test
        patch.setattr(runtime, "available_cpus", lambda: 1)
        torch.set_num_threads(1)
        reset_registry()
        TINY_CNN.register()
        try:
            result, _, _ = run_tiny(tmp_path, "run")
        finally:
            torch.set_num_threads(threads)
            reset_registry()
    return result.run_dir, sorted((tmp_path / "data" / "val").rglob("*.png"))


def predicted(run_dir: Path, paths: list[Path], top_k: int) -> list[list[dict]]:
    """`tlzoo predict`'s answers (in this process, as the CLI computes them), as the JSON API writes them."""
    from support import TINY_CNN
    from tlzoo.engine.inference import load_run, predict
    from tlzoo.registry import get_registry

    TINY_CNN.register()
    results = predict(load_run(run_dir, get_registry()), paths, top_k)
    assert all(r.error is None for r in results)
    return [[{"class": c, "probability": p} for c, p in r.top] for r in results]


def predicted_trust(run_dir: Path, paths: list[Path]) -> list[tuple[bool, float | None]]:
    """`tlzoo predict`'s (unknown, ood_score) of each image (issue 22), computed in this process."""
    from support import TINY_CNN
    from tlzoo.engine.inference import load_run, predict
    from tlzoo.registry import get_registry

    TINY_CNN.register()
    return [(r.unknown, r.ood_score) for r in predict(load_run(run_dir, get_registry()), paths, 1)]


if __name__ == "__main__":
    from support import TINY_CNN

    import tlzoo.runtime.device as runtime

    TINY_CNN.register()
    runtime.available_cpus = lambda: 1  # tiny models on a shared 2-core machine: one thread, as conftest's one_thread
    from tlzoo.cli.main import main

    main(sys.argv[1:])
