"""Running the app on uvicorn: load, bind, warm up, serve, stop gracefully.

Order: the model loads (a TlzooError here leaves no port open), the socket is
bound (a port in use is a TlzooError too), uvicorn starts and the batch thread
answers the warm-up batch, after which /health says ok. SIGTERM or Ctrl-C:
uvicorn stops accepting, lets the requests in flight finish (at most
`read_timeout` + GRACE seconds), then the batch thread drains its queue and the
process exits 0 (uvicorn would re-raise the signal and die by it: exit 143).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from tlzoo.errors import TlzooError
from tlzoo.serve.app import Settings, build_app
from tlzoo.serve.batcher import Batcher
from tlzoo.serve.metrics import Metrics
from tlzoo.serve.served import load_served, warm_up_row

GRACE = 30.0  # seconds past the read timeout that a shutdown waits for requests in flight
MAX_CONNECTIONS = 256  # beyond these uvicorn answers 503: bodies are held in memory (each up to --max-upload-mb)


def note(line: str) -> None:
    print(f"tlzoo: {line}", file=sys.stderr, flush=True)


def bind(host: str, port: int) -> socket.socket:
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    except OSError as exc:
        raise TlzooError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "choose another --port (0 picks a free one), or stop what listens there") from None
    sock.set_inheritable(True)
    return sock


def serve(model: Path, registry, host: str, port: int, settings: Settings, which: str = "best",
          access_log: bool = False) -> None:
    import uvicorn

    logging.getLogger("python_multipart").setLevel(logging.ERROR)  # a malformed upload gets its 400, no log line
    served = load_served(model, registry, which, log=note)
    metrics = Metrics(settings.max_batch)
    batcher = Batcher(served.predictor, settings.max_batch, settings.max_wait_ms / 1000, metrics, log=note)
    sock = bind(host, port)
    address = sock.getsockname()
    url = f"http://{address[0] if sock.family == socket.AF_INET else f'[{address[0]}]'}:{address[1]}/"
    failure: list[str] = []

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):
            if not self.should_exit:
                note("stopping: no new connections; requests in flight finish first")
            self.force_exit = self.should_exit  # a second signal: stop at once
            self.should_exit = True  # and the signal is not raised again afterwards: the exit status is 0

    async def watch_warm_up():
        await asyncio.to_thread(batcher.ready.wait)
        if batcher.failed:
            failure.append(batcher.failed)
            server.should_exit = True
        else:
            note(f"serving {served.info['kind']} at {url} (API docs: {url}docs); no authentication")

    @contextlib.asynccontextmanager
    async def lifespan(app):
        batcher.start(warm_up_row(served))
        watcher = asyncio.create_task(watch_warm_up())
        try:
            yield
        finally:
            watcher.cancel()
            await asyncio.to_thread(batcher.stop)

    app = build_app(served, batcher, metrics, settings, lifespan=lifespan)
    config = uvicorn.Config(app, log_level="warning", access_log=access_log, lifespan="on",
                            timeout_graceful_shutdown=int(settings.read_timeout + GRACE),
                            limit_concurrency=MAX_CONNECTIONS, server_header=False)
    server = Server(config)
    note(f"listening on {url} (warming up)")
    if not ipaddress.ip_address(address[0]).is_loopback:
        note(f"{host} is reachable from other machines and there is no authentication: put an authenticating "
             "proxy in front, or listen on 127.0.0.1")
    server.run(sockets=[sock])
    if failure:
        raise TlzooError(f"{model}: the model failed its warm-up batch: {failure[0]}",
                         "check that `tlzoo predict` works with it")
    if not server.started:
        raise TlzooError(f"the server at {url} did not start (see the lines above)")
    note("stopped")
