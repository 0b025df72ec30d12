"""Classification fine-tuning of HF exports, base against adapted on the same folds.

The protocol of Curie's Danish/Norwegian adaptation study: each model (an HF
directory: the base model, its continued-pretraining export, ...) gets a
sequence-classification head (``AutoModelForSequenceClassification``) and is
fine-tuned — all weights, or LoRA adapters through PEFT with the head trained in
full — with a **class-weighted cross-entropy** on a labelled task, over **fixed
folds** built once with a seed, so every model is trained and tested on exactly
the same examples. Accuracy and macro-F1 (scikit-learn) per fold, then mean ± std.

Data
    :func:`ddtp_section_data` — the Debian-section task in Danish, offline: the text
    is a package's Danish description (DDTP's human translation, short + long), the
    label its Debian section among the ``n_sections`` most common ones. By default
    only DDTP's ``eval`` packages (:func:`megatron_lang.data.ddtp.assign_splits`)
    are used, the packages the instruction-data tool never writes, so a model
    instruction-tuned on DDTP is not fine-tuned and tested on what it saw.
    :func:`read_labelled_jsonl` — any JSONL with ``text`` and ``label`` (strings or
    integers); an optional ``group`` field keeps lines of one group in one fold.

Folds (:func:`make_folds`)
    scikit-learn's ``StratifiedGroupKFold`` (shuffled with the seed) over groups:
    for DDTP a group is a package, or several packages linked by a shared
    description (:func:`megatron_lang.data.ddtp.split_keys`), so a package is never
    on both sides of a fold. :func:`check_folds` refuses folds where a package is on
    both sides or a class is missing from a training fold (its weight would be
    undefined and the model could never predict it).

Loss (:class:`WeightedTrainer`)
    ``transformers.Trainer`` with only ``compute_loss`` replaced: cross-entropy with
    class weights ``n_samples / (n_classes * count_c)`` over the training fold
    (scikit-learn's ``"balanced"``, :func:`class_weights`). As in PyTorch's
    ``cross_entropy(weight=...)``, a batch's loss is
    ``sum_i w[y_i] * -log softmax(z_i)[y_i] / sum_i w[y_i]``.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import statistics
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from megatron_lang.data.ddtp import DdtpEntry, assign_splits, split_keys
from megatron_lang.downstream.data import DownstreamDataError
from megatron_lang.platform import get_logger
from megatron_lang.platform.files import atomic_output_dir

log = get_logger(__name__)

FORMAT = "megatron_lang.classify/1"


class ClassificationError(DownstreamDataError):
    """Unusable labelled data, folds or model for the classification fine-tuning."""


# ----------------------------------------------------------------------------- data


@dataclass
class LabelledData:
    """Texts with integer labels (indices into ``names``) and a fold group per text."""

    texts: list[str]
    labels: list[int]
    names: list[str]
    groups: list[str]
    source: str = ""
    packages: list[list[str]] | None = None
    """DDTP: the packages each text describes (a group may link several)."""

    def __post_init__(self) -> None:
        n = len(self.texts)
        if not (n == len(self.labels) == len(self.groups)) or (
            self.packages is not None and len(self.packages) != n
        ):
            raise ClassificationError("texts, labels, groups (and packages) differ in length")
        if len(self.names) < 2:
            raise ClassificationError(f"{self.source}: fewer than 2 classes ({self.names})")
        bad = [y for y in self.labels if not 0 <= y < len(self.names)]
        if bad:
            raise ClassificationError(
                f"{self.source}: label {bad[0]} outside 0..{len(self.names) - 1}"
            )

    def counts(self, index: Sequence[int] | None = None) -> dict[str, int]:
        """Examples per class name (of ``index``, or all)."""
        idx = range(len(self.labels)) if index is None else index
        c = Counter(self.labels[i] for i in idx)
        return {name: c.get(k, 0) for k, name in enumerate(self.names)}

    def subset(self, index: Sequence[int]) -> LabelledData:
        return LabelledData(
            [self.texts[i] for i in index],
            [self.labels[i] for i in index],
            list(self.names),
            [self.groups[i] for i in index],
            self.source,
            None if self.packages is None else [self.packages[i] for i in index],
        )


def _da_text(e: DdtpEntry, max_chars: int | None) -> str:
    text = " ".join((e.short_da + ("\n\n" + e.long_da if e.long_da else "")).split())
    return text[:max_chars] if max_chars else text


def ddtp_section_data(
    entries: Sequence[DdtpEntry],
    n_sections: int = 8,
    split: str = "eval",
    limit: int | None = None,
    seed: int = 0,
    max_chars: int | None = 1000,
) -> LabelledData:
    """The Debian-section task: Danish description → section among the most common.

    Args:
        entries: every DDTP pair (:func:`megatron_lang.data.ddtp.load_ddtp`); the most
            common sections are counted over all of them.
        n_sections: classes (the ``n_sections`` most common sections; ties by name).
        split: ``eval`` (default: the packages no instruction data holds), ``train``,
            ``valid`` or ``all``.
        limit: sample this many examples with ``seed`` (None: all), kept in input order.
        seed: the sampling seed.
        max_chars: the whitespace-flattened text is cut here (None: whole).
    """
    if split not in ("all", "train", "valid", "eval"):
        raise ClassificationError(f"split {split!r}: expected all, train, valid or eval")
    counts = Counter(e.section for e in entries if e.section)
    top = sorted(counts, key=lambda s: (-counts[s], s))[:n_sections]
    if len(top) < 2:
        raise ClassificationError(
            "fewer than 2 Debian sections: the Packages lists are missing from the apt lists"
        )
    names = sorted(top)
    splits = assign_splits(entries) if split != "all" else {}
    keys = split_keys(entries)
    chosen = [
        e
        for e in entries
        if e.section in top and (split == "all" or splits[e.md5] == split) and e.short_da.strip()
    ]
    if limit is not None and len(chosen) > limit:
        keep = set(random.Random(seed).sample(range(len(chosen)), limit))
        chosen = [e for i, e in enumerate(chosen) if i in keep]
    return LabelledData(
        texts=[_da_text(e, max_chars) for e in chosen],
        labels=[names.index(e.section) for e in chosen],
        names=names,
        groups=[keys[e.md5] for e in chosen],
        source=f"DDTP Danish descriptions ({split} packages), {n_sections} sections",
        packages=[list(e.packages) for e in chosen],
    )


def read_labelled_jsonl(
    path: str | os.PathLike, text_field: str = "text", label_field: str = "label"
) -> LabelledData:
    """Any ``text``/``label`` JSONL; labels all strings or all integers.

    Class names are the sorted distinct labels (integers sorted as numbers); an
    optional ``group`` field (e.g. a package or author) keeps its lines in one fold,
    otherwise each line is its own group. A bad line raises naming ``FILE:LINE``.
    """
    texts, raw, groups = [], [], []
    kind = None
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{n}"
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise ClassificationError(f"{where}: not JSON ({e.msg})") from None
            if not isinstance(rec, dict):
                raise ClassificationError(f"{where}: not a JSON object")
            text, label = rec.get(text_field), rec.get(label_field)
            if not isinstance(text, str) or not text.strip():
                raise ClassificationError(f"{where}: {text_field!r} must be a non-empty string")
            if isinstance(label, bool) or not isinstance(label, (str, int)):
                raise ClassificationError(
                    f"{where}: {label_field!r} must be a string or an integer, not {label!r}"
                )
            if isinstance(label, str) and not label.strip():
                raise ClassificationError(f"{where}: {label_field!r} is empty")
            this = type(label).__name__
            if kind is None:
                kind = this
            elif this != kind:
                raise ClassificationError(
                    f"{where}: label {label!r} is a {this}, earlier labels are {kind}s "
                    "(use one type)"
                )
            group = rec.get("group", f"line{n}")
            texts.append(text)
            raw.append(label)
            groups.append(str(group))
    if not texts:
        raise ClassificationError(f"{path}: no labelled line")
    values = sorted(set(raw))
    names = [str(v) for v in values]
    index = {v: i for i, v in enumerate(values)}
    return LabelledData(texts, [index[v] for v in raw], names, groups, str(path))


# ----------------------------------------------------------------------------- folds


def make_folds(data: LabelledData, k: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """``k`` (train, test) index lists, stratified by label and grouped (scikit-learn's
    ``StratifiedGroupKFold``, shuffled with ``seed``); checked by :func:`check_folds`."""
    import numpy as np
    from sklearn.model_selection import StratifiedGroupKFold

    if k < 2:
        raise ClassificationError(f"--folds {k}: need at least 2")
    n_groups = len(set(data.groups))
    if n_groups < k:
        raise ClassificationError(
            f"{k} folds need at least {k} groups, {data.source} has {n_groups}"
        )
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    folds = [
        (sorted(map(int, tr)), sorted(map(int, te)))
        for tr, te in cv.split(np.zeros(len(data.labels)), data.labels, data.groups)
    ]
    check_folds(data, folds)
    return folds


def check_folds(data: LabelledData, folds: Sequence[tuple[Sequence[int], Sequence[int]]]) -> None:
    """Refuse folds where a group (package) is on both sides, or where a training fold
    misses a class; every example must be tested exactly once."""
    tested = Counter(i for _, te in folds for i in te)
    if sorted(tested) != list(range(len(data.labels))) or any(c != 1 for c in tested.values()):
        raise ClassificationError("the folds do not test every example exactly once")
    for f, (tr, te) in enumerate(folds, 1):
        both = {data.groups[i] for i in tr} & {data.groups[i] for i in te}
        if both:
            raise ClassificationError(
                f"fold {f}: {len(both)} group(s) on both sides, e.g. {sorted(both)[0]!r}"
            )
        missing = [n for n, c in data.counts(tr).items() if c == 0]
        if missing:
            counts = data.counts()
            raise ClassificationError(
                f"fold {f}: class(es) {', '.join(missing)} missing from the training fold "
                f"({', '.join(f'{m}: {counts[m]} example(s) in all' for m in missing)}); use "
                "fewer folds, more data (--limit), or drop the rare classes"
            )


# ----------------------------------------------------------------------------- loss


def class_weights(labels: Sequence[int], n_classes: int) -> list[float]:
    """``n_samples / (n_classes * count_c)`` (scikit-learn's ``"balanced"``); every
    class must occur in ``labels``."""
    import numpy as np
    from sklearn.utils.class_weight import compute_class_weight

    y = np.asarray(labels)
    missing = sorted(set(range(n_classes)) - set(y.tolist()))
    if missing:
        raise ClassificationError(f"class(es) {missing} missing: their weight is undefined")
    w = compute_class_weight("balanced", classes=np.arange(n_classes), y=y)
    return [float(x) for x in w]


@functools.cache
def _trainer_class():
    import torch
    import torch.nn.functional as F
    from transformers import Trainer

    class WeightedTrainer(Trainer):
        """``Trainer`` whose loss is the class-weighted cross-entropy (``class_weights``)."""

        def __init__(self, *args, class_weights: Sequence[float], **kwargs):
            super().__init__(*args, **kwargs)
            self.class_weights = torch.tensor(list(class_weights), dtype=torch.float32)
            # the loss is a mean over the batch: let Trainer scale for accumulation
            self.model_accepts_loss_kwargs = False

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            inputs = dict(inputs)
            labels = inputs.pop("labels")
            outputs = model(**inputs)
            logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
            w = self.class_weights.to(logits.device)
            loss = F.cross_entropy(logits.float(), labels.to(logits.device), weight=w)
            return (loss, outputs) if return_outputs else loss

    return WeightedTrainer


def __getattr__(name: str):
    if name == "WeightedTrainer":  # imported lazily: transformers is heavy
        return _trainer_class()
    raise AttributeError(name)


# ----------------------------------------------------------------------------- fine-tuning


@dataclass
class FineTuneSettings:
    """How each fold is fine-tuned (one set for every model)."""

    epochs: float = 1.0
    lr: float | None = None
    """None: 2e-5 for full fine-tuning, 2e-4 for LoRA."""
    batch_size: int = 8
    max_length: int = 128
    seed: int = 0
    lora: bool = False
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    lora_targets: list[str] | None = None
    """None: PEFT's default modules for the architecture (q_proj, v_proj for Llama)."""
    weight_decay: float = 0.0
    warmup: float = 0.1
    """Warm-up as a fraction of the steps."""
    device: str = "cpu"
    threads: int | None = None

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.lora else 2e-5)


