"""The conversion CLIs: help with examples, exit codes, --verify catching a wrong conversion."""

from __future__ import annotations

import pytest

from tools.convert_hf import hf_to_megatron, megatron_to_hf


@pytest.mark.unit
@pytest.mark.parametrize("cli", [hf_to_megatron, megatron_to_hf])
def test_help_has_examples(cli, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


@pytest.mark.unit
def test_cli_errors_exit_2_with_message(tiny_cases, tmp_path, capsys):
    assert hf_to_megatron.main(["--hf", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "is neither an HF model directory nor a .gguf file" in capsys.readouterr().err
    assert megatron_to_hf.main(["--ckpt", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "megatron_lang.json is missing" in capsys.readouterr().err


@pytest.mark.unit
def test_verify_passes_then_names_first_diverging_module(tiny_cases, tmp_path, capsys):
    import json

    from megatron_lang.conversion.verify import VerificationError, verify_conversion

    case = tiny_cases["mistral01"]
    ckpt = tmp_path / "ckpt"
    args = ["--hf", str(case.hf_dir), "--out", str(ckpt), "--verify", "--tolerance", "1e-4"]
    assert hf_to_megatron.main(args) == 0
    assert "OK" in capsys.readouterr().out
    # Same weights, but the metadata now claims a different layer-1 behaviour: no sliding window.
    meta = json.loads((ckpt / "megatron_lang.json").read_text())
    meta["arch"]["sliding_window"] = None
    (ckpt / "megatron_lang.json").write_text(json.dumps(meta))
    with pytest.raises(VerificationError, match="first diverging module: layer 0") as e:
        verify_conversion(case.hf_dir, ckpt, tolerance=1e-4)
    assert e.value.report.module_diffs["embedding"] == 0.0
