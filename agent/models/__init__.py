"""The model manager: which model serves each role (manifest.py) and a verified store (store.py: what is
there, with downloads.py fetching the sources and verification.py saying whether a file is what it must be).

Engines call `model_path(config, "asr", engine="vosk")` or `model_file(config, "llm")` for a verified path,
or a ModelError naming the model, the file and the `cabin-agent models fetch <id>` command that fixes it.
"""

from agent.models.manifest import Manifest, ModelEntry, load_manifest, resolve
from agent.models.store import ModelStore, model_file, model_path, open_store
from agent.models.verification import ModelStatus

__all__ = [
    "Manifest",
    "ModelEntry",
    "ModelStatus",
    "ModelStore",
    "load_manifest",
    "model_file",
    "model_path",
    "open_store",
    "resolve",
]
