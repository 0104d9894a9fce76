"""The real dev profile in the default store: fetched (or instantly verified) and really checked."""

from __future__ import annotations

import pytest
from helpers.real import require

from agent.core.config import validate
from agent.models import model_file, model_path, open_store
from agent.models.verification import sha256_file

QWEN_05B_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"


@pytest.mark.model
@pytest.mark.slow
def test_dev_profile_fetches_and_the_small_qwen_is_the_real_one() -> None:
    config = validate({"models": {"profile": "dev"}})
    store = open_store(config, progress=False)
    failures = []
    for model_id in store.manifest.profile("dev").models:
        try:
            store.fetch(model_id)
        except Exception as err:  # collected so one unreachable model does not hide the others
            failures.append(f"{model_id}: {err}")
    require(not failures, "dev models could not be fetched: " + "; ".join(failures))

    gguf = store.file("qwen2.5-coder-0.5b-instruct-q4_k_m")
    assert gguf.stat().st_size == 491_400_064
    # Hash the bytes ourselves: this must not trust the store's own stamp.
    assert sha256_file(gguf) == QWEN_05B_SHA256
    with gguf.open("rb") as fh:
        assert fh.read(4) == b"GGUF"

    assert model_file(config, "llm").name == "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf"
    whisper = model_path(config, "asr", engine="whisper")
    assert (whisper / "model.bin").stat().st_size == 75_537_502
    vosk = model_path(config, "asr", "ko", engine="vosk")
    assert (vosk / "graph" / "HCLr.fst").is_file() and (vosk / "am" / "final.mdl").is_file()
    assert all(store.status(m).ok for m in store.manifest.profile("dev").models)