HEAD_NAMES = ("score", "classifier", "classification_head")


def load_model(path: str | os.PathLike, n_labels: int, settings: FineTuneSettings):
    """``(model, tokenizer)``: a classification head on the HF model at ``path``, the pad
    token set (eos when the tokenizer has none), LoRA-wrapped with ``settings.lora``."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, set_seed
    from transformers.utils import logging as hf_logging

    path = Path(path)
    if not (path / "config.json").is_file():
        raise ClassificationError(f"{path}: not an HF model directory (no config.json)")
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ClassificationError(f"{path}: the tokenizer has neither a pad nor an eos token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    set_seed(settings.seed)  # the new head (and LoRA's A matrices) start the same per fold
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the head is "newly initialized": expected
    hf_logging.disable_progress_bar()
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=n_labels, dtype="float32"
        )
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()
    model.config.pad_token_id = tok.pad_token_id
    model.config.use_cache = False
    if settings.lora:
        from peft import LoraConfig, TaskType, get_peft_model

        heads = [n for n in HEAD_NAMES if hasattr(model, n)]
        if not heads:
            raise ClassificationError(f"{path}: no classification head named {HEAD_NAMES}")
        cfg = LoraConfig(
            task_type=TaskType.SEQ_CLS,
            r=settings.lora_r,
            lora_alpha=settings.lora_alpha,
            lora_dropout=settings.lora_dropout,
            target_modules=settings.lora_targets,
            modules_to_save=heads,
        )
        model = get_peft_model(model, cfg)
    return model, tok


def trainable_parameters(model) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts."""
    ps = list(model.parameters())
    return sum(p.numel() for p in ps if p.requires_grad), sum(p.numel() for p in ps)


