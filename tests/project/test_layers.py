"""Imports point one way: no import cycle in agent/ (imports inside functions count), the layer contract in
pyproject.toml holds (`lint-imports`), only the CLI imports typer, and what the cycles hid stays fixed."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from agent.core.config import Config

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "agent"


def module_files(package: Path = PACKAGE) -> dict[str, Path]:
    """Every module under the package by dotted name (a package by its __init__.py)."""
    found: dict[str, Path] = {}
    for path in sorted(package.rglob("*.py")):
        parts = list(path.relative_to(package.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(module: str, path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """Every import in `module`'s body (top level, in functions, under TYPE_CHECKING) as (module, names):
    `import a.b` is ("a.b", ()), `from a import b, c` is ("a", ("b", "c")), relative imports made absolute."""
    found: list[tuple[str, tuple[str, ...]]] = []
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, ()) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            source = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            found.append((source, tuple(alias.name for alias in node.names)))
    return found


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the package's modules it imports (each name mapped to the nearest module that exists)."""
    files = module_files(package)

    def nearest(name: str) -> str:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name

    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        targets: set[str] = set()
        for source, names in imports(module, path):
            # `from pkg import submodule` is an edge to the submodule; `from mod import name` one to mod.
            subs = [f"{source}.{name}" for name in names if f"{source}.{name}" in files]
            if len(subs) < len(names) or not names:
                subs.append(nearest(source))
            targets.update(t for t in subs if t and t != module)
        graph[module] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def test_the_graph_sees_imports_inside_functions(tmp_path: Path) -> None:
    # The two cycles of issue 11 hid in function bodies; a graph of top-level imports alone would miss them.
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "loop.py").write_text("from pkg.stage import Stage\n")
    (pkg / "stage.py").write_text("class Stage:\n    def build(self):\n        from pkg.loop import x\n")
    assert find_cycle(import_graph(pkg)) == ["pkg.loop", "pkg.stage", "pkg.loop"]
    (pkg / "stage.py").write_text("class Stage:\n    pass\n")
    assert find_cycle(import_graph(pkg)) is None


def test_no_import_cycle_in_agent() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle (in-function imports count): " + " -> ".join(cycle or [])


def test_lint_imports_keeps_the_layer_contract() -> None:
    tool = shutil.which("lint-imports") or shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("lint-imports is missing: pip install -e '.[dev]' (the contract must run in CI)")
        pytest.skip("lint-imports is not installed (pip install -e '.[dev]')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [tool],  # reads [tool.importlinter] from pyproject.toml in cwd
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


CLI_LIBRARIES = ("typer", "click")  # the command-line libraries


def test_only_the_cli_imports_typer() -> None:
    # The daemon runs under systemd with no terminal; a head unit's install need not load click and rich.
    files = module_files()
    offenders = {
        module: sorted(s for s, _ in imports(module, path) if s.partition(".")[0] in CLI_LIBRARIES)
        for module, path in files.items()
        if not (module == "agent.cli" or module.startswith("agent.cli."))
    }
    assert {m: names for m, names in offenders.items() if names} == {}


def test_every_command_group_is_registered_without_swallowing_import_errors() -> None:
    # agent/commands.py caught ImportError around the model manager's commands: a broken import silently
    # removed `models` and `doctor` from the CLI.
    import typer.main

    from agent.cli import app

    names = set(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert {"say", "chat", "eval", "demo", "run", "status", "ptt", "ask", "cancel"} <= names
    assert {"transcribe", "speak", "devservice", "bench", "doctor", "outbox", "models"} <= names


def test_stage_factories_refuse_auto_engines() -> None:
    # "auto" is resolved once, at wiring; a factory that resolved it again was one half of the first cycle.
    from agent.core.errors import ModelError
    from agent.models.engines import resolved_config
    from agent.wake.factory import create_engine

    config = Config()
    assert config.wake.engine == "auto"
    with pytest.raises(ModelError) as err:
        create_engine(config)
    assert err.value.code == "engine-unresolved" and "resolved_config" in err.value.message
    concrete = resolved_config(config)
    assert "auto" not in (concrete.wake.engine, concrete.asr.engine)
    assert resolved_config(concrete) is concrete  # resolving twice changes nothing


async def test_recognizer_factory_refuses_auto_engines() -> None:
    from agent.asr.factory import load_recognizer
    from agent.core.errors import ModelError

    with pytest.raises(ModelError) as err:
        await load_recognizer(Config())
    assert err.value.code == "engine-unresolved"


def test_a_missing_optional_engine_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent.models.engines import EngineNotInstalled, resolved_config

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "faster_whisper" else real(name, *a)
    )
    config = Config.model_validate({"asr": {"engine": "whisper"}, "wake": {"engine": "none"}})
    with pytest.raises(EngineNotInstalled) as err:
        resolved_config(config)
    assert err.value.code == "engine-not-installed" and err.value.context["extra"] == "whisper"
    assert "pip install 'cabin-agent[whisper]'" in err.value.message
