"""The prepared GPU check of the bf16/NCCL training path (one command, a few minutes).

What CPU tests cannot run: NCCL collectives, CUDA tensors, bf16 kernels. On the GPU
machine (no network, no TransformerEngine needed) it builds a synthetic corpus and a
512-token BPE in a temporary folder, trains a tiny Llama in fp32 for 30 steps (the
"pretrained" start, saved), then continues from it for 6 steps in fp32, in bf16, and in
bf16 with ``optimizer.overlap_param_gather`` and a save, each on every visible GPU
through torchrun and NCCL. It prints the losses and checks:

* bf16 starts where the pretrained model is (not at a random model's ln 512 = 6.24)
  and stays within 0.1 nats of fp32 (the master-weights bug gave +2 nats at step 2);
* the overlap run's losses equal the plain bf16 run's, and its checkpoint saves;
* with ``data.document_attention`` the packed attention (``model.attention=packed``:
  PyTorch SDPA per document without TE) follows the dense-mask reference in fp32;
* every job exits 0 (an all-reduce of a host tensor fails at start-up under NCCL).

Exit status 0 when every check passes, 1 otherwise. Without CUDA it runs the same
jobs on gloo (a smoke run of the script itself; it proves nothing about GPUs).

Usage::

    python bench/gpu_path_check.py            # all visible GPUs (1 is enough)
    python bench/gpu_path_check.py --gpus 1
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TOLERANCE = 0.1
PACKED_TOLERANCE = 2e-3
"""fp32 losses, packed vs dense attention (TF32 matmuls on GPUs may be on)."""


def build_data(root: Path) -> dict[str, str]:
    """A Zipf-distributed synthetic corpus -> BPE tokenizer -> Megatron dataset -> blend."""
    from megatron_lang.data.demo import train_bpe_tokenizer
    from megatron_lang.data.preprocess import PreprocessConfig, preprocess

    rng = random.Random(0)
    letters = "abdefghijklmnoprstuvyæøå"
    words = ["".join(rng.choice(letters) for _ in range(rng.randint(2, 8))) for _ in range(400)]
    weights = [1.0 / (i + 1) for i in range(len(words))]
    texts = [
        " ".join(rng.choices(words, weights, k=rng.randint(80, 300))) + "." for _ in range(600)
    ]
    root.mkdir(parents=True, exist_ok=True)
    tok = train_bpe_tokenizer(texts, root / "tokenizer", 512)
    (root / "corpus.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    preprocess(
        PreprocessConfig(
            inputs=[str(root / "corpus.jsonl")],
            output_prefix=str(root / "synthetic"),
            tokenizer=str(tok),
            append_eod=True,
            progress=False,
        )
    )
    (root / "blend.yaml").write_text(
        f'root: {root}\nsplit: "95,5,0"\nsources:\n'
        "  - {name: synthetic, path: synthetic_text_document, weight: 1.0, language: xx}\n"
    )
    return {"blend": str(root / "blend.yaml"), "tokenizer": str(tok)}


def run_job(ranks: int, overrides: dict, metrics: Path) -> tuple[int, list[float], str]:
    """One training job under torchrun; its exit code, losses and output tail."""
    args = [f"{k}={'null' if v is None else v}" for k, v in overrides.items()]
    args.append(f"logging.metrics_file={metrics}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += [f"--nproc-per-node={ranks}", "-m", "megatron_lang.train", *args]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    losses = []
    if metrics.is_file():
        losses = [
            r["loss"] for r in map(json.loads, metrics.read_text().splitlines()) if "loss" in r
        ]
    return out.returncode, losses, (out.stdout + out.stderr)[-3000:]


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--gpus", type=int, default=None, help="ranks (default: visible GPUs, or 1)")
    a = p.parse_args(argv)
    ranks = a.gpus or max(1, torch.cuda.device_count())
    print(
        f"device: {torch.cuda.get_device_name() if torch.cuda.is_available() else 'CPU (gloo smoke run)'}, ranks {ranks}"
    )
    ok = True
    with tempfile.TemporaryDirectory(prefix="gpu-path-check-") as d:
        root = Path(d)
        data = build_data(root / "data")
        common = {
            "model.preset": "tiny-llama",
            "data.blend": data["blend"],
            "data.tokenizer": data["tokenizer"],
            "data.seq_length": 128,
            "data.micro_batch_size": 2,
            "data.global_batch_size": 8 * ranks,
            "optimizer.schedule": "constant",
            "optimizer.warmup_steps": 0,
            "train.eval_interval": 0,
            "logging.level": "WARNING",
        }
        code, losses, tail = run_job(
            ranks,
            {
                **common,
                "model.dtype": "fp32",
                "train.steps": 30,
                "optimizer.lr": 3e-3,
                "checkpoint.dir": root / "start",
            },
            root / "start.jsonl",
        )
        print(f"pretraining fp32, 30 steps: exit {code}, loss {losses[:1]} -> {losses[-1:]}")
        if code:
            print(tail)
            return 1
        start = root / "start" / (root / "start" / "latest").read_text().strip()
        cont = {
            **common,
            "model.checkpoint": start,
            "model.preset": None,
            "train.steps": 6,
            "optimizer.lr": 1e-3,
        }
        runs = {}
        for name, extra in [
            ("fp32", {"model.dtype": "fp32"}),
            ("bf16", {"model.dtype": "bf16"}),
            (
                "bf16+overlap",
                {
                    "model.dtype": "bf16",
                    "optimizer.overlap_param_gather": True,
                    "optimizer.overlap_grad_reduce": True,
                    "checkpoint.dir": root / "ov",
                },
            ),
        ]:
            code, losses, tail = run_job(ranks, {**cont, **extra}, root / f"{name}.jsonl")
            runs[name] = losses
            print(f"{name:>13}: exit {code}, losses {[round(x, 4) for x in losses]}")
            if code:
                print(tail)
                ok = False
        # packed-sequence attention (PyTorch SDPA per document on CUDA without TE) against
        # the dense-mask reference, document-causal, fp32
        for name in ("packed", "dense"):
            extra = {"model.dtype": "fp32", "data.document_attention": True}
            extra["model.attention"] = name
            code, losses, tail = run_job(ranks, {**cont, **extra}, root / f"doc-{name}.jsonl")
            runs[f"doc-{name}"] = losses
            print(f"{'doc ' + name:>13}: exit {code}, losses {[round(x, 4) for x in losses]}")
            if code:
                print(tail)
                ok = False
        packed, dense = runs["doc-packed"], runs["doc-dense"]
        if packed and dense:
            worst = max(abs(x - y) for x, y in zip(packed, dense))
            good = worst <= PACKED_TOLERANCE and len(packed) == 6
            print(
                f"packed vs dense attention: max |diff| {worst:.2e} "
                f"(tolerance {PACKED_TOLERANCE}): {'ok' if good else 'FAIL'}"
            )
            ok &= good
        fp32, bf16, ov = runs["fp32"], runs["bf16"], runs["bf16+overlap"]
        if fp32 and bf16:
            worst = max(abs(x - y) for x, y in zip(fp32, bf16))
            good = worst <= TOLERANCE and len(bf16) == 6
            print(
                f"bf16 vs fp32: max |diff| {worst:.4f} (tolerance {TOLERANCE}): {'ok' if good else 'FAIL'}"
            )
            ok &= good
        same = bool(ov) and ov == bf16
        print(f"overlap_param_gather losses equal plain bf16: {'ok' if same else 'FAIL'}")
        saved = (root / "ov" / "latest").is_file()
        print(f"overlap run saved a checkpoint: {'ok' if saved else 'FAIL'}")
        ok &= same and saved
    print("GPU path check:", "PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