def _encode(tok, texts: Sequence[str], labels: Sequence[int], max_length: int) -> list[dict]:
    enc = tok(list(texts), truncation=True, max_length=max_length)
    return [
        {"input_ids": ids, "attention_mask": am, "labels": int(y)}
        for ids, am, y in zip(enc["input_ids"], enc["attention_mask"], labels)
    ]


def scores(y_true: Sequence[int], y_pred: Sequence[int]) -> dict[str, float]:
    """Accuracy and macro-F1 (scikit-learn; macro over the classes in ``y_true`` or
    ``y_pred``, a class never predicted counts F1 0)."""
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
    }


def fine_tune_fold(
    model_dir: str | os.PathLike,
    data: LabelledData,
    train: Sequence[int],
    test: Sequence[int],
    settings: FineTuneSettings,
) -> dict:
    """Fine-tune a fresh model on ``train``, predict ``test``: scores, predictions, losses."""
    import numpy as np
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, TrainingArguments

    if settings.threads:
        torch.set_num_threads(settings.threads)
    t0 = time.perf_counter()
    model, tok = load_model(model_dir, len(data.names), settings)
    trainable, total = trainable_parameters(model)
    weights = class_weights([data.labels[i] for i in train], len(data.names))
    train_ds = _encode(tok, [data.texts[i] for i in train], [data.labels[i] for i in train],
                       settings.max_length)  # fmt: skip
    test_ds = _encode(tok, [data.texts[i] for i in test], [data.labels[i] for i in test],
                      settings.max_length)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="classify-") as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=settings.epochs,
            learning_rate=settings.learning_rate,
            per_device_train_batch_size=settings.batch_size,
            per_device_eval_batch_size=settings.batch_size * 2,
            weight_decay=settings.weight_decay,
            warmup_steps=settings.warmup,
            lr_scheduler_type="linear",
            seed=settings.seed,
            data_seed=settings.seed,
            save_strategy="no",
            eval_strategy="no",
            logging_strategy="no",
            report_to="none",
            disable_tqdm=True,
            use_cpu=settings.device == "cpu",
            dataloader_num_workers=0,
        )
        trainer = _trainer_class()(
            model=model,
            args=args,
            train_dataset=train_ds,
            data_collator=DataCollatorWithPadding(tok),
            processing_class=tok,
            class_weights=weights,
        )
        trainer.remove_callback(PrinterCallback)  # the progress lines are the caller's
        result = trainer.train()
        pred = trainer.predict(test_ds)
    logits = pred.predictions[0] if isinstance(pred.predictions, tuple) else pred.predictions
    y_pred = np.asarray(logits).argmax(-1).tolist()
    y_true = [data.labels[i] for i in test]
    lengths = [len(d["input_ids"]) for d in train_ds]
    return {
        **scores(y_true, y_pred),
        "train_loss": float(result.training_loss),
        "test_loss": float(pred.metrics.get("test_loss", math.nan)),
        "train_examples": len(train),
        "test_examples": len(test),
        "steps": int(result.global_step),
        "mean_train_tokens": float(np.mean(lengths)),
        "truncated": int(sum(n >= settings.max_length for n in lengths)),
        "class_weights": weights,
        "trainable_parameters": trainable,
        "parameters": total,
        "seconds": time.perf_counter() - t0,
        "predictions": y_pred,
    }


def mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (0 for one value)."""
    vals = list(values)
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
    }


def majority_baseline(data: LabelledData, folds) -> dict:
    """Always the most common class of the training fold: the floor to beat."""
    per = []
    for tr, te in folds:
        c = Counter(data.labels[i] for i in tr)
        top = min(c, key=lambda k: (-c[k], k))
        per.append(scores([data.labels[i] for i in te], [top] * len(te)))
    return {
        "folds": per,
        "accuracy": mean_std([p["accuracy"] for p in per]),
        "macro_f1": mean_std([p["macro_f1"] for p in per]),
    }


def run_classification(
    models: dict[str, str],
    data: LabelledData,
    folds: Sequence[tuple[Sequence[int], Sequence[int]]],
    settings: FineTuneSettings,
    progress: Callable[[str], None] = print,
) -> dict:
    """Every model fine-tuned and tested on every fold; the first model is the reference
    the others are compared with, fold by fold."""
    check_folds(data, folds)
    out: dict = {
        "format": FORMAT,
        "settings": {**asdict(settings), "learning_rate": settings.learning_rate},
        "data": {
            "source": data.source,
            "examples": len(data.labels),
            "groups": len(set(data.groups)),
            "classes": data.names,
            "counts": data.counts(),
        },
        "folds": [
            {
                "train": len(tr),
                "test": len(te),
                "train_counts": data.counts(tr),
                "test_counts": data.counts(te),
            }
            for tr, te in folds
        ],  # fmt: skip
        "majority": majority_baseline(data, folds),
        "models": {},
    }
    k = len(folds)
    for label, path in models.items():
        per = []
        for f, (tr, te) in enumerate(folds, 1):
            progress(f"[{label}] fold {f}/{k}: fine-tuning on {len(tr)}, testing on {len(te)} ...")
            r = fine_tune_fold(path, data, tr, te, settings)
            progress(
                f"[{label}] fold {f}/{k}: accuracy {r['accuracy']:.3f}  macro-F1 "
                f"{r['macro_f1']:.3f}  train loss {r['train_loss']:.3f}  ({r['seconds']:.0f} s)"
            )
            per.append(r)
        out["models"][label] = {
            "path": str(path),
            "folds": per,
            "accuracy": mean_std([r["accuracy"] for r in per]),
            "macro_f1": mean_std([r["macro_f1"] for r in per]),
            "seconds": sum(r["seconds"] for r in per),
        }
    labels = list(models)
    ref = labels[0]
    out["reference"] = ref
    out["differences"] = {
        other: {
            m: mean_std(
                [
                    a[m] - b[m]
                    for a, b in zip(out["models"][other]["folds"], out["models"][ref]["folds"])
                ]
            )
            for m in ("accuracy", "macro_f1")
        }
        for other in labels[1:]
    }
    return out


# ----------------------------------------------------------------------------- report


def _pm(d: dict) -> str:
    return f"{d['mean']:.3f} ± {d['std']:.3f}"


def results_markdown(results: dict) -> str:
    """The table: a row per model (and the majority-class floor), mean ± std over folds."""
    s, d = results["settings"], results["data"]
    k = len(results["folds"])
    mode = f"LoRA r={s['lora_r']}" if s["lora"] else "full fine-tuning"
    lines = [
        "# Classification fine-tuning",
        "",
        f"{d['source']}: {d['examples']} examples, {d['groups']} groups, "
        f"{len(d['classes'])} classes ({', '.join(d['classes'])}); {k} folds by group "
        f"(seed {s['seed']}), {mode}, {s['epochs']:g} epoch(s), lr {s['learning_rate']:g}, "
        f"batch {s['batch_size']}, max length {s['max_length']}, class-weighted "
        "cross-entropy. Mean ± std over the folds.",
        "",
        "| model | accuracy | macro-F1 | macro-F1 per fold | minutes |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, m in results["models"].items():
        per = " / ".join(f"{r['macro_f1']:.3f}" for r in m["folds"])
        lines.append(
            f"| {label} | {_pm(m['accuracy'])} | {_pm(m['macro_f1'])} | {per} | "
            f"{m['seconds'] / 60:.1f} |"
        )
    maj = results["majority"]
    per = " / ".join(f"{r['macro_f1']:.3f}" for r in maj["folds"])
    lines.append(f"| majority class | {_pm(maj['accuracy'])} | {_pm(maj['macro_f1'])} | {per} | |")
    ref = results["reference"]
    if results["differences"]:
        lines += ["", f"Paired by fold, against {ref}:", ""]
        for other, diff in results["differences"].items():
            lines.append(
                f"* {other} − {ref}: accuracy {diff['accuracy']['mean']:+.3f} ± "
                f"{diff['accuracy']['std']:.3f}, macro-F1 {diff['macro_f1']['mean']:+.3f} ± "
                f"{diff['macro_f1']['std']:.3f}"
            )
    return "\n".join(lines) + "\n"


def write_results(
    results: dict,
    data: LabelledData,
    folds: Sequence[tuple[Sequence[int], Sequence[int]]],
    out_dir: str | os.PathLike,
    overwrite: bool = False,
) -> Path:
    """``results.md``, ``results.json`` and ``data.jsonl`` (every example with its label
    name, group and test fold, so the folds can be checked and reused)."""
    fold_of = {i: f for f, (_, te) in enumerate(folds, 1) for i in te}
    out = Path(out_dir)
    with atomic_output_dir(out, overwrite, error=ClassificationError) as tmp:
        (tmp / "results.json").write_text(
            json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (tmp / "results.md").write_text(results_markdown(results), encoding="utf-8")
        with open(tmp / "data.jsonl", "w", encoding="utf-8") as f:
            for i, (text, y, g) in enumerate(zip(data.texts, data.labels, data.groups)):
                rec = {"text": text, "label": data.names[y], "group": g, "fold": fold_of[i]}
                if data.packages is not None:
                    rec["packages"] = data.packages[i]
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    log.info("wrote %s", out)
    return out
