"""Benchmark HF -> Megatron -> HF conversion on a synthetic Llama-2-7B-shaped checkpoint.

Writes a random-weight bf16 checkpoint with Llama-2-7B shapes (sharded
safetensors) under ``--workdir``, then runs each conversion direction in its own
process and prints wall time, peak RSS (``wait4``), bytes read/written and the
time a plain read + write of the same bytes takes, against the targets:
peak RSS <= 2 x largest tensor + 1 GB, time <= 1.5 x plain read + write.

    python bench/convert.py                       # full 32 layers: ~13.5 GB x 3 on disk
    python bench/convert.py --layers 4 --check    # quick run, plus a bitwise round-trip check
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

GB = 1024**3


def llama2_7b_config(layers: int) -> dict:
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": 32000,
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": layers,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "dtype": "bfloat16",
        "bos_token_id": 1,
        "eos_token_id": 2,
    }


def write_synthetic(hf_dir: Path, layers: int) -> int:
    """Random bf16 weights, written tensor by tensor; returns the largest tensor's bytes."""
    import torch
    from transformers import LlamaConfig

    from megatron_lang.conversion.families import LLAMA_RULES, llama_from_hf_config
    from megatron_lang.conversion.hf_io import StreamingSafetensorsWriter
    from megatron_lang.conversion.mapping import expand

    hf_dir.mkdir(parents=True)
    cfg = llama2_7b_config(layers)
    (hf_dir / "config.json").write_text(json.dumps(cfg, indent=2))
    arch = llama_from_hf_config(LlamaConfig(**cfg))
    plan = [
        (n, s, torch.bfloat16) for c in expand(LLAMA_RULES, arch) for n, s in zip(c.hf, c.hf_shapes)
    ]
    writer = StreamingSafetensorsWriter(hf_dir, plan, max_shard_bytes=5 * GB)
    gen = torch.Generator().manual_seed(0)
    for name, shape, dtype in plan:
        writer.write(name, (torch.randn(shape, generator=gen) * 0.02).to(dtype))
    writer.close()
    return max(torch.Size(s).numel() * 2 for _, s, _ in plan)


def dir_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def run_phase(args: list[str], timing: Path) -> tuple[float, float, int]:
    """Run ``bench/convert.py --phase ...`` in a child.

    Returns (process seconds, seconds inside the conversion call, peak RSS bytes).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args, "--timing", str(timing)], cwd=REPO)
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"phase {args} failed")
    return secs, float(timing.read_text()), usage.ru_maxrss * 1024


def plain_read_write(src: Path, dst_file: Path, nbytes_out: int, fsync: bool) -> float:
    """Seconds to read every file under ``src`` and write ``nbytes_out`` bytes."""
    chunk = 64 * 1024**2
    t0 = time.perf_counter()
    for p in sorted(src.rglob("*")):
        if p.is_file():
            with open(p, "rb") as f:
                while f.read(chunk):
                    pass
    buf = os.urandom(chunk)
    with open(dst_file, "wb") as f:
        left = nbytes_out
        while left > 0:
            f.write(buf[: min(chunk, left)])
            left -= chunk
        if fsync:
            f.flush()
            os.fsync(f.fileno())
    secs = time.perf_counter() - t0
    dst_file.unlink()
    return secs


def phase_main(phase: str, src: str, dst: str, timing: str) -> None:
    from megatron_lang.conversion import hf_to_megatron, megatron_to_hf

    fn = hf_to_megatron if phase == "hf2meg" else megatron_to_hf
    t0 = time.perf_counter()
    fn(src, dst)
    Path(timing).write_text(str(time.perf_counter() - t0))


def check_bitwise(a: Path, b: Path) -> bool:
    from safetensors import safe_open

    def index(d: Path) -> dict:
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            h = safe_open(str(f), framework="pt")
            out.update({k: h for k in h.keys()})
        return out

    ia, ib = index(a), index(b)
    if sorted(ia) != sorted(ib):
        return False
    return all(ia[k].get_tensor(k).equal(ib[k].get_tensor(k)) for k in ia)


def report(
    name: str, phase: tuple[float, float, int], read: int, written: int, base: float, rss_cap: int
) -> bool:
    secs, call, rss = phase
    ok_rss, ok_time = rss <= rss_cap, secs <= 1.5 * base
    print(
        f"{name}: {secs:.1f} s process ({call:.1f} s in the conversion call, the rest is "
        f"interpreter start and imports); peak RSS {rss / GB:.2f} GB (cap 2 x largest + 1 GB = "
        f"{rss_cap / GB:.2f}: {'ok' if ok_rss else 'OVER'}); read {read / GB:.2f} GB, written "
        f"{written / GB:.2f} GB; plain read+write of those bytes {base:.1f} s; ratio "
        f"{secs / base:.2f} process, {call / base:.2f} call (cap 1.5: {'ok' if ok_time else 'OVER'})"
    )
    return ok_rss and ok_time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", default="/tmp", help="where the temporary checkpoints go")
    p.add_argument("--layers", type=int, default=32, help="decoder layers (32 = Llama-2-7B)")
    p.add_argument(
        "--check", action="store_true", help="verify the round trip is bitwise identical"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary checkpoints")
    p.add_argument("--phase", choices=["hf2meg", "meg2hf"], help=argparse.SUPPRESS)
    p.add_argument("--src", help=argparse.SUPPRESS)
    p.add_argument("--dst", help=argparse.SUPPRESS)
    p.add_argument("--timing", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phase:
        phase_main(args.phase, args.src, args.dst, args.timing)
        return 0

    root = Path(tempfile.mkdtemp(prefix="mlang-bench-convert-", dir=args.workdir))
    hf, meg, hf2 = root / "hf", root / "megatron", root / "hf-roundtrip"
    try:
        t0 = time.perf_counter()
        largest = write_synthetic(hf, args.layers)
        print(f"synthetic Llama-2-7B shape, {args.layers} layers, bf16: {dir_bytes(hf) / GB:.2f} GB "
              f"written in {time.perf_counter() - t0:.1f} s; largest tensor {largest / 1e6:.0f} MB")  # fmt: skip
        cap = 2 * largest + GB
        p1 = run_phase(["--phase", "hf2meg", "--src", str(hf), "--dst", str(meg)], root / "t1")
        rd1, wr1 = dir_bytes(hf), dir_bytes(meg)
        b1 = plain_read_write(hf, root / "plain.bin", wr1, fsync=True)
        p2 = run_phase(["--phase", "meg2hf", "--src", str(meg), "--dst", str(hf2)], root / "t2")
        rd2, wr2 = dir_bytes(meg), dir_bytes(hf2)
        b2 = plain_read_write(meg, root / "plain.bin", wr2, fsync=True)
        ok = report("HF->Megatron", p1, rd1, wr1, b1, cap)
        ok &= report("Megatron->HF", p2, rd2, wr2, b2, cap)
        if args.check:
            same = check_bitwise(hf, hf2)
            print(f"round trip bitwise identical: {same}")
            ok &= same
        return 0 if ok else 1
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
