"""The small threaded HTTP/1.1 server both emulators are built on.

Standard library only, so an emulator starts in milliseconds inside a pytest fixture or from its
own command line. Routes are regular expressions; handlers take a `Request` and return a
`Response`. A `Response` can also misbehave on purpose (truncated body, dropped connection) so the
clients' failure handling is tested over a real socket.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import zlib
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    params: dict[str, str] = field(default_factory=dict)  # named groups of the matched route

    def json(self) -> Any:
        return json.loads(self.body or b"null")


@dataclass
class Response:
    status: int = 200
    body: Any = None  # JSON-serialisable, or bytes sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json;charset=UTF-8"
    truncate_to: int | None = None  # send only this many body bytes, then close
    drop_connection: bool = False  # close the socket without answering

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, separators=(",", ":")).encode()


Handler = Callable[[Request], Response]


class Emulator:
    """A route table plus the server's life cycle. Subclasses call `route()` in `__init__`."""

    def __init__(self) -> None:
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self.request_counts: Counter[str] = Counter()  # "GET /platform/v1/users" -> n
        self.status_counts: Counter[int] = Counter()  # 200 -> n, 429 -> n, ...
        self.in_flight = 0
        self.peak_in_flight = 0  # most requests handled at the same moment, to check client bounds
        self._server: ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(f"^{pattern}$"), handler))

    def dispatch(self, request: Request) -> Response:
        allowed = False
        for method, pattern, handler in self._routes:
            match = pattern.match(request.path)
            if not match:
                continue
            allowed = True
            if method == request.method:
                request.params = match.groupdict()
                with self._lock:
                    self.request_counts[f"{method} {pattern.pattern[1:-1]}"] += 1
                    self.in_flight += 1
                    self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
                try:
                    response = handler(request)
                finally:
                    with self._lock:
                        self.in_flight -= 1
                with self._lock:
                    self.status_counts[response.status] += 1
                return response
        if allowed:
            return Response(405, {"message": f"method {request.method} not allowed"})
        return Response(404, {"message": f"no route for {request.path}"})

    def reset_counters(self) -> None:
        with self._lock:
            self.request_counts.clear()
            self.status_counts.clear()
            self.peak_in_flight = self.in_flight

    # -- life cycle --------------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a daemon thread; returns the base URL (port 0 picks a free port)."""
        self._server = _Server((host, port), _make_handler(self))
        # A short poll interval makes stop() near-instant (the default 0.5 s adds up in tests).
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self.url

    def serve_forever(self, host: str, port: int) -> None:
        self._server = _Server((host, port), _make_handler(self))
        print(f"{type(self).__name__} listening on {self.url}", flush=True)
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass

    @property
    def url(self) -> str:
        assert self._server is not None, "emulator not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128


def _make_handler(emulator: Emulator) -> type[BaseHTTPRequestHandler]:
    class _Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, so clients can pool connections
        # Headers and body go out in two writes; with Nagle on, the body waits for the client's
        # delayed ACK and every keep-alive request stalls ~40 ms.
        disable_nagle_algorithm = True

        def _serve(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            if body and self.headers.get("Content-Encoding", "").lower() == "gzip":
                try:
                    body = gzip.decompress(body)
                except (OSError, EOFError, zlib.error):  # a client error: answer it, don't drop
                    self._send(Response(400, {"message": "body is not valid gzip"}))
                    return
            request = Request(
                method=self.command,
                path=url.path,
                query={k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()},
                headers={k.lower(): v for k, v in self.headers.items()},
                body=body,
            )
            try:
                response = emulator.dispatch(request)
            except Exception as exc:  # an emulator bug must show up as a 500, not a hang
                response = Response(500, {"message": f"emulator error: {exc!r}"})
            try:
                self._send(response)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (e.g. its timeout)
                self.close_connection = True

        def _send(self, response: Response) -> None:
            if response.drop_connection:
                self.close_connection = True
                return
            payload = response.encoded()
            self.send_response(response.status)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            for name, value in response.headers.items():
                self.send_header(name, value)
            if response.truncate_to is not None:
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(payload[: response.truncate_to])
                self.close_connection = True
                return
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            pass

    return _Handler
