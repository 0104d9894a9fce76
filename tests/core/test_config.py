"""Config: defaults < file < environment, validated once; a bad config names its key and stops the car's agent
with exit status 78 (EX_CONFIG), so systemd does not restart it in a loop."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pydantic
import pytest

from agent.core.config import Config, load_config
from agent.core.errors import EX_CONFIG, ConfigError

CLI = Path(sys.executable).with_name("cabin-agent")
CLI_TIMEOUT_S = 60


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without any CABIN_AGENT* or systemd credential variables from the developer's shell."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("CABIN_AGENT") and k not in ("CREDENTIALS_DIRECTORY", "JOURNAL_STREAM")}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CABIN_AGENT") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


# ---------------------------------------------------------------- each kind of bad config
#
# (kind, YAML text or None for a missing file, what the one line must contain)
BAD_CONFIGS = [
    ("unknown-key", "llm:\n  nthreads: 4\n",
     ["llm.nthreads", "unknown key", "allowed:", "n_threads", "n_ctx"]),
    ("unknown-section", "speech:\n  engine: vosk\n",
     ["speech", "unknown key", "allowed:", "asr", "tts", "wake"]),
    ("unknown-key-in-a-list-item",
     "vehicle:\n  places:\n    - name: gym\n      address: 5 Elm St\n      lat: 31.2\n",
     ["vehicle.places.0.lat", "unknown key", "allowed: address, aliases, name"]),
    ("wrong-type", "llm:\n  n_threads: many\n",
     ["llm.n_threads", "'many'", "valid integer"]),
    ("wrong-type-for-a-section", "llm: fast\n",
     ["llm:", "'fast'", "valid dictionary"]),
    ("wrong-type-in-a-union", "audio:\n  input_device: [1, 2]\n",
     ["audio.input_device:", "[1, 2]", "valid string", "valid integer"]),
    ("out-of-range", "llm:\n  n_threads: 0\n",
     ["llm.n_threads", "(got 0)", "greater than or equal to 1"]),
    ("out-of-range-above", "wake:\n  threshold: 1.5\n",
     ["wake.threshold", "(got 1.5)", "less than or equal to 1"]),
    ("wrong-enum-value", "language: fr\n",
     ["language", "'fr'", "'en' or 'zh'"]),
    ("bad-url", "services:\n  meals:\n    base_url: ftp://meals.local\n",
     ["services.meals.base_url", "'ftp://meals.local'", "http:// or https://"]),
    ("missing-file", None,
     ["does-not-exist.yaml", "not found"]),
    ("invalid-yaml", "llm:\n  n_threads: 2\n bad_indent: [\n",
     ["config.yaml:3:", "invalid YAML"]),
    ("top-level-list", "- llm\n- audio\n",
     ["(top level)", "mapping of sections", "list"]),
]
IDS = [kind for kind, _, _ in BAD_CONFIGS]
# Through the real command too: one of each kind the issue names (a command start costs about a second).
CLI_KINDS = ["unknown-key", "wrong-type", "out-of-range", "wrong-enum-value", "missing-file", "invalid-yaml"]
CLI_CONFIGS = [c for c in BAD_CONFIGS if c[0] in CLI_KINDS]


def bad_config_path(tmp_path: Path, text: str | None) -> Path:
    return tmp_path / "does-not-exist.yaml" if text is None else write(tmp_path, text)


@pytest.mark.parametrize(("kind", "text", "expected"), BAD_CONFIGS, ids=IDS)
def test_load_config_names_the_key_the_value_and_what_is_allowed(tmp_path, kind, text, expected):
    path = bad_config_path(tmp_path, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    message = caught.value.message
    for part in expected:
        assert part in message, f"{kind}: {part!r} missing from {message!r}"
    assert "\n" not in message
    assert caught.value.exit_status == EX_CONFIG
    assert caught.value.code == "config-invalid"


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory):
    """The bad configs through the real `cabin-agent` command, run side by side."""
    root = tmp_path_factory.mktemp("bad-configs")

    def run(item):
        kind, text, _ = item
        folder = root / kind
        folder.mkdir()
        path = bad_config_path(folder, text)
        done = subprocess.run([str(CLI), "--config", str(path), "models", "list"], capture_output=True,
                              text=True, env=clean_env(), cwd=folder, timeout=CLI_TIMEOUT_S)
        return kind, done

    with ThreadPoolExecutor(3) as pool:
        return dict(pool.map(run, CLI_CONFIGS))


@pytest.mark.parametrize(("kind", "text", "expected"), CLI_CONFIGS, ids=[c[0] for c in CLI_CONFIGS])
def test_the_command_exits_78_with_one_line_naming_the_problem(cli_runs, kind, text, expected):
    done = cli_runs[kind]

    assert done.returncode == EX_CONFIG, done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {done.stderr!r}"
    assert lines[0].startswith("cabin-agent: ")
    for part in expected:
        assert part in lines[0]
    assert "Traceback" not in done.stderr
    assert done.stdout == ""


def test_a_missing_file_named_by_cabin_agent_config_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(None, environ={"CABIN_AGENT_CONFIG": str(tmp_path / "gone.yaml")})


def test_several_problems_report_the_first_and_count_the_rest(tmp_path):
    path = write(tmp_path, "llm:\n  n_threads: 0\n  n_ctx: 10\nlanguage: fr\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})

    assert caught.value.message.endswith("(and 2 more)")


# ---------------------------------------------------------------- good configs and layering


def test_the_defaults_are_a_valid_config():
    config = Config()

    assert Config.model_validate(config.model_dump()) == config
    assert config.language == "en"
    assert config.wake_phrase == "hey cabin"
    assert config.logging.log_transcripts is False
    assert config.services.meals.api_key is None


def test_an_empty_file_means_the_defaults(tmp_path):
    assert load_config(write(tmp_path, ""), environ={}) == Config()


def test_a_file_overrides_the_defaults(tmp_path):
    path = write(tmp_path, "language: zh\nllm:\n  n_threads: 3\nvad:\n  silence_ms: 900\n")

    config = load_config(path, environ={})

    assert config.language == "zh"
    assert config.wake_phrase == "你好小车"
    assert config.llm.n_threads == 3
    assert config.vad.silence_ms == 900
    assert config.llm.n_ctx == Config().llm.n_ctx, "keys the file does not name keep their defaults"


def test_the_environment_overrides_the_file(tmp_path):
    path = write(tmp_path, "llm:\n  n_threads: 2\n  n_ctx: 2048\n")

    config = load_config(path, environ={"CABIN_AGENT__LLM__N_THREADS": "4", "UNRELATED": "x"})

    assert config.llm.n_threads == 4
    assert isinstance(config.llm.n_threads, int)
    assert config.llm.n_ctx == 2048


def test_an_environment_override_is_validated_like_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"llm\.n_threads: .*greater than or equal to 1 \(got 0\)"):
        load_config(write(tmp_path, ""), environ={"CABIN_AGENT__LLM__N_THREADS": "0"})
    with pytest.raises(ConfigError, match=r"llm\.n_thread: unknown key"):
        load_config(write(tmp_path, ""), environ={"CABIN_AGENT__LLM__N_THREAD": "4"})


def test_the_config_path_can_come_from_the_environment(tmp_path):
    path = write(tmp_path, "language: zh\n")

    assert load_config(None, environ={"CABIN_AGENT_CONFIG": str(path)}).language == "zh"


def test_a_secret_from_the_environment_is_never_printed(tmp_path):
    environ = {"CABIN_AGENT__SERVICES__MEALS__API_KEY": "sk-meals-123"}

    config = load_config(write(tmp_path, ""), environ=environ)

    key = config.services.meals.api_key
    assert key is not None and key.get_secret_value() == "sk-meals-123"
    for shown in (repr(config), str(config), repr(config.services), str(key), repr(key),
                  config.model_dump_json()):
        assert "sk-meals-123" not in shown


def test_secrets_come_from_systemd_credentials(tmp_path, monkeypatch):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "meals-api-key").write_text("sk-from-credential\n")
    (creds / "deliveries-api-key").write_text("dk-from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))

    config = load_config(write(tmp_path, ""), environ={})

    assert config.services.meals.api_key.get_secret_value() == "sk-from-credential"
    assert config.services.deliveries.api_key.get_secret_value() == "dk-from-credential"
    assert "sk-from-credential" not in repr(config)


def test_layering_is_file_then_credential_then_environment(tmp_path, monkeypatch):
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "meals-api-key").write_text("from-credential")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    path = write(tmp_path, "services:\n  meals:\n    api_key: from-file\n    timeout_seconds: 5\n")

    from_credential = load_config(path, environ={})
    from_env = load_config(path, environ={"CABIN_AGENT__SERVICES__MEALS__API_KEY": "from-env"})

    assert from_credential.services.meals.api_key.get_secret_value() == "from-credential"
    assert from_env.services.meals.api_key.get_secret_value() == "from-env"
    assert from_env.services.meals.timeout_seconds == 5, "the rest of the section comes from the file"


def test_the_config_is_frozen():
    config = Config()

    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.llm.n_threads = 8  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        config.language = "zh"  # type: ignore[misc]
