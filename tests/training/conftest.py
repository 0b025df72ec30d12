"""A small real training corpus built at test time (megatron_lang.data.demo): Danish and
Nynorsk GIMP manual pages, a 512-token byte-level BPE trained on them, Megatron datasets
and a blend spec; and a random tiny-llama start checkpoint."""

from __future__ import annotations

import pytest

from megatron_lang.data.demo import build_demo_data


@pytest.fixture(scope="session")
def tiny_blend(tmp_path_factory) -> dict[str, str]:
    """``{"blend": yaml path, "tokenizer": dir}`` for the tiny-llama preset (vocab 512)."""
    try:
        return build_demo_data(tmp_path_factory.mktemp("train-data"), docs_per_language=60)
    except FileNotFoundError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def start_checkpoint(tiny_blend, tmp_path_factory) -> str:
    """tiny-llama random weights saved at TP=1 with metadata and tokenizer (a start point)."""
    from tests._distributed import run_distributed
    from tests.training import _jobs

    out = str(tmp_path_factory.mktemp("start") / "ckpt")
    run_distributed(_jobs.make_start_checkpoint, 1, tiny_blend, out)
    return out


@pytest.fixture(scope="session")
def smollm2_job(smollm2_fp32_dir, tmp_path_factory) -> dict[str, str]:
    """The real SmolLM2-135M converted to Megatron, and Danish GIMP pages in its tokens.

    ``{"checkpoint": converted dir, "blend": blend YAML}``: what a user starts from.
    """
    from megatron_lang.conversion import hf_to_megatron

    root = tmp_path_factory.mktemp("smollm2-job")
    hf_to_megatron(smollm2_fp32_dir, root / "mcore")
    try:
        data = build_demo_data(
            root / "data", languages=("da",), docs_per_language=20, tokenizer=smollm2_fp32_dir
        )
    except FileNotFoundError as e:
        pytest.fail(str(e))
    return {"checkpoint": str(root / "mcore"), "blend": data["blend"]}


@pytest.fixture(scope="session")
def mask_blend(tiny_blend, tmp_path_factory) -> dict[str, str]:
    """The test blend with its tokenizer extended by a special ``<mask>`` (id 512)."""
    import json
    import shutil

    from tokenizers import Tokenizer

    out = tmp_path_factory.mktemp("mask-tok") / "tokenizer"
    shutil.copytree(tiny_blend["tokenizer"], out)
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    tok.add_special_tokens(["<mask>"])
    tok.save(str(out / "tokenizer.json"))
    config = json.loads((out / "tokenizer_config.json").read_text())
    (out / "tokenizer_config.json").write_text(json.dumps({**config, "mask_token": "<mask>"}))
    assert tok.token_to_id("<mask>") == 512
    return {"blend": tiny_blend["blend"], "tokenizer": str(out)}


@pytest.fixture(scope="session")
def mask_start(mask_blend, tmp_path_factory) -> str:
    """Random tiny-llama weights with room for the mask id (vocab 513, padded to 640)."""
    from tests._distributed import run_distributed
    from tests.training import _jobs

    out = str(tmp_path_factory.mktemp("mask-start") / "ckpt")
    run_distributed(_jobs.make_start_checkpoint, 1, mask_blend, out, "model.arch.vocab_size=513")
    return out
