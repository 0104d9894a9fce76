"""Hostile configs: whatever the file, its bytes or the environment hold, the result is a valid Config or one
bounded ConfigError line (exit 78) within a second. Never another exception, never a hang."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.core.config import MAX_CONFIG_BYTES, MAX_MESSAGE_CHARS, Config, load_config
from agent.core.errors import EX_CONFIG, ConfigError

CLI = Path(sys.executable).with_name("cabin-agent")
# A bomb like the review's: under 350 bytes, nine levels of nine aliases (9^9 = 387 million strings expanded).
ALIAS_BOMB = "".join(
    f"{name}: &{name} [{','.join([f'*{prev}'] * 9) if prev else ','.join(['lol'] * 9)}]\n"
    for name, prev in zip("abcdefghi", [None, *"abcdefgh"], strict=True)
)
# A smaller one validates (aliases expand to a list where a string belongs): it printed a 34 MB line.
SMALL_BOMB = (
    "a: &a [xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx, xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx, xxxxxxxxxxxxxxxxxxxxxxx]\n"
    "b: &b [*a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b]\n"
    "d: &d [*c, *c, *c, *c, *c, *c, *c, *c]\nwake:\n  phrase: [*d, *d, *d, *d, *d, *d, *d, *d]\n"
)


@pytest.fixture(autouse=True)
def _no_ambient_config(monkeypatch):
    for name in list(os.environ):
        if name.startswith("CABIN_AGENT") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("CABIN_AGENT") and k != "CREDENTIALS_DIRECTORY"
    }


def refused(load, within_s: float = 1.0) -> str:  # type: ignore[no-untyped-def]
    """The one line a bad config gets; fails unless it is a ConfigError, bounded, and quick."""
    started = time.monotonic()
    with pytest.raises(ConfigError) as caught:
        load()
    took = time.monotonic() - started
    message = caught.value.message
    assert caught.value.exit_status == EX_CONFIG
    assert "\n" not in message and message.isprintable(), repr(message[:200])
    assert len(message) <= MAX_MESSAGE_CHARS, len(message)
    assert took < within_s, f"{took:.2f} s"
    return message


def write(tmp_path: Path, text: str | bytes, name: str = "config.yaml") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


# ---------------------------------------------------------------- each defect of the review


def test_config_deep_nesting_exits_78(tmp_path: Path) -> None:
    flow = write(tmp_path, "wake:\n  phrase: " + "[" * 5000 + "]" * 5000 + "\n", "flow.yaml")
    message = refused(lambda: load_config(flow, environ={}))  # libyaml's own limit may speak first
    assert message.startswith(f"{flow}:2:") and "nest" in message
    block = write(tmp_path, "".join(" " * i + f"k{i}:\n" for i in range(200)), "block.yaml")
    message = refused(lambda: load_config(block, environ={}))
    assert message.startswith(f"{block}:33:") and "nested deeper than 32 levels" in message
    # The same through the environment: thousands of parts in the name, or a deep value.
    deep_name = {"CABIN_AGENT__" + "__".join(["LLM"] * 5000): "1"}
    assert "nested deeper than 32 levels" in refused(lambda: load_config(None, environ=deep_name))
    deep_value = {"CABIN_AGENT__LLM__N_THREADS": "[" * 2000 + "]" * 2000}  # taken as the text it is
    message = refused(lambda: load_config(None, environ=deep_value))
    assert message.startswith("llm.n_threads: Input should be a valid integer") and "(got '[[[[" in message


def test_config_not_utf8_exits_78(tmp_path: Path) -> None:
    path = write(tmp_path, b"language: en\nwake:\n  phrase: hey \xff\xfe cabin\n")
    assert refused(lambda: load_config(path, environ={})) == (
        f"{path}:3: not UTF-8 text (byte 0xff at offset 33)"
    )


def test_config_alias_bomb_fast_and_bounded(tmp_path: Path) -> None:
    assert len(ALIAS_BOMB) < 350
    bomb = write(tmp_path, ALIAS_BOMB, "bomb.yaml")
    assert refused(lambda: load_config(bomb, environ={})) == (
        f"{bomb}:1:4: invalid YAML (anchors and aliases (&name, *name) are not allowed)"
    )
    small = write(tmp_path, SMALL_BOMB, "small.yaml")
    assert "anchors and aliases" in refused(lambda: load_config(small, environ={}))
    # An alias in an environment value is taken as the text it is, never expanded.
    env = {"CABIN_AGENT__WAKE__PHRASE": "&a [*a]"}
    assert load_config(None, environ=env).wake.phrase == "&a [*a]"


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_config_fifo_does_not_hang(tmp_path: Path, kind: str) -> None:
    if kind == "fifo":
        path = tmp_path / "config.yaml"
        os.mkfifo(path)  # nobody ever writes: opening it for reading would block forever
    elif kind == "directory":
        path = tmp_path / "config.d"
        path.mkdir()
    else:
        path = Path("/dev/zero")  # endless
    expected = {"fifo": "a FIFO", "directory": "a directory", "device": "a device"}[kind]
    assert refused(lambda: load_config(path, environ={})) == (
        f"config file {path}: is {expected}, not a regular file"
    )


def test_config_too_large_is_refused_before_parsing(tmp_path: Path) -> None:
    path = write(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\n")
    assert f"more than the {MAX_CONFIG_BYTES} allowed" in refused(lambda: load_config(path, environ={}))


def test_config_huge_values_are_shortened_in_the_message(tmp_path: Path) -> None:
    path = write(tmp_path, "wake:\n  phrase: [" + ", ".join(["y" * 1000] * 25) + "]\n")
    message = refused(lambda: load_config(path, environ={}))
    assert message.startswith("wake.phrase: Input should be a valid string (got ['yyyy")
    key = write(tmp_path, "llm:\n  " + "k" * 1000 + ": 1\n", "key.yaml")  # YAML allows 1024 for a key
    assert refused(lambda: load_config(key, environ={})).startswith("llm.kkkk")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("language: 2024-13-45\n", "invalid YAML value (month must be in 1..12)"),
        ("llm:\n  n_threads: " + "9" * 5000 + "\n", "invalid YAML value (Exceeds the limit"),
        ("llm: !!python/object:os.system {}\n", "invalid YAML"),
        ("? [a, b]\n: c\n", "invalid YAML"),
        ("wake:\n  phrase: !!binary /w==\n", "wake.phrase"),  # the byte 0xff: not text
    ],
    ids=["bad-date", "huge-int", "python-tag", "list-as-key", "binary"],
)
def test_config_odd_yaml_values_exit_78(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in refused(lambda: load_config(write(tmp_path, text), environ={}))


def test_env_overrides_that_contradict_each_other_exit_78() -> None:
    env = {"CABIN_AGENT__LLM": "fast", "CABIN_AGENT__LLM__N_THREADS": "2"}
    assert "llm" in refused(lambda: load_config(None, environ=env))
    env = {"CABIN_AGENT__LLM__N_THREADS": "2", "CABIN_AGENT__LLM": "fast"}  # the other order
    assert "llm" in refused(lambda: load_config(None, environ=env))


def test_a_credential_that_is_a_fifo_does_not_hang(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    os.mkfifo(creds / "meals-api-key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_config(None, environ={}) == Config()  # not a regular file: not a credential


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, subprocess.CompletedProcess[str]]:
    """The worst of them through the real command, side by side (each start costs about a second)."""
    root = tmp_path_factory.mktemp("hostile-configs")
    os.mkfifo(root / "fifo.yaml")
    (root / "deep.yaml").write_text("llm: " + "[" * 5000 + "]" * 5000 + "\n")
    (root / "bomb.yaml").write_text(ALIAS_BOMB)
    (root / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))

    def run(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        done = subprocess.run(
            [str(CLI), "--config", str(root / name), "models", "list"],
            capture_output=True, text=True, env=clean_env(), cwd=root, timeout=60,
        )  # fmt: skip
        return name, done

    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(run, ["fifo.yaml", "deep.yaml", "bomb.yaml", "binary.yaml"]))


@pytest.mark.parametrize("name", ["fifo.yaml", "deep.yaml", "bomb.yaml", "binary.yaml"])
def test_the_command_exits_78_with_one_short_line(cli_runs, name: str) -> None:
    done = cli_runs[name]
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("cabin-agent: "), done.stderr[-2000:]
    assert len(lines[0]) <= MAX_MESSAGE_CHARS + len("cabin-agent: ")
    assert "Traceback" not in done.stderr and done.stdout == ""


# ---------------------------------------------------------------- properties: anything in, one of two out

SECTIONS = sorted(Config.model_fields)
KEYS = sorted({k for s in SECTIONS for k in getattr(type(getattr(Config(), s)), "model_fields", {})})
FRAGMENTS = [
    "&a ", "*a", "[", "]", "{", "}", ": ", "- ", "\n", "  ", "    ", ",", "? ", "<<: ", "!!binary ",
    "!!python/name:os.system", "!!set ", "!!omap ", '"', "'", "#", "|", ">", "%YAML 1.1\n", "---\n", "...\n",
    "~", "null", ".nan", "-.inf", "1e400", "0x1F", "0o17", "2024-13-45", "2024-01-01 10:00:00", "9" * 50,
    "yes", "on", "\t", "\\x00", "\ufeff", "\x85", "é", "导航", *SECTIONS, *KEYS,
]  # fmt: skip
yaml_like = st.lists(st.sampled_from(FRAGMENTS), max_size=60).map("".join)
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
trees = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(SECTIONS + KEYS) | st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=25,
)
configs = st.dictionaries(st.sampled_from(SECTIONS) | st.text(max_size=8), trees, max_size=5)
env_names = st.lists(
    st.sampled_from([s.upper() for s in SECTIONS + KEYS]) | st.text(min_size=1, max_size=6),
    min_size=1,
    max_size=5,
).map(lambda parts: "CABIN_AGENT__" + "__".join(parts))
environs = st.dictionaries(env_names, st.text(max_size=60) | yaml_like, max_size=4)

PROPERTY = settings(
    deadline=timedelta(seconds=1),
    # More for a longer fuzz run: CABIN_AGENT_FUZZ_EXAMPLES=5000 pytest tests/core/test_config_faults.py
    max_examples=int(os.environ.get("CABIN_AGENT_FUZZ_EXAMPLES", "150")),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def a_config_or_one_line(load) -> None:  # type: ignore[no-untyped-def]
    started = time.monotonic()
    try:
        result = load()
    except ConfigError as err:
        assert err.exit_status == EX_CONFIG
        assert "\n" not in err.message and err.message.isprintable(), repr(err.message[:200])
        assert 0 < len(err.message) <= MAX_MESSAGE_CHARS
    else:
        assert isinstance(result, Config)
    assert time.monotonic() - started < 1.0


@PROPERTY
@given(text=st.text(max_size=400) | yaml_like)
def test_any_text_gives_a_config_or_one_line(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    a_config_or_one_line(lambda: load_config(path, environ={}))


@PROPERTY
@given(data=st.binary(max_size=400))
def test_any_bytes_give_a_config_or_one_line(tmp_path: Path, data: bytes) -> None:
    path = write(tmp_path, data)
    a_config_or_one_line(lambda: load_config(path, environ={}))


@PROPERTY
@given(data=configs)
def test_any_structure_gives_a_config_or_one_line(tmp_path: Path, data: dict) -> None:
    path = write(tmp_path, yaml.safe_dump(data, allow_unicode=True))
    a_config_or_one_line(lambda: load_config(path, environ={}))


@PROPERTY
@given(environ=environs, data=configs)
def test_any_environment_gives_a_config_or_one_line(tmp_path: Path, environ: dict, data: dict) -> None:
    path = write(tmp_path, yaml.safe_dump(data, allow_unicode=True))
    a_config_or_one_line(lambda: load_config(path, environ=environ))
