"""Answers to what the car asked: a yes or no to "Shall I order it?", the value a question was missing, a
change to the waiting order ("yes, but make it two"). Mixed into the turn engine's Assistant."""

from __future__ import annotations

from typing import Any

from agent.core.logging import get_logger
from agent.understanding.confirmation import Pending as PendingKind
from agent.understanding.confirmation import classify_answer
from agent.understanding.grounding import ground_arguments
from agent.understanding.record import Pending, ToolCallRecord, TurnInProgress
from agent.understanding.replies import line
from agent.understanding.wire import Call, Decision

log = get_logger("turn")

CONFIRMATION_TIMEOUT_S = 60.0


class Answers:
    """How the Assistant takes the driver's answer to its own question. The methods run on the Assistant and
    use its parts: `_decide`, `_execute`, `_proceed`, `_understand`, `_plugin`, `_prompt`, `_score`."""

    pending: Pending | None
    _clock: Any

    async def _answer_confirmation(self, t: TurnInProgress, pending: Pending) -> bool:
        """True when the utterance was an answer to "Shall I order it?" and has been dealt with."""
        answer = classify_answer(t.text, action=pending.kind)
        log.info("confirmation-answer", kind=answer.kind, reason=answer.reason)
        if answer.kind == "yes":
            t.ctx.utterance = pending.utterance
            record = ToolCallRecord(pending.tool.name, pending.arguments, needs_confirmation=True)
            t.calls.append(record)
            await self._execute(t, pending.tool, record, pending.prepared)
            return True
        if answer.kind == "no":
            t.calls.append(ToolCallRecord(pending.tool.name, pending.arguments, status="cancelled",
                                          needs_confirmation=True))
            t.say(line(t.language, "not_cancelled" if pending.kind is PendingKind.CANCEL else "not_ordered"))
            if len(answer.rest.split()) >= 2 or (t.language == "zh" and len(answer.rest) >= 3):
                # "No, navigate home instead": the refusal is done; what follows is a new request.
                t.text = t.ctx.utterance = answer.rest
                await self._understand(t)
            return True
        if answer.kind == "change":
            amended = await self._amend(t, pending, answer.rest or t.text)
            if amended is not None:
                t.ctx.utterance = ""  # the amended call is in the car's own terms already
                await self._proceed(t, pending.tool, amended, model_arguments=amended, from_answer=True)
                return True
        if answer.kind == "question":
            if answer.reason == "question-other-words" and await self._is_new_request(t, pending):
                # "Is there any sushi place around?": the purchase is dropped, not asked again (a car that
                # re-asked "Shall I order it?" to every question swallowed the requests after it).
                return False
            # "How much is it?": the question already said the price; say it again and keep waiting.
            t.say(pending.asked)
            self._wait_again(t, pending)
            return True
        # Unclear. Words that change the order without a yes ("and a coke", "deliver it to the office") are a
        # change; a new request ("navigate home") drops the purchase; a hesitation or anything else gets one
        # more ask, then the purchase is dropped.
        if answer.reason != "hesitation":
            amended = await self._amend(t, pending, t.text, words_only=True)
            if amended is not None:
                t.ctx.utterance = ""
                await self._proceed(t, pending.tool, amended, model_arguments=amended, from_answer=True)
                return True
        if pending.asked_again:
            t.say(line(t.language, "dropped"))
            return True
        if answer.reason != "hesitation" and await self._is_new_request(t, pending):
            return False
        t.say(line(t.language, "confirm_again"))
        pending.asked_again = True
        self._wait_again(t, pending)
        return True

    async def _is_new_request(self, t: TurnInProgress, pending: Pending) -> bool:
        """Whether the model reads the words as another request; if so, the waiting one is dropped, aloud."""
        if await self._peek(t) in ("say", pending.tool.name):
            return False
        t.say(line(t.language, "not_ordered" if pending.kind is PendingKind.PURCHASE else "not_cancelled"))
        return True

    def _wait_again(self, t: TurnInProgress, pending: Pending) -> None:
        """Keep waiting for the answer (no new call was made this turn: the one asked about still waits)."""
        pending.expires_at = self._clock() + CONFIRMATION_TIMEOUT_S
        self.pending = pending
        t.awaiting = pending.question is None

    async def _answer_question(self, t: TurnInProgress, pending: Pending) -> bool:
        """The driver answers "What size?" / "Which package?": fill the value and go on with the call."""
        question = pending.question
        filled = self._plugin_fill(t, pending, t.text)
        if filled is None:
            filled = await self._fill_with_model(t, pending)
            if filled is not None and question.options:
                # "Which one: shoes, charger or lamp?" is answered only by one of them. The model reading "a
                # large latte" with the parcel question in view may put the latte in the package slot; the
                # plugin must know the value as one of its options, else the words are a new request.
                filled = self._plugin_fill(t, pending, str(filled.get(question.slot) or ""))
        if filled is None:
            return False  # not an answer: a new request; the question is dropped
        t.ctx.utterance = ""  # the plugin filled the value in the car's own terms
        await self._proceed(t, pending.tool, filled, model_arguments=filled, from_answer=True)
        return True

    def _plugin_fill(self, t: TurnInProgress, pending: Pending, answer: str) -> dict[str, Any] | None:
        """The pending call completed by its plugin from `answer`; None: not an answer it knows."""
        plugin = self._plugin(pending.tool)
        if plugin is None:
            return None
        try:
            return plugin.fill(t.ctx, pending.tool.name, pending.arguments, pending.question, answer)
        except Exception as err:  # a broken plugin must not break the turn
            log.warning("fill-failed", tool=pending.tool.name, error=str(err))
            return None

    async def _fill_with_model(self, t: TurnInProgress, pending: Pending) -> dict[str, Any] | None:
        """Ask the model what the answer means, with the pending call in view; keep it only if it is the same
        tool (anything else is a new request)."""
        decision = await self._decide(t, context=[(pending.utterance, Decision((Call(pending.tool.name,
                                                                                      pending.arguments),)))])
        if decision is None or decision[0] != pending.tool.name:
            return None
        # Only what the answer itself said: "um, I don't know" must not become a destination.
        said, _ = ground_arguments(pending.tool, decision[1], t.text, self._alias_groups())
        merged = {**pending.arguments, **{k: v for k, v in said.items() if v not in (None, "", [])}}
        return merged if merged != pending.arguments else None

    async def _amend(self, t: TurnInProgress, pending: Pending, change: str, *,
                     words_only: bool = False) -> dict[str, Any] | None:
        """ "Yes, but make it two": the change applied to the pending call, read from the words (a size, a
        count, another item, where to deliver) or else decoded by the model (unless `words_only`)."""
        plugin = self._plugin(pending.tool)
        if plugin is not None:
            try:
                amended = plugin.amend(t.ctx, pending.tool.name, pending.arguments, change)
            except Exception as err:  # a broken plugin must not break the turn
                log.warning("amend-failed", tool=pending.tool.name, error=str(err))
                amended = None
            if amended is not None and amended != pending.arguments:
                return amended
        if words_only:
            return None
        context = [(pending.utterance, Decision((Call(pending.tool.name, pending.arguments),)))]
        decided = await self._decide(t, context=context, only=pending.tool.name, utterance=change)
        if decided is None:
            return None
        said, _ = ground_arguments(pending.tool, decided[1], change, self._alias_groups())
        merged = {**pending.arguments, **said}
        return merged if merged != pending.arguments else None

    async def _peek(self, t: TurnInProgress) -> str:
        """Which label the model gives this utterance (without acting on it)."""
        prompt = await self._prompt(t.text)
        scores = await self._score("peek", prompt.tokens, list(self._label_tokens().values()))
        names = list(self._label_tokens())
        return names[max(range(len(names)), key=lambda i: scores[i])]
