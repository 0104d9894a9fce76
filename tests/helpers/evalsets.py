"""The eval sets under tests/data: where they are, and the checks every set must pass against the tools."""

from __future__ import annotations

from pathlib import Path

from jsonschema import Draft202012Validator

from agent.devtools.eval_cases import ANY_OF, EvalCase

DATA = Path(__file__).resolve().parents[1] / "data"
EVAL_DATA = DATA / "eval"  # the development and held-out sets
# Tools added after the first eval sets were written (tests/data/eval/ covers them).
ADDED_LATER = {"repeat_last_order"}


def alternatives(value: object) -> list[object]:
    """The values an expected argument accepts: each one of {"$any": [...]}, or the value itself."""
    if isinstance(value, dict) and set(value) == {ANY_OF}:
        return list(value[ANY_OF])
    return [value]


def assert_args_fit_schemas(cases: list[EvalCase], registry) -> None:  # type: ignore[no-untyped-def]
    """Expected args as a partial call: each arg exists, each value (every alternative) fits its type/enum."""
    for c in cases:
        if c.expect.tool is None:
            continue
        assert c.expect.tool in registry, f"{c.id}: unknown tool {c.expect.tool}"
        schema = dict(registry.get(c.expect.tool).parameters)
        properties = schema["properties"]
        schema.pop("required", None)
        schema.pop("minProperties", None)
        validator = Draft202012Validator(schema)
        for key, value in c.expect.args.items():
            assert key in properties, f"{c.id}: {c.expect.tool} has no argument {key!r}"
            for alt in alternatives(value):
                errors = [e.message for e in validator.iter_errors({key: alt})]
                assert not errors, f"{c.id}: {key}={alt!r}: {errors}"
