"""Small fake models for the model store: a scriptable HTTP server on 127.0.0.1, manifests, wheels."""

from __future__ import annotations

import contextlib
import hashlib
import io
import socket
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agent.models.manifest import parse_manifest
from agent.models.store import ModelStore

GGUF = b"GGUF" + bytes(range(256)) * 40  # 10 KB of "weights"
VOICE = b"ONNX" + b"\x01\x02" * 3000
VOICE_JSON = b'{"audio": {"sample_rate": 22050}}'


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- a real HTTP server on 127.0.0.1


@dataclass
class Served:
    files: dict[str, bytes] = field(default_factory=dict)
    hits: list[tuple[str, str | None]] = field(default_factory=list)
    truncate: set[str] = field(default_factory=set)  # send half the promised bytes, then hang up
    honor_range: bool = True
    base_url: str = ""
    # path -> how to misbehave on its next requests, one entry per request (then normally), see `_misbehave`.
    script: dict[str, list[str]] = field(default_factory=dict)


def _misbehave(handler: BaseHTTPRequestHandler, how: str, body: bytes, wanted: str | None) -> None:
    """One answer from a server that lies or breaks, the ways real mirrors and proxies do."""
    have = int(wanted.split("=")[1].split("-")[0]) if wanted else 0
    n = len(body)
    if how == "cut-no-length":  # HTTP/1.0 style, no Content-Length: the close is the only end marker
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(body[: n // 2])
    elif how == "no-length":
        handler.send_response(200)
        handler.end_headers()
        handler.wfile.write(body)
    elif how == "cut":  # the promised length, half the bytes
        handler.send_response(200)
        handler.send_header("Content-Length", str(n))
        handler.end_headers()
        handler.wfile.write(body[: n // 2])
    elif how == "206-from-zero":  # asked for the rest, answers 206 with the whole file
        handler.send_response(206)
        handler.send_header("Content-Length", str(n))
        handler.send_header("Content-Range", f"bytes 0-{n - 1}/{n}")
        handler.end_headers()
        handler.wfile.write(body)
    elif how == "206-no-range":  # 206 without saying which bytes
        handler.send_response(206)
        handler.send_header("Content-Length", str(n - have))
        handler.end_headers()
        handler.wfile.write(body[have:])
    elif how == "206-wrong-total":  # the right offset, a file of another length
        rest = body[have:]
        handler.send_response(206)
        handler.send_header("Content-Length", str(len(rest)))
        handler.send_header("Content-Range", f"bytes {have}-{n - 1}/{n + 100}")
        handler.end_headers()
        handler.wfile.write(rest)
    elif how == "206-bad-length":  # Content-Length that does not fit the range it claims
        rest = body[have:]
        handler.send_response(206)
        handler.send_header("Content-Length", str(len(rest) - 10))
        handler.send_header("Content-Range", f"bytes {have}-{n - 1}/{n}")
        handler.end_headers()
        handler.wfile.write(rest[:-10])
    elif how == "416-lie":  # "you have it all", whatever is there
        handler.send_response(416)
        handler.send_header("Content-Range", f"bytes */{have}")
        handler.send_header("Content-Length", "0")
        handler.end_headers()
    elif how == "endless":  # no length, and it never stops
        handler.send_response(200)
        handler.end_headers()
        with contextlib.suppress(OSError):
            for _ in range(10_000):
                handler.wfile.write(body)
    else:
        raise AssertionError(how)
    handler.close_connection = True


def _handler(served: Served) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            wanted = self.headers.get("Range")
            served.hits.append((self.path, wanted))
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            plan = served.script.get(self.path)
            if plan:
                _misbehave(self, plan.pop(0), body, wanted)
                return
            start, status = 0, 200
            if wanted and served.honor_range:
                start = int(wanted.split("=")[1].split("-")[0])
                if start >= len(body):
                    self.send_error(416)
                    return
                status = 206
            payload = body[start:]
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            self.end_headers()
            if self.path in served.truncate:
                self.wfile.write(payload[: len(payload) // 2])
                self.close_connection = True
                return
            self.wfile.write(payload)

    return Handler


def serve() -> Iterator[Served]:
    """A scriptable HTTP server on 127.0.0.1 for as long as the generator runs (the `server` fixture)."""
    served = Served()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    served.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield served
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def closed_port_url(path: str) -> str:
    """A URL nothing listens on: connection refused, like an unreachable mirror."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


# ---------------------------------------------------------------- manifests, wheels, stores


def model(model_id: str, files: list[dict], sources: list[dict], **extra: object) -> dict:
    entry = {
        "id": model_id,
        "role": "llm",
        "language": "en",
        "engine": "llama_cpp",
        "description": "test model",
        "license": "MIT",
        "files": files,
        "sources": sources,
    }
    entry.update(extra)
    return entry


def manifest_of(*models: dict, profile: list[str] | None = None):  # type: ignore[no-untyped-def]
    return parse_manifest(
        {
            "version": 1,
            "models": list(models),
            "profiles": {"dev": {"description": "test", "models": profile or [m["id"] for m in models]}},
        }
    )


def gguf_model(url: str, data: bytes = GGUF) -> dict:
    return model(
        "tiny-llm",
        [{"path": "tiny.gguf", "size": len(data), "sha256": sha(data)}],
        [{"kind": "url", "urls": {"tiny.gguf": url}}],
    )


def make_wheel(folder: Path, name: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal but real wheel: pip reads its METADATA, so name and version must be right."""
    dist = name.replace("-", "_")
    path = folder / f"{dist}-{version}-py3-none-any.whl"
    info = f"{dist}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        for member, payload in members.items():
            zf.writestr(member, payload)
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(
            f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        )
        zf.writestr(f"{info}/RECORD", "")
    return path


def store_for(tmp_path: Path, manifest, **kwargs: object) -> ModelStore:  # type: ignore[no-untyped-def]
    kwargs.setdefault("progress", False)
    kwargs.setdefault("retries", 2)
    kwargs.setdefault("timeout_seconds", 5.0)
    return ModelStore(tmp_path / "store", manifest, **kwargs)  # type: ignore[arg-type]


# ---------------------------------------------------------------- archives


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, payload in members.items():
            zf.writestr(name, payload)
    return buf.getvalue()


def tar_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, payload in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tf.addfile(info, io.BytesIO(payload))
    return buf.getvalue()
