"""The local Qwen through llama-cpp-python: chat template, constrained decoding, and a persisted prompt cache."""

from __future__ import annotations

import codecs
import ctypes
import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from agent.core.errors import LlmError, ModelError
from agent.core.logging import get_logger
from agent.llm.base import ChatPrompt, GenerationStep

log = get_logger("llm")

GGUF_MAGIC = b"GGUF"
PROMPT_CACHES_KEPT = 3  # per model
# Tokens per step of a prefill ahead of need: a turn that starts meanwhile waits for one step at most.
PREFILL_SLICE = 4
# A stretch of the prompt found further on in the cache is moved up only if at least this long.
SHIFT_MIN_TOKENS = 16
# Inside a JSON key that has begun (`{"temperature` or `, "si`): the rest of a key is the examples' own.
_IN_KEY = re.compile(r'[{,]\s*"[^"\\]+$')
# Some GGUF conversions of Qwen2.5 escape the braces of the tool-call example twice, which teaches the model to
# answer with "{{...}}". Rendering the example the way the original template does keeps its output parseable.
_TEMPLATE_FIXES = [
    (
        '{{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}}',
        '{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}',
    )
]


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    # Hugging Face templates expect plain json.dumps (jinja's own tojson HTML-escapes < > & ').
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _logsumexp(x: np.ndarray) -> float:
    top = float(np.max(x))
    return top + float(np.log(np.sum(np.exp(x - top))))


def check_gguf(path: Path, model_id: str) -> None:
    fix = f"cabin-agent models fetch {model_id}"
    if not path.is_file():
        raise ModelError(f"model {model_id}: file {path} is missing; run `{fix}`", model=model_id, path=str(path))
    with path.open("rb") as fh:
        magic = fh.read(4)
    if magic != GGUF_MAGIC:
        raise ModelError(
            f"model {model_id}: {path} is not a GGUF file (corrupt or partial); run `cabin-agent models verify` "
            f"and `{fix}`",
            code="model-corrupt",
            model=model_id,
            path=str(path),
        )


