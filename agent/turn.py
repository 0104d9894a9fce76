"""One turn of conversation: the driver's words in, validated tool calls and a short spoken reply out.

The model decides with its first token whether to call a tool (Qwen answers a call with `{"name": ...`) or to
speak. A call is then decoded in two constrained steps: the tool name (checked against the registry: an unknown
name means "no tool can do this"), and the arguments under a grammar built from that tool's JSON schema. The
arguments are validated again and grounded in the utterance before any plugin runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from agent.config import Config
from agent.dialogue import bare_answer, classify_confirmation, detect_language
from agent.errors import LlmError
from agent.events import EventBus, TurnTimings
from agent.llm.base import GenerationStep, LanguageModel
from agent.llm.grounding import cue_present, ground_arguments, prune_schema
from agent.llm.prompts import line, system_prompt, tools_for_prompt
from agent.logging import bind_turn, get_logger, unbind_turn
from agent.plugins.base import Tool, ToolContext, ToolResult
from agent.plugins.loader import ToolRegistry

log = get_logger("turn")

CONFIRMATION_TIMEOUT_S = 60.0
# Statuses of calls that never reached a plugin; TurnResult lists them apart from the calls made.
REJECTED = frozenset({"unknown-tool", "invalid", "refused"})
_DONE = object()


@dataclass
class ToolCallRecord:
    name: str
    arguments: dict[str, Any]
    result: dict[str, Any] | None = None
    valid: bool = True
    status: str = "ok"  # ok, failed, invalid, refused, unknown-tool, awaiting-confirmation, cancelled
    error: str | None = None
    dropped_arguments: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = {"name": self.name, "arguments": self.arguments, "result": self.result, "valid": self.valid,
               "status": self.status}
        if self.error:
            out["error"] = self.error
        if self.dropped_arguments:
            out["dropped_arguments"] = self.dropped_arguments
        return out


@dataclass
class TurnResult:
    turn_id: str
    text: str
    language: str
    tool_calls: list[ToolCallRecord]
    reply: str
    timings_ms: dict[str, float]
    awaiting_confirmation: bool = False
    transcript: str | None = None
    # Calls the model attempted that never reached a plugin (unknown tool, invalid, refused): kept for eval and logs.
    rejected_calls: list[ToolCallRecord] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        out = {
            "text": self.text,
            "tool_calls": [c.as_dict() for c in self.tool_calls],
            "reply": self.reply,
            "timings_ms": self.timings_ms,
            "language": self.language,
            "turn_id": self.turn_id,
            "awaiting_confirmation": self.awaiting_confirmation,
            "rejected_calls": [c.as_dict() for c in self.rejected_calls],
        }
        if self.transcript is not None:
            out["transcript"] = self.transcript
        return out


@dataclass
class PendingAction:
    tool: Tool
    arguments: dict[str, Any]
    language: str
    utterance: str
    expires_at: float


class Assistant:
    """Runs turns against one local model and one tool registry, keeping a short history for follow-ups."""

    def __init__(
        self,
        config: Config,
        registry: ToolRegistry,
        model: LanguageModel,
        *,
        events: EventBus | None = None,
        services: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry
        self.model = model
        self.events = events or EventBus()
        self.services = services or {}
        self.history: list[list[dict[str, Any]]] = []  # one list of messages per past turn
        self.pending: PendingAction | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llm")
        self._tools_prompt = tools_for_prompt(list(registry))
        self._system = {"role": "system", "content": system_prompt(config.language)}
        self._aliases = self._alias_groups()
        self.warm_info: dict[str, Any] = {}

    def _alias_groups(self) -> list[list[str]]:
        groups = [[p.name, p.address, *p.aliases] for p in self.config.vehicle.places]
        groups += [[c.name, *c.aliases] for c in self.config.vehicle.contacts]
        return groups

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ model access (one worker thread)

    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def warm(self) -> dict[str, Any]:
        """Make the system prompt (with every tool) resident in the KV cache; restored from disk when possible."""
        prompt = self.model.render([self._system, {"role": "user", "content": "hi"}], self._tools_prompt)
        self.warm_info = await self._in_worker(self.model.warm, prompt)
        return self.warm_info

    async def _stream(self, tokens: Sequence[int], **kwargs: Any) -> AsyncIterator[GenerationStep]:
        """Generation steps from the worker thread; leaving the loop early stops the model at the next token."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                for step in self.model.generate(tokens, should_stop=stop.is_set, **kwargs):
                    loop.call_soon_threadsafe(queue.put_nowait, step)
            except BaseException as err:  # handed to the event loop, raised there
                loop.call_soon_threadsafe(queue.put_nowait, err)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, _DONE)

        loop.run_in_executor(self._executor, work)
        try:
            while True:
                item = await queue.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise LlmError(f"generation failed: {item}") from item
                yield item
        finally:
            # Barge-in or an early stop: the worker notices before its next token; the executor keeps order.
            stop.set()

    async def _collect(self, tokens: Sequence[int], *, stop_at: str | None = None, **kwargs: Any) -> tuple[str, list[int]]:
        text, ids = "", []
        async with contextlib.aclosing(self._stream(tokens, **kwargs)) as steps:
            async for step in steps:
                ids.append(step.token)
                text += step.text
                if stop_at is not None and stop_at in text:
                    break
        return text, ids

    # ------------------------------------------------------------------ the turn

    def _messages(self, user_text: str) -> list[dict[str, Any]]:
        past = [m for turn in self.history[-self.config.llm.history_turns :] for m in turn] if self.config.llm.history_turns else []
        return [self._system, *past, {"role": "user", "content": user_text}]

    def _remember(self, messages: list[dict[str, Any]]) -> None:
        self.history.append(messages)
        del self.history[: -max(1, self.config.llm.history_turns)]

    def reset(self) -> None:
        self.history.clear()
        self.pending = None

    async def turn(
        self,
        text: str,
        *,
        on_text: Callable[[str], Any] | None = None,
        timings: TurnTimings | None = None,
    ) -> TurnResult:
        """Run one turn. `on_text` receives the reply as it is produced (sentence streaming for speech)."""
        turn_id = uuid.uuid4().hex[:12]
        bind_turn(turn_id)
        timings = timings or TurnTimings()
        language = detect_language(text, self.config.language)
        ctx = ToolContext(config=self.config, language=language, utterance=text, services=self.services)
        calls: list[ToolCallRecord] = []
        emit = on_text or (lambda _t: None)
        self.events.publish("turn-started", turn_id=turn_id)
        log.info("turn-started", text=text, language=language)
        try:
            reply, awaiting = await self._run(text, ctx, calls, timings, emit)
        finally:
            unbind_turn()
        timings.mark("total")
        made = [c for c in calls if c.status not in REJECTED]
        result = TurnResult(turn_id, text, language, made, reply, timings.as_dict(), awaiting_confirmation=awaiting,
                            rejected_calls=[c for c in calls if c.status in REJECTED])
        self.events.publish("turn-finished", turn_id=turn_id, timings_ms=result.timings_ms)
        log.info("turn-finished", reply=reply, tools=[c.name for c in calls], timings_ms=result.timings_ms)
        return result

    async def _run(
        self, text: str, ctx: ToolContext, calls: list[ToolCallRecord], timings: TurnTimings, emit: Callable[[str], Any]
    ) -> tuple[str, bool]:
        language = ctx.language
        # An answer to "Shall I order it?" is handled without the model.
        if self.pending is not None:
            pending, self.pending = self.pending, None
            answer = classify_confirmation(text)
            expired = asyncio.get_running_loop().time() > pending.expires_at
            if answer is not None and not expired:
                if answer == "no":
                    calls.append(ToolCallRecord(pending.tool.name, pending.arguments, status="cancelled"))
                    reply = line(language, "cancelled")
                    emit(reply)
                    return reply, False
                ctx.utterance = pending.utterance
                record = ToolCallRecord(pending.tool.name, pending.arguments)
                calls.append(record)
                reply = await self._execute(pending.tool, record, ctx, timings, messages=None)
                emit(reply)
                return reply, False

        # A bare "yes" with nothing pending must not reach the model: it would happily claim to have done
        # whatever it guesses was meant ("Great, I'll order it!") with nothing done.
        answer = bare_answer(text)
        if answer is not None:
            reply = line(language, "nothing_pending" if answer == "yes" else "cancelled")
            emit(reply)
            return reply, False

        messages = self._messages(text)
        prompt = await self._in_worker(self.model.render, messages, self._tools_prompt)
        timings.mark("prompt_ready")

        # Phase 1: the first tokens say whether this is a tool call or a spoken answer. Qwen starts a call with
        # `{"name"`, `<tool_call>` or a wrapper such as `<tools>`; a few tokens are held back until that is clear.
        reply_text, held = "", ""
        generated: list[int] = []
        mode = "reply"
        async with contextlib.aclosing(self._stream(prompt.tokens, max_tokens=self.config.llm.max_reply_tokens)) as steps:
            async for step in steps:
                if not generated:
                    timings.mark("first_token")
                    self.events.publish("first-token")
                generated.append(step.token)
                if step.token == getattr(self.model, "tool_call_token", -1) or "<tool_call>" in step.text:
                    mode = "tool"
                    break
                if held is not None:
                    held += step.text
                    verdict = _call_start(held)
                    if verdict == "tool":
                        mode = "tool"
                        break
                    if verdict == "undecided":
                        continue
                    step_text, held = held, None
                else:
                    step_text = step.text
                reply_text += step_text
                if step_text:
                    timings.mark("reply_first_text")
                    emit(step_text)
        if mode == "reply":
            reply = reply_text.strip() or line(language, "not_caught")
            self._remember([messages[-1], {"role": "assistant", "content": reply}])
            return reply, False

        # Phase 2: the tool's name, decoded freely after a forced `{"name": "` and checked against the registry.
        head = '{"name": "'
        base = list(prompt.tokens) + self.model.tokenize(head)
        name_text, _ = await self._collect(base, max_tokens=16, stop_at='"')
        name = name_text.split('"', 1)[0].strip()
        if name not in self.registry:
            record = ToolCallRecord(name or "?", {}, valid=False)
            calls.append(record)
            timings.mark("tool_call_complete")
            return self._reject(record, "unknown-tool", "no tool can do this", "cannot", language, emit, messages)
        tool = self.registry.get(name)

        # Phase 3: the arguments, constrained by the tool's own JSON schema.
        args_prefix = self.model.tokenize(f'{{"name": "{name}", "arguments": ')
        arg_tokens = list(prompt.tokens) + args_prefix
        # Optional arguments whose cue words were not said are left out of the grammar: the model cannot invent
        # them, and the call is shorter to decode.
        constrained = prune_schema(tool, ctx.utterance) if self.config.llm.constrained else None
        args_text, _ = await self._collect(arg_tokens, max_tokens=self.config.llm.max_call_tokens, json_schema=constrained)
        timings.mark("tool_call_complete")
        self.events.publish("tool-call-complete", tool=name)
        try:
            arguments = json.loads(args_text.strip() or "{}")
        except json.JSONDecodeError:
            arguments = None
        if isinstance(arguments, dict):
            arguments = {k: _clean(v) for k, v in arguments.items()}
        record = ToolCallRecord(name, arguments if isinstance(arguments, dict) else {})
        calls.append(record)
        if not isinstance(arguments, dict):
            return self._reject(record, "invalid", f"unparseable arguments: {args_text[:80]!r}", "clarify",
                                language, emit, messages)

        # Intent: "open the sunroof" must not become navigate_to("sunroof"). A follow-up to the same tool
        # ("make it 22 instead") carries its intent from the previous turn.
        if tool.intents and not cue_present(tool.intents, ctx.utterance) and name not in self._recent_tools():
            return self._reject(record, "refused", f"nothing in the request asks for {name}", "cannot",
                                language, emit, messages)

        # Grounding, then repair: optional arguments nobody said, or that break the schema, are dropped;
        # a call whose required arguments were invented is refused.
        grounded, ungrounded = ground_arguments(tool, record.arguments, ctx.utterance, self._aliases)
        invented = [k for k in record.arguments if k not in grounded]
        kept, broken = self._without_invalid_optionals(tool, grounded)
        record.dropped_arguments = {k: v for k, v in record.arguments.items() if k not in kept}
        record.arguments = kept
        problems = self.registry.validation_errors(name, kept)
        if ungrounded or (problems and invented):
            # What is left of the call is what the model made up: nothing to do without asking.
            return self._reject(record, "refused", f"not said by the driver: {', '.join(ungrounded or invented)}",
                                "clarify", language, emit, messages)
        if problems:
            record.valid = False
            return self._reject(record, "invalid", "; ".join([*broken, *problems]), "clarify", language, emit,
                                messages)

        # History shows the call the way this model writes one (bare JSON), so follow-up turns keep calling tools.
        call_message = {"role": "assistant",
                        "content": json.dumps({"name": name, "arguments": kept}, ensure_ascii=False)}
        if tool.needs_confirmation:
            question = await self._confirmation(tool, kept, ctx)
            if question is not None:
                record.status = "awaiting-confirmation"
                self.pending = PendingAction(tool, kept, language, ctx.utterance,
                                             asyncio.get_running_loop().time() + CONFIRMATION_TIMEOUT_S)
                emit(question)
                self._remember([messages[-1], call_message,
                                {"role": "tool", "content": json.dumps({"status": "awaiting confirmation"})},
                                {"role": "assistant", "content": question}])
                return question, True
        reply = await self._execute(tool, record, ctx, timings, messages=[*messages, call_message])
        emit(reply)
        return reply, False

    def _reject(
        self,
        record: ToolCallRecord,
        status: str,
        why: str,
        reply_key: str,
        language: str,
        emit: Callable[[str], Any],
        messages: list[dict[str, Any]],
    ) -> tuple[str, bool]:
        """A call that never reaches a plugin: recorded with why, and one short honest line to the driver."""
        record.status, record.error = status, why
        log.info("tool-call-rejected", tool=record.name, status=status, why=why)
        reply = line(language, reply_key)
        emit(reply)
        self._remember([messages[-1], {"role": "assistant", "content": reply}])
        return reply, False

    def _without_invalid_optionals(self, tool: Tool, args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Drop optional arguments that break the schema (a fan level of 10**15): the rest of the call stands.

        Returns the arguments kept and the validation errors of those dropped.
        """
        required = set(tool.parameters.get("required", []))
        kept, reasons = dict(args), []
        while True:
            errors = self.registry.validation_errors(tool.name, kept)
            droppable = {e.split(":", 1)[0].split(".", 1)[0] for e in errors} & set(kept) - required
            if not droppable:
                return kept, reasons
            reasons += [e for e in errors if e.split(":", 1)[0].split(".", 1)[0] in droppable]
            for name in droppable:
                kept.pop(name)

    def _recent_tools(self) -> set[str]:
        """Tools called in the remembered turns (their calls are kept as `{"name": ...}` assistant messages)."""
        names = set()
        for turn in self.history[-max(1, self.config.llm.history_turns) :] if self.config.llm.history_turns else []:
            for message in turn:
                content = message.get("content") or ""
                if message.get("role") == "assistant" and content.startswith('{"name"'):
                    with contextlib.suppress(ValueError, AttributeError):
                        names.add(json.loads(content)["name"])
        return names

    def _tool_start_tokens(self) -> list[int]:
        return [t for t in (getattr(self.model, "tool_call_token", -1),) if t >= 0]

    async def _confirmation(self, tool: Tool, args: dict[str, Any], ctx: ToolContext) -> str | None:
        plugin = next((p for p in self.registry.plugins if p.name == tool.plugin), None)
        ask = getattr(plugin, "confirmation_prompt", None)
        if ask is None:
            return None
        try:
            return await ask(ctx, tool.name, args)
        except Exception as err:  # a broken plugin must not break the turn
            log.warning("confirmation-prompt-failed", tool=tool.name, error=str(err))
            return None

    async def _execute(
        self,
        tool: Tool,
        record: ToolCallRecord,
        ctx: ToolContext,
        timings: TurnTimings,
        messages: list[dict[str, Any]] | None,
    ) -> str:
        result: ToolResult = await self.registry.call(tool.name, record.arguments, ctx)
        timings.mark("tool_done")
        self.events.publish("tool-done", tool=tool.name, ok=result.ok)
        record.result = result.data if result.ok else {"error": result.error}
        record.status = "ok" if result.ok else "failed"
        record.error = None if result.ok else result.error
        if result.say and (self.config.llm.templated_confirmations or not result.ok):
            reply = result.say
        elif messages is not None:
            reply = await self._second_pass(messages, result)
        else:
            reply = result.say or line(ctx.language, "done" if result.ok else "failed")
        if messages is not None:  # [..., user, assistant tool call]
            # History is re-read on the next turn (prompt tokens cost time): keep the tool's outcome short.
            outcome = {"ok": result.ok, "said": reply} if result.ok else {"ok": False, "error": result.error}
            self._remember([messages[-2], messages[-1],
                            {"role": "tool", "content": json.dumps(outcome, ensure_ascii=False)},
                            {"role": "assistant", "content": reply}])
        return reply

    async def _second_pass(self, messages: list[dict[str, Any]], result: ToolResult) -> str:
        """The model words the tool's result in one or two short sentences."""
        tool_msg = {"role": "tool", "content": json.dumps(result.for_model(), ensure_ascii=False)[:1500]}
        prompt = await self._in_worker(self.model.render, [*messages, tool_msg], self._tools_prompt)
        text, _ = await self._collect(prompt.tokens, max_tokens=self.config.llm.max_reply_tokens,
                                      ban_first=self._tool_start_tokens())
        return text.strip().split("\n")[0] or line("en", "done")


def _clean(value: Any) -> Any:
    """Strings as a driver would say them: the model sometimes closes a value with its own '}}' habit."""
    if isinstance(value, str):
        return value.strip().rstrip("}").strip()
    if isinstance(value, float):
        # The grammar lets the model write 21.000000000000004; nobody sets a car to that.
        value = round(value, 3)
        return int(value) if value.is_integer() else value
    return value


def _call_start(text: str) -> str:
    """'tool' when the model's first words open a tool call, 'reply' when they are speech, else 'undecided'."""
    head = text.lstrip()
    if not head:
        return "undecided"
    if head.startswith(("{", "[{", "```")):
        return "tool"
    if head.startswith("<"):
        if len(head) < 8 and "<tool".startswith(head[:5]):
            return "undecided"
        return "tool" if head.startswith(("<tool", "<function")) else "reply"
    if head.startswith("[") and len(head) < 2:
        return "undecided"
    return "reply"

