"""One turn of conversation: the driver's words in, the calls they ask for (decided by the model), a short reply.

The model decides: its own probabilities over every label (each tool, or `say`) after the cached prompt pick
what to do; the arguments are decoded under the tool's JSON schema, grounded in what was said, and made
concrete by the tool's plugin (a catalogue item, a saved place), which may instead ask the one question that
is missing. Purchases wait for a clear yes. Nothing here is a keyword gate: words only ever fill values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent.core.config import Config
from agent.core.errors import LlmError
from agent.core.events import EventBus, ModelCall, TurnTrace
from agent.core.logging import bind_turn, get_logger, unbind_turn
from agent.core.words import has_cjk
from agent.llm.base import ChatPrompt, GenerationStep, LanguageModel
from agent.plugins.base import Plugin, Prepared, Question, Tool, ToolContext, ToolResult
from agent.plugins.loader import ToolRegistry
from agent.understanding.answers import CONFIRMATION_TIMEOUT_S, Answers
from agent.understanding.confirmation import bare_answer
from agent.understanding.context import Conversation
from agent.understanding.grounding import ground_arguments, prune_schema
from agent.understanding.language import detect_language
from agent.understanding.prompt import build_prompt
from agent.understanding.record import Pending, ToolCallRecord, TurnInProgress, TurnResult
from agent.understanding.replies import claims_action, line
from agent.understanding.wire import Call, Decision, call_format

log = get_logger("turn")

QUESTION_TIMEOUT_S = 45.0
MAX_CALLS_PER_TURN = 3
# Statuses of calls that never reached a plugin; TurnResult lists them apart from the calls made.
REJECTED = frozenset({"unknown-tool", "invalid", "not-applicable"})
_DONE = object()
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s*")


class Assistant(Answers):
    """Runs turns against one local model and one tool registry, remembering the drive for follow-ups."""

    def __init__(
        self,
        config: Config,
        registry: ToolRegistry,
        model: LanguageModel,
        *,
        events: EventBus | None = None,
        services: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.registry = registry
        self.model = model
        self.events = events or EventBus()
        self.services = services or {}
        self.format = call_format(config.llm.call_format)
        self.prompt = build_prompt(list(registry))
        self._prefix = self.prompt.messages(self.format)
        self._clock = clock
        self.conversation = Conversation(max_turns=config.llm.history_turns,
                                         max_age_seconds=config.llm.context_seconds, clock=clock)
        self.pending: Pending | None = None
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="llm")
        self._labels: dict[str, list[int]] = {}
        self.warm_info: dict[str, Any] = {}
        self._in_turn = False  # a prefill ahead of need gives way to a turn
        self._trace: TurnTrace | None = None  # the running turn's, for the model calls it records

    def reset(self) -> None:
        self.conversation.clear()
        self.pending = None

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    # ------------------------------------------------------------------ model access (one worker thread)

    async def _in_worker(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _render_prefix(self) -> ChatPrompt:
        prompt = self.model.render(self._prefix, [])
        full = self.model.render([*self._prefix, {"role": "user", "content": "hi"}], [])
        n = 0
        for a, b in zip(prompt.tokens, full.tokens, strict=False):
            if a != b:
                break
            n += 1
        return ChatPrompt(tokens=full.tokens, prefix_len=n, text=full.text)

    async def warm(self) -> dict[str, Any]:
        """Make the instructions and examples resident in the KV cache; restored from disk when possible."""
        self.warm_info = await self._in_worker(lambda: self.model.warm(self._render_prefix()))
        prepare = getattr(self.model, "non_latin_tokens", None)
        if prepare is not None:
            await self._in_worker(prepare)  # once per model, before the first English turn needs it
        return self.warm_info

    async def prepare(self, heard: str = "") -> int:
        """Put what the next prompt will start with into the KV cache while the car waits: the remembered
        turns (they change after every turn, and when the oldest is forgotten every later one is evaluated
        again) and the words heard so far while the driver is still speaking. A turn that starts meanwhile
        stops it within one slice; what was evaluated stays (the longest cached prefix is reused).
        Returns how many prompt tokens are resident (0 when the model cannot prefill)."""
        prefill = getattr(self.model, "prefill", None)
        if prefill is None or self._in_turn or not self.config.llm.prefill_ahead:
            return 0
        tokens = await self._in_worker(self._known_prompt, heard)
        if self._in_turn:
            return 0
        return int(await self._in_worker(prefill, tokens, lambda: self._in_turn))

    def _known_prompt(self, heard: str) -> list[int]:
        """The tokens a turn's prompt will begin with, whatever the driver says after `heard`."""
        history = self.conversation.messages(self.format)
        gap = " " if heard else ""
        one, two = (self.model.render([*self._prefix, *history, {"role": "user", "content": heard + gap + end}], [])
                    for end in ("\u2026", "?"))
        known = 0
        for a, b in zip(one.tokens, two.tokens, strict=False):
            if a != b:
                break
            known += 1
        # The last word heard may yet grow ("tempera|ture"): leave its token to the turn.
        return one.tokens[: known - 1 if heard else known]

    def _label_tokens(self) -> dict[str, list[int]]:
        if not self._labels:
            labels = {t.name: self.format.label(t.name) for t in self.registry}
            labels["say"] = self.format.say_label
            self._labels = {name: self.model.tokenize(text) for name, text in labels.items()}
        return self._labels

    async def _stream(self, tokens: Sequence[int], *, phase: str = "say",
                      **kwargs: Any) -> AsyncIterator[GenerationStep]:
        """Generation steps from the worker thread; leaving the loop early stops the model at the next token.
        Each call is recorded in the turn's trace (tokens read and written, time to the first and the last)."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        stop = threading.Event()
        call = self._model_call(phase, len(tokens), grammar=kwargs.get("json_schema") is not None)
        started = time.perf_counter()

        def work() -> None:
            if call is not None:
                call.waited_ms = (time.perf_counter() - started) * 1000
            try:
                for step in self.model.generate(tokens, should_stop=stop.is_set, **kwargs):
                    if call is not None and call.read is None:
                        call.read = getattr(self.model, "last_read", None)
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
                if call is not None:
                    call.generated += 1
                    if call.first_ms is None:
                        call.first_ms = (time.perf_counter() - started) * 1000
                yield item
        finally:
            stop.set()  # barge-in or an early stop: the worker notices before its next token
            if call is not None:
                call.ms = (time.perf_counter() - started) * 1000

    def _model_call(self, phase: str, prompt_tokens: int, *, grammar: bool = False) -> ModelCall | None:
        if self._trace is None:
            return None
        call = ModelCall(phase, prompt_tokens, grammar=grammar)
        self._trace.model_calls.append(call)
        return call

    async def _score(self, phase: str, tokens: Sequence[int], options: Sequence[Sequence[int]]) -> list[float]:
        """The model's log-probability of each option after `tokens` (recorded in the trace as one call)."""
        call = self._model_call(phase, len(tokens))
        started = time.perf_counter()

        def score() -> list[float]:
            if call is not None:
                call.waited_ms = (time.perf_counter() - started) * 1000
            scores = self.model.score(tokens, options)
            if call is not None:
                call.read = getattr(self.model, "last_read", None)
            return scores

        try:
            return await self._in_worker(score)
        finally:
            if call is not None:
                call.ms = (time.perf_counter() - started) * 1000

    async def _collect(self, tokens: Sequence[int], **kwargs: Any) -> tuple[str, list[int]]:
        text, ids = "", []
        async with contextlib.aclosing(self._stream(tokens, **kwargs)) as steps:
            async for step in steps:
                ids.append(step.token)
                text += step.text
        return text, ids

    # ------------------------------------------------------------------ the turn

    async def turn(
        self,
        text: str,
        *,
        on_text: Callable[[str], Any] | None = None,
        trace: TurnTrace | None = None,
    ) -> TurnResult:
        """Run one turn. `on_text` receives the reply as it is produced (sentence streaming for speech).

        `trace` is the request's own (the voice loop's, begun at the wake word); the turn marks its milestones
        and model calls in it. Without one the turn begins its own."""
        turn_id = uuid.uuid4().hex[:12]
        bind_turn(turn_id)
        trace = trace if trace is not None else TurnTrace()
        trace.mark("turn_started")
        self._trace = trace
        language = detect_language(text, self.config.language)
        recent = [c for e in self.conversation.current() for c in e.decision.calls]
        ctx = ToolContext(config=self.config, language=language, utterance=text, services=self.services,
                          recent=recent)
        t = TurnInProgress(text, ctx, trace, on_text or (lambda _t: None))
        self.events.publish("turn-started", turn_id=turn_id)
        log.info("turn-started", text=text, language=language)
        self._in_turn = True
        try:
            await self._run(t)
        finally:
            self._in_turn = False
            self._trace = None
            unbind_turn()
        trace.mark("total")
        reply = " ".join(t.replies).strip() or line(language, "not_caught")
        if not t.replies:
            t.emit(reply)
        made = [c for c in t.calls if c.status not in REJECTED]
        timings = {k: v for k, v in trace.since("turn_started").items() if k != "turn_started"}
        result = TurnResult(turn_id, text, language, made, reply, timings, awaiting_confirmation=t.awaiting,
                            rejected_calls=[c for c in t.calls if c.status in REJECTED], asked=t.asked,
                            decision=t.decision, trace=trace)
        self.events.publish("turn-finished", turn_id=turn_id, timings_ms=result.timings_ms)
        log.info("turn-finished", reply=reply, tools=[c.name for c in t.calls], timings_ms=result.timings_ms)
        return result

    async def _run(self, t: TurnInProgress) -> None:
        pending, self.pending = self.pending, None
        if pending is not None and self._clock() > pending.expires_at:
            pending = None
        if pending is not None:
            handled = await (self._answer_question(t, pending) if pending.question
                             else self._answer_confirmation(t, pending))
            if handled:
                return
        elif bare_answer(t.text) == "yes":
            # A bare "yes" with nothing pending must not reach the model: it would claim whatever it guesses.
            # ("Skip" or "stop" with nothing pending are requests, so only the yes is kept from the model.)
            t.say(line(t.language, "nothing_pending"))
            return
        await self._understand(t)

    # ------------------------------------------------------------------ the model decides

    async def _prompt(self, utterance: str, context: list[tuple[str, Decision]] | None = None) -> ChatPrompt:
        history = self.conversation.messages(self.format)
        for said, decision in context or []:
            history += [{"role": "user", "content": said}, {"role": "assistant",
                                                               "content": self.format.render(decision)}]
        messages = [*self._prefix, *history, {"role": "user", "content": utterance}]
        return await self._in_worker(self.model.render, messages, [])

    async def _decide(
        self, t: TurnInProgress, *, context: list[tuple[str, Decision]] | None = None, only: str | None = None,
        utterance: str | None = None,
    ) -> tuple[str, dict[str, Any]] | None:
        """One label (and its arguments, for a tool) for `utterance` with `context` in view."""
        said = utterance if utterance is not None else t.text
        prompt = await self._prompt(said, context)
        labels = self._label_tokens()
        if only is None:
            names = list(labels)
            scores = await self._score("decide", prompt.tokens, [labels[n] for n in names])
            label = names[max(range(len(names)), key=lambda i: scores[i])]
        else:
            label = only
        if label == "say" or label not in self.registry:
            return None
        args, _ = await self._decode_arguments(prompt.tokens, self.registry.get(label), said)
        return (label, args) if isinstance(args, dict) else None

    async def _decode_arguments(self, tokens: Sequence[int], tool: Tool,
                                utterance: str) -> tuple[dict[str, Any] | None, list[int]]:
        """The call's arguments under its schema, and every token of the call as the model wrote it."""
        base = list(tokens) + self.model.tokenize(self.format.label(tool.name))
        schema = prune_schema(tool, utterance) if self.config.llm.constrained else None
        text, ids = await self._collect(base, phase="arguments", max_tokens=self.config.llm.max_call_tokens,
                                        json_schema=schema,
                                        lead=self.format.args_opening, latin_only=not has_cjk(utterance))
        try:
            arguments = json.loads(text.strip() or "{}")
        except json.JSONDecodeError:
            return None, base + ids
        if not isinstance(arguments, dict):
            return None, base + ids
        return {k: _clean(v) for k, v in arguments.items()}, base + ids

    async def _understand(self, t: TurnInProgress) -> None:
        prompt = await self._prompt(t.text)
        t.trace.mark("prompt_ready")
        labels = self._label_tokens()
        names = list(labels)
        scores = await self._score("decide", prompt.tokens, [labels[n] for n in names])
        t.trace.mark("first_token")
        self.events.publish("first-token")
        ranked = sorted(zip(scores, names, strict=True), reverse=True)
        label = ranked[0][1]
        t.decision = {"label": label, "top": [{"label": n, "p": round(math.exp(s), 3)} for s, n in ranked[:3]]}
        log.info("decided", label=label, p=round(math.exp(ranked[0][0]), 3))
        if label == "say":
            await self._speak(t, prompt.tokens)
            return
        tokens = list(prompt.tokens)
        for _ in range(MAX_CALLS_PER_TURN):
            tool = self.registry.get(label)
            arguments, tokens = await self._decode_arguments(tokens, tool, t.text)
            t.trace.mark("tool_call_complete")
            self.events.publish("tool-call-complete", tool=tool.name)
            if arguments is None:
                record = ToolCallRecord(tool.name, {}, valid=False, status="invalid",
                                        error="the arguments did not parse")
                t.calls.append(record)
                t.say(line(t.language, "not_caught"))
                return
            stop = await self._proceed(t, tool, arguments, model_arguments=dict(arguments))
            if stop:
                break
            label = await self._next_call(tokens)
            if label is None:
                break
        if t.made:
            self.conversation.remember(t.text, Decision(tuple(t.made)))

    async def _next_call(self, tokens: list[int]) -> str | None:
        """Another call in the same turn ("the AC on and some jazz"), if the model writes one.

        The grammar lets a call's line end with its separator; when it does, the model's wish for another
        line is read at that point, else the separator itself is weighed against ending the answer.
        """
        end = list(getattr(self.model, "end_tokens", None) or [])
        sep = self.model.tokenize(self.format.between_calls)
        if not end or not sep:
            return None
        ends = [[e] for e in end]  # any end token closes the answer (Qwen ends a turn with <|im_end|>)
        if tokens[-len(sep):] != sep:
            *done, more = await self._score("next", tokens, [*ends, sep[:1]])
            if max(done) >= more:
                return None
            tokens += sep
        names = [n for n in self._label_tokens() if n != "say"]
        options = [*ends, *(self._label_tokens()[n] for n in names)]
        scores = await self._score("next", tokens, options)
        best = max(range(len(names)), key=lambda i: scores[len(ends) + i])
        if scores[len(ends) + best] <= max(scores[: len(ends)]):
            return None
        return names[best]

    async def _speak(self, t: TurnInProgress, tokens: Sequence[int]) -> None:
        """Words, streamed a sentence at a time; a sentence that claims an action no tool took is not said."""
        base = list(tokens) + self.model.tokenize(self.format.say_label + self.format.say_opening)
        stops = self.model.tokenize("\n")[:1]
        pending = ""
        first = True
        async with contextlib.aclosing(self._stream(base, max_tokens=self.config.llm.max_reply_tokens,
                                                    stop_tokens=stops, latin_only=t.language == "en")) as steps:
            async for step in steps:
                if "\n" in step.text:
                    pending += step.text.split("\n", 1)[0]
                    break
                pending += step.text
                parts = _SENTENCE_END.split(pending)
                for sentence in parts[:-1]:
                    if not self._say_sentence(t, sentence, first):
                        return
                    first = False
                pending = parts[-1]
        if pending.strip():
            self._say_sentence(t, pending, first)
        if not t.replies:
            t.say(line(t.language, "not_caught"))

    def _say_sentence(self, t: TurnInProgress, sentence: str, first: bool) -> bool:
        sentence = sentence.strip()
        if not sentence:
            return True
        if claims_action(sentence):
            log.info("reply-claimed-an-action", dropped=True)
            if first:
                t.say(line(t.language, "cannot"))
            return False
        if first:
            t.trace.mark("reply_first_text")
        t.say(sentence)
        return True

    # ------------------------------------------------------------------ from arguments to a call

    async def _proceed(self, t: TurnInProgress, tool: Tool, arguments: dict[str, Any], *,
                       model_arguments: dict[str, Any] | None = None, from_answer: bool = False) -> bool:
        """Ground, prepare, ask or confirm, run. True when the turn must stop here (a question is out)."""
        record = ToolCallRecord(tool.name, dict(arguments), needs_confirmation=tool.needs_confirmation,
                                model_arguments=model_arguments)
        t.calls.append(record)
        aliases = self._alias_groups()
        utterance = t.ctx.utterance
        grounded, missing = ground_arguments(tool, arguments, utterance, aliases)
        if from_answer:
            grounded, missing = dict(arguments), []
        kept, broken = self._without_invalid_optionals(tool, grounded)
        record.dropped_arguments = {k: v for k, v in arguments.items() if k not in kept}
        for name in missing:
            kept.pop(name, None)
        required = [r for r in tool.parameters.get("required", []) if r not in kept]
        problems = [p for p in self.registry.validation_errors(tool.name, kept)
                    if not any(f"'{r}' is a required property" in p for r in required)]
        if problems:
            record.status, record.valid, record.error = "invalid", False, "; ".join([*broken, *problems])
            record.arguments = kept
            t.say(line(t.language, "not_caught"))
            return True
        # The plugin puts the call in the car's own terms (its arguments are the plugin's from here on): a
        # catalogue item, a saved place, the package named two turns ago. Then what is still missing is asked.
        prepared = await self._prepare(t, tool, kept)
        record.arguments = prepared.arguments
        if prepared.question is not None:
            return self._ask(t, tool, record, prepared.arguments, prepared.question)
        required = [r for r in tool.parameters.get("required", []) if r not in prepared.arguments]
        if required and prepared.problem is None:
            return self._ask(t, tool, record, prepared.arguments,
                             Question(required[0], self._question_text(tool, required[0], t.language)))
        if prepared.problem is not None:
            # The plugin said no before anything ran (over the spend limit, no earlier order), or found that
            # the request was not one for this tool at all (flowers are on no menu).
            record.status = "declined" if prepared.applies else "not-applicable"
            record.error = prepared.problem
            t.say(prepared.problem)
            return True
        if tool.needs_confirmation:
            question = await self._confirmation(t, tool, prepared)
            if question is not None:
                record.status = "awaiting-confirmation"
                self.pending = Pending(tool, prepared.arguments, t.language, utterance,
                                       self._clock() + CONFIRMATION_TIMEOUT_S, prepared=prepared, asked=question)
                t.awaiting = True
                t.made.append(Call(tool.name, prepared.arguments))
                t.say(question)
                return True
            record.status, record.error = "failed", "no confirmation could be asked"
            t.say(line(t.language, "failed"))
            return True
        await self._execute(t, tool, record, prepared)
        return False

    def _ask(self, t: TurnInProgress, tool: Tool, record: ToolCallRecord, arguments: dict[str, Any],
             question: Question) -> bool:
        record.status, record.arguments = "asking", dict(arguments)
        self.pending = Pending(tool, dict(arguments), t.language, t.ctx.utterance,
                               self._clock() + QUESTION_TIMEOUT_S, question=question, asked=question.text)
        t.asked = True
        t.say(question.text)
        return True

    def _question_text(self, tool: Tool, slot: str, language: str) -> str:
        en, zh = tool.questions.get(slot, ("Could you tell me the details?", "能说一下具体要求吗？"))
        return zh if language == "zh" else en

    async def _acknowledged(self, t: TurnInProgress, work: Any) -> Any:
        """Await a plugin's work; if it takes longer than `llm.acknowledge_after_seconds` (a service across a
        slow link), say "one moment" first, so the driver knows they were heard: once a turn, and only before
        anything else was said. Cancelling the turn cancels the work."""
        task = asyncio.ensure_future(work)
        after = self.config.llm.acknowledge_after_seconds
        if t.replies or t.acknowledged or after <= 0:
            return await task
        try:
            done, _ = await asyncio.wait({task}, timeout=after)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            t.acknowledged = True
            t.trace.mark("acknowledged")
            t.emit(line(t.language, "one_moment") + " ")
        return await task

    async def _prepare(self, t: TurnInProgress, tool: Tool, arguments: dict[str, Any]) -> Prepared:
        plugin = self._plugin(tool)
        if plugin is None:
            return Prepared(dict(arguments))
        try:
            return await self._acknowledged(t, plugin.prepare(t.ctx, tool.name, dict(arguments)))
        except Exception as err:  # a broken plugin must not break the turn
            log.warning("prepare-failed", tool=tool.name, error=f"{type(err).__name__}: {err}")
            return Prepared(dict(arguments), problem=line(t.language, "failed"))

    async def _confirmation(self, t: TurnInProgress, tool: Tool, prepared: Prepared) -> str | None:
        plugin = self._plugin(tool)
        ask = getattr(plugin, "confirmation_prompt", None)
        if ask is None:
            return None
        try:
            return await self._acknowledged(t, ask(t.ctx, tool.name, prepared.arguments, prepared))
        except TypeError:
            return await self._acknowledged(t, ask(t.ctx, tool.name, prepared.arguments))
        except Exception as err:  # a broken plugin must not break the turn
            log.warning("confirmation-prompt-failed", tool=tool.name, error=str(err))
            return None

    async def _execute(self, t: TurnInProgress, tool: Tool, record: ToolCallRecord, prepared: Prepared | None) -> None:
        result: ToolResult = await self._acknowledged(t, self.registry.call(tool.name, record.arguments, t.ctx))
        t.trace.mark("tool_done")
        self.events.publish("tool-done", tool=tool.name, ok=result.ok)
        record.result = result.data if result.ok else {"error": result.error}
        record.status = "ok" if result.ok else "failed"
        record.error = None if result.ok else result.error
        if result.ok:
            t.made.append(Call(tool.name, record.arguments))
        t.say(result.say or line(t.language, "done" if result.ok else "failed"))

    # ------------------------------------------------------------------ helpers

    def _plugin(self, tool: Tool) -> Plugin | None:
        return next((p for p in self.registry.plugins if p.name == tool.plugin), None)

    def _alias_groups(self) -> list[list[str]]:
        groups = [[p.name, p.address, *p.aliases] for p in self.config.vehicle.places]
        groups += [[c.name, *c.aliases] for c in self.config.vehicle.contacts]
        return groups

    def _without_invalid_optionals(self, tool: Tool, args: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Drop optional arguments that break the schema (a fan level of 10**15): the rest of the call stands."""
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

    # ------------------------------------------------------------------ for measuring tools (the bench)

    async def prompt_for(self, utterance: str) -> ChatPrompt:
        """The prompt a turn for `utterance` would start from: instructions, the drive so far, the request."""
        return await self._prompt(utterance)

    def stream(self, tokens: Sequence[int], **kwargs: Any) -> AsyncIterator[GenerationStep]:
        """Free generation after `tokens` through the turn's own worker thread and event-loop hand-off (the
        layer every model call of a turn goes through); leaving the loop early stops the model."""
        return self._stream(tokens, **kwargs)


def _clean(value: Any) -> Any:
    """Values as a driver would say them: strip the model's stray braces, round float noise (21.000000000000004)."""
    if isinstance(value, str):
        return value.strip().rstrip("}").strip()
    if isinstance(value, float):
        value = round(value, 3)
        return int(value) if value.is_integer() else value
    if isinstance(value, list):
        return [{k: _clean(v) for k, v in x.items()} if isinstance(x, dict) else _clean(x) for x in value]
    return value