class GrammarGate:
    """Grammar-constrained greedy decoding that checks only the token the model wants.

    llama-cpp-python applies a grammar to the whole 151k-token vocabulary at every step, which costs about as
    much as decoding itself on a small model. Like llama.cpp's own common sampler, this gate first asks the
    grammar whether the model's favourite token is allowed (one candidate), and only when it is not does it
    filter the full vocabulary. Every token still passes the grammar, so every call parses.
    """

    def __init__(self, lib: Any, vocab: Any, gbnf: str, root: str = "root",
                 on_scores: Callable[[int, np.ndarray], None] | None = None) -> None:
        self._lib = lib
        self._on_scores = on_scores
        self._sampler = lib.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), root.encode("utf-8"))
        if not self._sampler:
            raise LlmError("the tool's argument grammar could not be compiled", code="llm-grammar-invalid")
        self._one = (lib.llama_token_data * 1)()
        self.checks = 0
        self.rejections = 0

    def _apply(self, data: Any, size: int) -> None:
        arr = self._lib.llama_token_data_array(
            data=ctypes.cast(data, ctypes.POINTER(self._lib.llama_token_data)), size=size, selected=-1, sorted=False
        )
        self._lib.llama_sampler_apply(self._sampler, ctypes.byref(arr))

    def __call__(self, input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
        if self._on_scores is not None:
            self._on_scores(len(input_ids), scores)
        token = int(np.argmax(scores))
        self.checks += 1
        self._one[0].id, self._one[0].logit, self._one[0].p = token, float(scores[token]), 0.0
        self._apply(self._one, 1)
        if not np.isfinite(self._one[0].logit):
            # The model wants something the grammar forbids: filter the whole vocabulary once.
            self.rejections += 1
            n = len(scores)
            full = np.zeros(n, dtype=np.dtype([("id", np.intc), ("logit", np.single), ("p", np.single)], align=True))
            full["id"] = np.arange(n, dtype=np.intc)
            full["logit"] = scores
            self._apply(full.ctypes.data, n)
            token = int(np.argmax(full["logit"]))
        self._lib.llama_sampler_accept(self._sampler, token)
        only = np.full_like(scores, -np.inf)
        only[token] = 0.0  # greedy must take exactly the token the grammar accepted
        return only

    def close(self) -> None:
        if self._sampler:
            self._lib.llama_sampler_free(self._sampler)
            self._sampler = None


class LlamaCppModel:
    """One llama.cpp context. Not thread-safe: the turn engine calls it from a single worker thread."""

    def __init__(
        self,
        path: Path,
        *,
        model_id: str,
        n_ctx: int = 4096,
        n_threads: int = 2,
        n_batch: int = 256,
        n_gpu_layers: int = 0,
        cache_dir: Path | None = None,
        guess_tokens: int = 0,
    ) -> None:
        import llama_cpp

        check_gguf(path, model_id)
        self._llama_cpp = llama_cpp
        self.model_id = model_id
        self.path = path
        started = time.monotonic()
        try:
            self.llm = llama_cpp.Llama(
                str(path),
                n_ctx=n_ctx,
                n_threads=n_threads,
                n_threads_batch=n_threads,
                n_batch=n_batch,
                n_gpu_layers=n_gpu_layers,
                verbose=False,
            )
        except Exception as err:  # llama.cpp reports a bad file as a bare ValueError
            raise ModelError(
                f"model {model_id}: {path} could not be loaded ({err}); run `cabin-agent models verify`",
                code="model-corrupt",
                model=model_id,
                path=str(path),
            ) from err
        self.load_ms = (time.monotonic() - started) * 1000
        self.cache_dir = cache_dir
        self.n_threads = n_threads
        self.guess_tokens = guess_tokens  # checked beside each decoded token (see _decode); 0: one at a time
        self._grammars: dict[str, str] = {}
        self._logits = np.zeros(0)
        self._logits_for = -1  # context length the saved logits belong to (-1: none)
        self._non_latin: np.ndarray | None = None
        # Every use of the context holds this: turns of different assistants (an eval's fresh cars) share it.
        self._lock = threading.RLock()
        self.last_grammar_stats: dict[str, int] = {}
        self.last_decode_stats: dict[str, int] = {}
        self.last_read = 0  # prompt tokens the last score or generate had to evaluate (not in the cache)
        self._template = self._load_template()
        self.end_tokens = sorted(
            {self.llm.token_eos(), *self._special_ids("<|im_end|>", "<|endoftext|>")} - {-1}
        )
        self.tool_call_token = next(iter(self._special_ids("<|tool_call|>", "<tool_call>")), -1)
        log.info("model-loaded", model=model_id, load_ms=round(self.load_ms), n_ctx=n_ctx, n_threads=n_threads)

    # ------------------------------------------------------------------ prompt

    def _special_ids(self, *texts: str) -> list[int]:
        ids = []
        for text in texts:
            toks = self.llm.tokenize(text.encode(), add_bos=False, special=True)
            if len(toks) == 1:
                ids.append(toks[0])
        return ids

    def _load_template(self) -> Any:
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        source = self.llm.metadata.get("tokenizer.chat_template")
        if not source:
            raise LlmError(f"model {self.model_id} has no chat template in its GGUF metadata", code="llm-no-template")
        for old, new in _TEMPLATE_FIXES:
            source = source.replace(old, new)
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.filters["tojson"] = _tojson
        return env.from_string(source)

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return self.llm.detokenize(list(tokens), special=True).decode("utf-8", errors="replace")

    def render(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> ChatPrompt:
        """The model's own chat template; the system turn (with the tools) is the cacheable prefix."""
        text = self._template.render(messages=messages, tools=tools or None, add_generation_prompt=True)
        tokens = self.tokenize(text)
        prefix_text = self._template.render(messages=messages[:1], tools=tools or None, add_generation_prompt=False)
        prefix = self.tokenize(prefix_text)
        n = 0
        for a, b in zip(prefix, tokens, strict=False):
            if a != b:
                break
            n += 1
        return ChatPrompt(tokens=tokens, prefix_len=n, text=text)

    # ------------------------------------------------------------------ decoding

    def _grammar(self, schema: dict[str, Any], lead: str = "") -> GrammarGate:
        """A fresh gate (grammar state is per generation) from the schema's GBNF, converted once per schema.

        `lead` is literal text the grammar writes before the JSON (the call format's separator), so the
        tokens stay the ones the model would choose itself rather than a forced space on its own.
        """
        key = json.dumps([schema, lead], sort_keys=True)
        gbnf = self._grammars.get(key)
        if gbnf is None:
            grammar = self._llama_cpp.LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False)
            gbnf = grammar._grammar
            if lead:
                # A call's line may end with its newline: the model writes "}\n" as one token, and refusing it
                # would cost a filter over the whole vocabulary at the end of every call.
                gbnf = re.sub(r"(?m)^root ::=", "call-arguments ::=", gbnf, count=1)
                gbnf += f'\nroot ::= {json.dumps(lead)} call-arguments "\\n"?\n'

            self._grammars[key] = gbnf
        return GrammarGate(self._llama_cpp, self.llm._model.vocab, gbnf, on_scores=self._keep_scores)

    def _keep_scores(self, position: int, scores: np.ndarray) -> None:
        # The logits the last grammar step saw: after a call's closing brace they say whether the model wants
        # another call, for free.
        self._logits = scores.astype(np.float64)
        self._logits_for = position

    def generate(self, tokens: Sequence[int], **kwargs: Any) -> Iterator[GenerationStep]:
        """Greedy steps after `tokens` (see _generate). One caller at a time: the context is not thread-safe,
        and a caller that stopped reading may still be finishing its last token on another thread."""
        with self._lock:
            yield from self._generate(tokens, **kwargs)

    def _generate(
        self,
        tokens: Sequence[int],
        *,
        max_tokens: int,
        stop_tokens: Sequence[int] = (),
        json_schema: dict[str, Any] | None = None,
        lead: str = "",
        latin_only: bool = False,
        should_stop: Callable[[], bool] = lambda: False,
    ) -> Iterator[GenerationStep]:
        """Greedy decoding (a car wants the same answer every time), optionally constrained by a JSON schema.

        The longest token prefix already in the KV cache is reused, so the system prompt costs nothing here.
        """
        self._logits_for = -1  # decoding moves the context on
        stops = set(stop_tokens) | set(self.end_tokens)
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        if json_schema is None and lead:
            json_schema = {"type": "object"}
        gate = self._grammar(json_schema, lead) if json_schema is not None else None
        steps: list[Callable[[np.ndarray, np.ndarray], np.ndarray]] = []
        if latin_only:
            # An English request gets English words back: a small model that has seen Chinese examples
            # otherwise writes 下午 for "afternoon". Tokens in other scripts are taken off the table.
            foreign = self.non_latin_tokens()

            def _latin(input_ids: np.ndarray, scores: np.ndarray) -> np.ndarray:
                scores[foreign] = -np.inf
                return scores

            steps.append(_latin)
        if gate is not None:
            steps.append(gate)
        try:
            yield from self._decode(list(tokens), steps, stops, max_tokens, should_stop, decoder)
        finally:
            if gate is not None:
                self.last_grammar_stats = {"checks": gate.checks, "rejections": gate.rejections}
                gate.close()

    def _decode(
        self,
        ids: list[int],
        steps: list[Callable[[np.ndarray, np.ndarray], np.ndarray]],
        stops: set[int],
        max_tokens: int,
        should_stop: Callable[[], bool],
        decoder: Any,
    ) -> Iterator[GenerationStep]:
        """Greedy decoding that checks a guess of the next few tokens in the same batch as the last one.

        The guess is what followed the same last tokens earlier in the context (prompt lookup), made only for
        the rest of a JSON key that has begun ("temperature" → "_c", '":', " "): the examples wrote every key,
        so such a guess is nearly always right, while a guessed value (the driver's words) mostly is not and
        costs its batch. A guess is kept only as far as it is exactly the token greedy decoding (through the
        grammar) picks, so the output is the same as one token at a time.
        """

        def pick(logits: np.ndarray) -> int:
            scores = logits.astype(np.float32, copy=True)
            context = np.asarray(ids, dtype=np.intc)
            for step in steps:
                scores = step(context, scores)
            return int(np.argmax(scores))

        written = ""

        def emit(token: int) -> GenerationStep:
            nonlocal written
            text = decoder.decode(self.llm.detokenize([token], special=True))
            written += text
            return GenerationStep(token=token, text=text)

        token = pick(self._eval_to(ids))
        count = 0
        self.last_decode_stats = stats = {"batches": 0, "guessed": 0, "kept": 0}
        while True:
            if token in stops or should_stop():
                return
            yield emit(token)
            count += 1
            if count >= max_tokens:
                return
            ids.append(token)
            limit = min(self.guess_tokens, max_tokens - count)
            guess = self._rest_of_key(self._guess(ids, limit)) if limit and _IN_KEY.search(written) else []
            rows = self._eval_rows(ids[-1:] + guess, at=len(ids) - 1)
            stats["batches"] += 1
            stats["guessed"] += len(guess)
            nxt = pick(rows[0])
            kept = 0
            while kept < len(guess) and nxt == guess[kept]:
                if nxt in stops or should_stop():
                    self.llm.n_tokens = len(ids)
                    return
                yield emit(nxt)
                count += 1
                if count >= max_tokens:
                    self.llm.n_tokens = len(ids)
                    return
                ids.append(nxt)
                kept += 1
                nxt = pick(rows[kept])
            stats["kept"] += kept
            self.llm.n_tokens = len(ids)  # what was guessed beyond the kept tokens leaves the context
            token = nxt

    def _rest_of_key(self, guess: list[int]) -> list[int]:
        """The guess up to the end of the key: through the token with its colon, and a space token after it."""
        for i, token in enumerate(guess):
            if ":" in self.llm.detokenize([token], special=True).decode("utf-8", errors="replace"):
                after = guess[i + 1 : i + 2]
                space = bool(after) and self.llm.detokenize(after, special=True) == b" "
                return guess[: i + 2] if space else guess[: i + 1]
        return guess

    @staticmethod
    def _guess(ids: list[int], limit: int) -> list[int]:
        """The tokens that followed the latest earlier occurrence of the context's last three (or two) tokens."""
        if limit <= 0 or len(ids) < 4:
            return []
        arr = np.asarray(ids, dtype=np.int64)
        for n in (3, 2):
            tail = arr[-n:]
            hay = arr[:-1]
            if len(hay) < n + 1:
                continue
            mask = np.ones(len(hay) - n + 1, dtype=bool)
            for k in range(n):
                mask &= hay[k : len(hay) - n + 1 + k] == tail[k]
            found = np.flatnonzero(mask)
            if len(found):
                start = int(found[-1]) + n
                return [int(t) for t in arr[start : start + limit]]
        return []

    def _eval_rows(self, tokens: list[int], *, at: int) -> np.ndarray:
        """Evaluate `tokens` at position `at` in one batch and return the logits after each of them."""
        llm = self.llm
        llm.n_tokens = at
        llm._ctx.kv_cache_seq_rm(-1, at, -1)
        llm._batch.set_batch(batch=tokens, n_past=at, logits_all=True)
        llm._ctx.decode(llm._batch)
        llm.input_ids[at : at + len(tokens)] = tokens
        llm.n_tokens = at + len(tokens)
        n_vocab = llm.n_vocab()
        rows = np.empty((len(tokens), n_vocab), dtype=np.float32)
        for i in range(len(tokens)):
            rows[i] = np.ctypeslib.as_array(llm._ctx.get_logits_ith(i), shape=(n_vocab,))
        self._logits_for = -1
        return rows

    def non_latin_tokens(self) -> np.ndarray:
        """Ids of tokens that are not Latin-script text (CJK, other scripts, or a piece of a multi-byte
        character), computed once per model."""
        if self._non_latin is None:
            ids = []
            for token in range(self.llm.n_vocab()):
                raw = self.llm.detokenize([token], special=False)
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    ids.append(token)
                    continue
                if any(ord(ch) >= 0x250 and not 0x2000 <= ord(ch) <= 0x206F for ch in text):
                    ids.append(token)
            self._non_latin = np.array(ids, dtype=np.int64)
        return self._non_latin

    # ------------------------------------------------------------------ prefill between turns

    def prefill(self, tokens: Sequence[int], should_stop: Callable[[], bool] = lambda: False) -> int:
        """Evaluate `tokens` into the KV cache ahead of need (the longest cached prefix is kept), a slice at a
        time so that a turn that wants the model waits for one slice at most. Returns how many are resident.

        On one thread: work ahead of need leaves the other cores to recognition and the audio loop (llama.cpp's
        threads wait for each other at every layer, so one taken by another process stalls them all)."""
        with self._lock:
            tokens = list(tokens)
            self.llm.n_tokens = self._cached_prefix(tokens)
            self._logits_for = -1
            if self.llm.n_tokens >= len(tokens):
                return self.llm.n_tokens
            self.llm._ctx.set_n_threads(1, 1)
            try:
                while self.llm.n_tokens < len(tokens) and not should_stop():
                    self.llm.eval(tokens[self.llm.n_tokens : self.llm.n_tokens + PREFILL_SLICE])
            finally:
                self.llm._ctx.set_n_threads(self.n_threads, self.n_threads)
            return self.llm.n_tokens

    def _cached_prefix(self, tokens: Sequence[int]) -> int:
        """How many leading `tokens` the KV cache holds. When the prompt is the cached one with a stretch taken
        out (the oldest remembered turn forgotten), that stretch is removed from the cache and what followed it
        is moved up instead of evaluated again (llama.cpp's context shift): the kept turns were read with the
        forgotten one before them, a small difference for a much shorter wait."""
        cached = self.llm.n_tokens
        ids = self.llm.input_ids
        common = 0
        for a, b in zip(ids[:cached], tokens, strict=False):
            if a != b:
                break
            common += 1
        if common < min(cached, len(tokens)) - SHIFT_MIN_TOKENS and self._can_shift():
            common = self._shift_up(list(tokens), common, cached)
        return common

    def _can_shift(self) -> bool:
        memory = getattr(self.llm._ctx, "memory", None)
        return bool(memory) and bool(self._llama_cpp.llama_memory_can_shift(memory))

    def _shift_up(self, tokens: list[int], common: int, cached: int) -> int:
        """If tokens[common:] continue at some later point of the cache, close the gap; returns the new
        cached prefix length (unchanged when no such point is found)."""
        want = np.asarray(tokens[common : common + SHIFT_MIN_TOKENS], dtype=np.int64)
        have = np.asarray(self.llm.input_ids[common:cached], dtype=np.int64)
        n = len(want)
        if n < SHIFT_MIN_TOKENS or len(have) <= n:
            return common
        match = np.ones(len(have) - n + 1, dtype=bool)
        for k in range(n):
            match &= have[k : len(have) - n + 1 + k] == want[k]
        found = np.flatnonzero(match)
        if not len(found) or found[0] == 0:
            return common
        gap = int(found[0])
        start = common + gap  # where the kept stretch begins in the cache
        kept = 0
        while start + kept < cached and common + kept < len(tokens) and \
                self.llm.input_ids[start + kept] == tokens[common + kept]:
            kept += 1
        ctx = self.llm._ctx
        ctx.kv_cache_seq_rm(0, start + kept, -1)  # what came after the kept stretch
        ctx.kv_cache_seq_rm(0, common, start)  # the forgotten stretch
        ctx.kv_cache_seq_shift(0, start, start + kept, -gap)
        self.llm.input_ids[common : common + kept] = tokens[common : common + kept]
        self.llm.n_tokens = common + kept
        self._logits_for = -1
        log.debug("kv-shifted", removed=gap, kept=kept)
        return common + kept

    # ------------------------------------------------------------------ scoring choices

    def _eval_to(self, tokens: Sequence[int]) -> np.ndarray:
        """Make `tokens` the context (reusing the longest cached prefix) and return the last position's logits."""
        tokens = list(tokens)
        common = self._cached_prefix(tokens)
        if common == len(tokens) and self._logits_for == len(tokens):
            self.last_read = 0
            return self._logits
        # The logits of the last prompt position are needed: replay it when the whole prompt is cached.
        common = min(common, len(tokens) - 1)
        self.last_read = len(tokens) - common
        self.llm.n_tokens = common
        self.llm.eval(tokens[common:])
        return self._read_logits()

    def _read_logits(self) -> np.ndarray:
        ptr = self.llm._ctx.get_logits()
        self._logits = np.ctypeslib.as_array(ptr, shape=(self.llm.n_vocab(),)).astype(np.float64)
        self._logits_for = self.llm.n_tokens
        return self._logits

    def score(self, tokens: Sequence[int], options: Sequence[Sequence[int]]) -> list[float]:
        with self._lock:
            return self._score(tokens, options)

    def _score(self, tokens: Sequence[int], options: Sequence[Sequence[int]]) -> list[float]:
        """The model's log-probability of each option (a token sequence) as the continuation of `tokens`.

        Options are walked as a trie: one evaluation gives every first token's probability, and a further token
        is evaluated only where options share a prefix and must be told apart (order_meal / order_status).
        Tokens after the point where an option is the only one left are near-certain and not evaluated.
        """
        base_logits = self._eval_to(tokens)
        base = self.llm.n_tokens
        scores = [0.0] * len(options)

        def walk(depth: int, members: list[int], logits: np.ndarray, position: int) -> None:
            logp = logits - _logsumexp(logits)
            groups: dict[int, list[int]] = {}
            for i in members:
                if depth < len(options[i]):
                    groups.setdefault(options[i][depth], []).append(i)
            for token, group in groups.items():
                for i in group:
                    scores[i] += float(logp[token])
                longer = [i for i in group if len(options[i]) > depth + 1]
                if len(group) > 1 and longer:
                    self.llm.n_tokens = position
                    self.llm.eval([token])
                    walk(depth + 1, longer, self._read_logits(), position + 1)

        walk(0, list(range(len(options))), base_logits, base)
        self.llm.n_tokens = base
        self._logits_for = -1
        return scores

    # ------------------------------------------------------------------ prompt cache

    def _cache_path(self, prefix_tokens: Sequence[int]) -> Path | None:
        if self.cache_dir is None:
            return None
        stat = self.path.stat()
        ident = hashlib.sha256()
        ident.update(f"{self.path.name}:{stat.st_size}:{int(stat.st_mtime)}:{self._llama_cpp.__version__}".encode())
        ident.update(f":{self.llm.n_ctx()}:".encode())
        ident.update(np.asarray(prefix_tokens, dtype=np.int32).tobytes())
        return self.cache_dir / f"{self.model_id}-{ident.hexdigest()[:16]}.kv"

    def warm(self, prefix: ChatPrompt) -> dict[str, Any]:
        with self._lock:
            return self._warm(prefix)

    def _warm(self, prefix: ChatPrompt) -> dict[str, Any]:
        """Make the system prefix resident in the KV cache: from memory, from the session file, or computed.

        The session file is keyed by model file, llama.cpp version, context size and the exact prefix tokens,
        so a changed prompt or tool set can never restore a stale cache.
        """
        tokens = prefix.tokens[: prefix.prefix_len]
        n = len(tokens)
        self._logits_for = -1
        started = time.monotonic()
        if self.llm.n_tokens >= n and list(self.llm.input_ids[:n]) == tokens:
            return {"source": "memory", "tokens": n, "ms": 0.0}
        path = self._cache_path(tokens)
        if path is not None and path.is_file():
            if self._restore(path, tokens):
                ms = (time.monotonic() - started) * 1000
                log.info("prompt-cache-restored", tokens=n, ms=round(ms, 1), file=path.name)
                return {"source": "file", "tokens": n, "ms": ms}
            log.warning("prompt-cache-stale", file=str(path))
            path.unlink(missing_ok=True)
        self.llm.reset()
        self.llm.eval(tokens)
        ms = (time.monotonic() - started) * 1000
        if path is not None:
            self._save(path, tokens)
        log.info("prompt-cache-computed", tokens=n, ms=round(ms))
        return {"source": "computed", "tokens": n, "ms": ms}

    def _save(self, path: Path, tokens: Sequence[int]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        arr = (self._llama_cpp.llama_token * len(tokens))(*tokens)
        if not self._llama_cpp.llama_state_save_file(self.llm._ctx.ctx, str(tmp).encode(), arr, len(tokens)):
            tmp.unlink(missing_ok=True)
            log.warning("prompt-cache-save-failed", file=str(path))
            return
        os.replace(tmp, path)
        # Keep this model's few newest caches: a car's prompt changes only with its tool set, but a bench or a
        # test run switches between a few (each is ~50-130 MB and minutes of prefill to rebuild).
        try:
            caches = sorted(path.parent.glob(f"{self.model_id}-*.kv"), key=lambda p: p.stat().st_mtime, reverse=True)
            for old in caches[PROMPT_CACHES_KEPT:]:
                if old != path:
                    old.unlink(missing_ok=True)
        except OSError:  # another process (a bench beside the daemon) pruned them first: nothing is lost
            pass

    def _restore(self, path: Path, tokens: Sequence[int]) -> bool:
        n = len(tokens)
        out = (self._llama_cpp.llama_token * (n + 1))()
        count = ctypes.c_size_t(0)
        self.llm.reset()
        ok = self._llama_cpp.llama_state_load_file(
            self.llm._ctx.ctx, str(path).encode(), out, n + 1, ctypes.byref(count)
        )
        if not ok or count.value != n or list(out[:n]) != list(tokens):
            self.llm.reset()
            return False
        self.llm.input_ids[:n] = tokens
        self.llm.n_tokens = n
        return True
