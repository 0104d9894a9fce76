"""The reference service on the wire: a threaded `http.server` on loopback with bounded handler threads, a
deadline per request, a capped body, and a JSON answer for everything, even http.server's own refusals."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

from agent.core.logging import get_logger
from agent.devtools.reference_service.requests import HttpError

log = get_logger("devservice")


class Service(Protocol):
    """What the wire needs of the service (ReferenceService): its limits, one request in, one answer out."""

    request_deadline_seconds: float
    max_connections: int
    max_body_bytes: int

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, dict, dict[str, str]]: ...

WRITE_TIMEOUT_SECONDS = 5.0
DRAIN_MAX_BYTES = 64 * 1024 * 1024  # what is read and dropped after a 413, so the client sees the answer


class ServiceServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type, service: Service) -> None:
        self.service = service
        # One slot per handler thread: a flood of slow clients gets 503 at once instead of a thread each.
        self._slots = threading.BoundedSemaphore(service.max_connections)
        super().__init__(address, handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            self._refuse_busy(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def _refuse_busy(self, request: socket.socket) -> None:
        body = json.dumps({"error": {"code": "busy", "message": "too many requests at once; retry"}}).encode()
        head = (
            "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        try:
            request.settimeout(0.2)  # on the accepting thread: never wait for a client here
            request.sendall(head.encode() + body)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that vanished mid-request is no news; socketserver would print a traceback.
        log.debug("devservice-connection-error", client=str(client_address))


class _DeadlineReader(io.RawIOBase):
    """The connection's socket for reading, every read bounded by what is left of the request's deadline:
    a client sending one byte a second is cut off at the deadline, not kept forever."""

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took longer than its deadline")
        self._sock.settimeout(left)
        return self._sock.recv_into(buffer)


class ServiceHandler(BaseHTTPRequestHandler):
    server: ServiceServer
    # One request per connection: going down then really drops every client, like a lost link.
    protocol_version = "HTTP/1.0"
    # Even a request too broken to name its version gets a status line (http.server would assume HTTP/0.9).
    default_request_version = "HTTP/1.0"
    server_version = "cabin-reference/1"

    def setup(self) -> None:
        super().setup()
        self.rfile.close()
        deadline = time.monotonic() + self.server.service.request_deadline_seconds
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, deadline))

    def _serve(self) -> None:
        service = self.server.service
        try:
            length = self._content_length(service.max_body_bytes)
        except HttpError as err:
            self._respond(err.status, {"error": {"code": err.code, "message": err.message}}, err.headers)
            if err.status == 413:
                self._drain()
            return
        try:
            body = self.rfile.read(length) if length else b""
        except TimeoutError:
            self._respond(408, {"error": {"code": "request-timeout", "message": "the request was too slow"}})
            return
        except OSError:
            return  # the client is gone
        if len(body) < length:
            return  # the client hung up halfway: nobody to answer
        headers = {k.lower(): v for k, v in self.headers.items()}
        status, payload, extra = service.handle(self.command, self.path, headers, body)
        self._respond(status, payload, extra)

    def _content_length(self, limit: int) -> int:
        if self.headers.get("Transfer-Encoding"):
            raise HttpError(411, "length-required", "send the body with a Content-Length, not chunked")
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            return 0
        raw = values.pop()
        if values or not re.fullmatch(r"[0-9]{1,12}", raw):
            raise HttpError(400, "content-length-invalid", "Content-Length must be one whole number of bytes")
        if int(raw) > limit:
            raise HttpError(413, "body-too-large", f"the body is over {limit} bytes")
        return int(raw)

    def _drain(self) -> None:
        """Read and drop what the client still sends (bounded by the deadline): closing with unread bytes
        makes the kernel reset the connection, and the client would never see the 413."""
        dropped = 0
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_WR)  # the answer is complete: the client may read it now
            while dropped < DRAIN_MAX_BYTES and (chunk := self.rfile.read1(65536)):
                dropped += len(chunk)

    def _respond(self, status: int, payload: dict, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload, ensure_ascii=False).encode()
        try:
            self.connection.settimeout(WRITE_TIMEOUT_SECONDS)  # a client that never reads is let go
            self.send_response(
                status, HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else ""
            )
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)
            self.wfile.flush()
        except OSError:
            pass  # the car hung up (or was killed) before the answer: the key makes the retry safe
        self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # http.server's own refusals (a bad request line, too many or too long headers), in the JSON shape.
        reason = (message or HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "")[:200]
        self.log_error("code %d, message %s", code, reason)
        self._respond(
            code, {"error": {"code": "bad-request" if code == 400 else f"http-{code}", "message": reason}}
        )

    do_GET = do_POST = _serve

    def __getattr__(self, name: str) -> Any:
        # Every other method (PUT, TRACE, QUERY...) reaches the service too, which answers 405 with `Allow`
        # for what the endpoint takes; http.server would say 501, as if the method were unheard of.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("devservice-request", line=format % args)
