"""Builds the parts a turn needs from the config: plugins, the local model (with its warm prompt cache), the assistant."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from agent.core.config import Config, cache_dir, default_llm_threads
from agent.core.events import EventBus
from agent.llm.base import LanguageModel
from agent.plugins.loader import ToolRegistry, load_registry
from agent.understanding.engine import Assistant


def llm_model(config: Config) -> tuple[str, Path]:
    """The configured (or profile default) LLM's id and its verified GGUF file in the model store."""
    from agent.models.manifest import resolve
    from agent.models.store import open_store

    store = open_store(config)
    model_id = resolve(config, "llm", config.language, manifest=store.manifest)
    return model_id, store.file(model_id)


def load_llm(config: Config, model_id: str, path: Path) -> Any:
    from agent.llm.llama_cpp import LlamaCppModel

    llm = config.llm
    return LlamaCppModel(
        path,
        model_id=model_id,
        n_ctx=llm.n_ctx,
        n_threads=llm.n_threads or default_llm_threads(),
        n_batch=llm.n_batch,
        n_gpu_layers=llm.n_gpu_layers,
        cache_dir=(cache_dir() / "prompt-cache") if llm.persist_prompt_cache else None,
        guess_tokens=llm.guess_tokens,
    )


async def build_assistant(
    config: Config,
    *,
    events: EventBus | None = None,
    services: dict[str, Any] | None = None,
    registry: ToolRegistry | None = None,
    warm: bool = True,
    model: LanguageModel | None = None,
) -> Assistant:
    """Load plugins and the model off the event loop, then warm the system prompt's KV cache.

    `model`: one already loaded (the bench's, which records its generations) instead of the configured one."""
    registry = registry or load_registry(config, services=services)
    if model is None:
        model_id, path = await asyncio.to_thread(llm_model, config)
        model = await asyncio.to_thread(load_llm, config, model_id, path)
    assistant = Assistant(config, registry, model, events=events, services=services)
    if warm:
        await assistant.warm()
    return assistant
