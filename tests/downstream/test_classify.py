"""Classification fine-tuning: the weighted loss by hand, folds by package, the CLI end to end."""

from __future__ import annotations

import gzip
import json
import math
import random
from collections import Counter
from pathlib import Path

import pytest

from megatron_lang.data.ddtp import APT_LISTS_DIR
from megatron_lang.downstream.classify import (
    ClassificationError,
    LabelledData,
    check_folds,
    class_weights,
    ddtp_section_data,
    make_folds,
    read_labelled_jsonl,
    results_markdown,
)
from tools.analysis import classify as cli

pytestmark = pytest.mark.unit


# ----------------------------------------------------------------------------- the loss


def test_weighted_loss_equals_the_hand_computed_value(tmp_path):
    import torch
    from transformers import TrainingArguments
    from transformers.modeling_outputs import SequenceClassifierOutput

    from megatron_lang.downstream.classify import WeightedTrainer

    rows = [[2.0, 0.5, -1.0], [0.1, 0.2, 0.3], [-0.5, 1.5, 0.0], [1.0, -2.0, 0.5], [0.0, 0.0, 3.0]]
    labels = [0, 0, 1, 2, 0]  # class 0 three times, 1 and 2 once

    # sklearn's "balanced": n_samples / (n_classes * count_c) = 5 / (3 * [3, 1, 1])
    w = class_weights(labels, 3)
    assert w == pytest.approx([5 / 9, 5 / 3, 5 / 3])

    # by hand: explicit log-softmax, sum_i w[y_i] * -log p(y_i) / sum_i w[y_i]
    num = den = 0.0
    for z, y in zip(rows, labels):
        log_p = z[y] - math.log(sum(math.exp(v) for v in z))
        num += w[y] * -log_p
        den += w[y]
    by_hand = num / den
    unweighted = sum(
        -(z[y] - math.log(sum(math.exp(v) for v in z))) for z, y in zip(rows, labels)
    ) / len(labels)
    assert abs(by_hand - unweighted) > 0.1  # the weights matter on this example

    class Fixed(torch.nn.Module):
        """Returns the fixed logits of row input_ids[:, 0]."""

        def __init__(self):
            super().__init__()
            self.logits = torch.nn.Parameter(torch.tensor(rows))

        def forward(self, input_ids, attention_mask=None):
            return SequenceClassifierOutput(logits=self.logits[input_ids[:, 0]])

    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none")
    trainer = WeightedTrainer(model=Fixed(), args=args, class_weights=w)
    inputs = {"input_ids": torch.arange(5)[:, None], "labels": torch.tensor(labels)}
    loss = trainer.compute_loss(trainer.model, inputs)
    assert loss.item() == pytest.approx(by_hand, rel=1e-6)
    loss, outputs = trainer.compute_loss(trainer.model, inputs, return_outputs=True)
    assert outputs.logits.shape == (5, 3) and loss.item() == pytest.approx(by_hand, rel=1e-6)


def test_class_weights_need_every_class():
    with pytest.raises(ClassificationError, match=r"class\(es\) \[2\] missing"):
        class_weights([0, 1, 1], 3)


# ----------------------------------------------------------------------------- folds


def check_package_folds(data: LabelledData, folds) -> None:
    """No package on both sides of a fold; every class in every training fold."""
    assert data.packages is not None
    for tr, te in folds:
        train_pkgs = {p for i in tr for p in data.packages[i]}
        test_pkgs = {p for i in te for p in data.packages[i]}
        assert not train_pkgs & test_pkgs
        assert set(data.labels[i] for i in tr) == set(range(len(data.names)))
    assert sorted(i for _, te in folds for i in te) == list(range(len(data.labels)))


def synthetic_data(n_groups: int = 40, per_group: int = 3, rare: int | None = None):
    """Groups of 1..per_group texts; class 2 has ``rare`` groups when given."""
    rng = random.Random(1)
    texts, labels, groups, packages = [], [], [], []
    for g in range(n_groups):
        y = g % 3 if rare is None else (2 if g < rare else g % 2)
        for j in range(rng.randint(1, per_group)):
            texts.append(f"tekst {g} {j}")
            labels.append(y)
            groups.append(f"pkg{g}")
            packages.append([f"pkg{g}", f"pkg{g}-data"] if j else [f"pkg{g}"])
    return LabelledData(texts, labels, ["a", "b", "c"], groups, "synthetic", packages)


def test_folds_disjoint_by_group_and_every_class_trained():
    data = synthetic_data()
    folds = make_folds(data, 4, seed=3)
    check_package_folds(data, folds)
    assert folds == make_folds(data, 4, seed=3)  # fixed by the seed
    assert folds != make_folds(data, 4, seed=4)


def test_folds_refused_when_a_class_is_missing_from_a_training_fold():
    data = synthetic_data(rare=1)  # class c: one package, so one training fold lacks it
    with pytest.raises(ClassificationError, match=r"fold \d: class\(es\) c missing from the train"):
        make_folds(data, 3)
    data = synthetic_data()
    folds = make_folds(data, 3)
    tr, te = folds[0]
    big = Counter(data.groups[i] for i in tr).most_common(1)[0]
    assert big[1] > 1
    moved = next(i for i in tr if data.groups[i] == big[0])  # its group is now split in two
    broken = [([i for i in tr if i != moved], sorted([*te, moved]))]
    for tr2, te2 in folds[1:]:  # tested in fold 1 now, so trained on where it was tested
        if moved in te2:
            tr2, te2 = sorted([*tr2, moved]), [i for i in te2 if i != moved]
        broken.append((tr2, te2))
    with pytest.raises(ClassificationError, match=r"fold 1: 1 group\(s\) on both sides"):
        check_folds(data, broken)
    with pytest.raises(ClassificationError, match="exactly once"):
        check_folds(data, [(folds[0][0], folds[0][1][1:]), *folds[1:]])
    with pytest.raises(ClassificationError, match="at least 2"):
        make_folds(data, 1)


def test_real_ddtp_section_folds():
    from megatron_lang.data.ddtp import load_ddtp

    if not list(APT_LISTS_DIR.glob("*_i18n_Translation-da*")):
        pytest.skip("no Translation-da in /var/lib/apt/lists (apt-get update -o "
                    "Acquire::Languages=da,en)")  # fmt: skip
    entries = load_ddtp()
    data = ddtp_section_data(entries, n_sections=8)  # every eval package of the 8 sections
    assert len(data.names) == 8 and len(data.labels) > 1000
    eval_pkgs = {p for ps in data.packages for p in ps}
    from megatron_lang.data.ddtp import assign_splits

    splits = assign_splits(entries)
    assert all(splits[e.md5] == "eval" for e in entries if eval_pkgs & set(e.packages))
    folds = make_folds(data, 5, seed=0)
    check_package_folds(data, folds)
    small = ddtp_section_data(entries, limit=480, seed=0)
    assert len(small.labels) == 480 and small.texts == ddtp_section_data(entries, limit=480).texts
    check_package_folds(small, make_folds(small, 3, seed=0))


# ----------------------------------------------------------------------------- JSONL


def test_read_labelled_jsonl_labels_and_bad_lines(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"text": "en", "label": 10},
                {"text": "to", "label": 2, "group": "g1"},
                {"text": "tre", "label": 10, "group": "g1"},
            ]
        )
        + "\n\n",
        encoding="utf-8",
    )
    data = read_labelled_jsonl(good)
    assert data.names == ["2", "10"] and data.labels == [1, 0, 1]  # integers sorted as numbers
    assert data.groups == ["line1", "g1", "g1"]
    strings = tmp_path / "strings.jsonl"
    strings.write_text('{"text": "a", "label": "pos"}\n{"text": "b", "label": "neg"}\n')
    assert read_labelled_jsonl(strings).names == ["neg", "pos"]
    cases = {
        '{"text": "a", "label": 1}\nnot json\n': ":2: not JSON",
        "[1, 2]\n": ":1: not a JSON object",
        '{"text": "", "label": 1}\n': ":1: 'text' must be a non-empty string",
        '{"text": "a", "label": true}\n': ":1: 'label' must be a string or an integer",
        '{"text": "a", "label": 1.5}\n': ":1: 'label' must be a string or an integer",
        '{"text": "a"}\n': ":1: 'label' must be a string or an integer",
        '{"text": "a", "label": "x"}\n\n{"text": "b", "label": 3}\n': ":3: label 3 is a int",
        '{"text": "a", "label": "x"}\n': "fewer than 2 classes",
    }
    for i, (text, message) in enumerate(cases.items()):
        bad = tmp_path / f"bad{i}.jsonl"
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(ClassificationError) as e:
            read_labelled_jsonl(bad)
        assert message in str(e.value) and str(bad) in str(e.value), (text, str(e.value))


# ----------------------------------------------------------------------------- end to end

PREFIX = "deb.example.org_debian_dists_test_main_"
WORDS = {"games": "spil sjov bane", "libs": "bibliotek funktioner kode", "doc": "håndbog tekst"}


@pytest.fixture(scope="module")
def tiny_models(smollm2_tokenizer_dir, tmp_path_factory) -> dict[str, Path]:
    """Two tiny random Llamas with SmolLM2's tokenizer (a 'base' and a 'cpt')."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(smollm2_tokenizer_dir)
    out = {}
    for seed, label in enumerate(("base", "cpt")):
        torch.manual_seed(seed)
        cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32,
                          num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                          max_position_embeddings=64, tie_word_embeddings=True)  # fmt: skip
        d = tmp_path_factory.mktemp(label)
        LlamaForCausalLM(cfg).save_pretrained(d)
        tok.save_pretrained(d)
        out[label] = d
    return out


def write_apt_lists(folder: Path, n: int = 45) -> Path:
    """Synthetic apt lists: n packages in 3 sections, Danish and English descriptions."""
    folder.mkdir()
    da, en, pk = [], [], []
    for i in range(n):
        sec = list(WORDS)[i % 3]
        md5 = f"{i:032x}"
        da.append(f"Package: p{i}\nDescription-md5: {md5}\nDescription-da: Pakke {i} om "
                  f"{WORDS[sec]}\n Den gør {WORDS[sec]} for dig.\n")  # fmt: skip
        en.append(f"Package: p{i}\nDescription-md5: {md5}\nDescription-en: package {i}\n x\n")
        pk.append(f"Package: p{i}\nDescription-md5: {md5}\nSection: {sec}\n")
    (folder / f"{PREFIX}i18n_Translation-da").write_text("\n".join(da), encoding="utf-8")
    (folder / f"{PREFIX}i18n_Translation-en").write_text("\n".join(en), encoding="utf-8")
    with gzip.open(folder / f"{PREFIX}binary-amd64_Packages.gz", "wt") as f:
        f.write("\n".join(pk))
    return folder


def check_results(out: Path, models: list[str], n: int, k: int) -> dict:
    results = json.loads((out / "results.json").read_text())
    assert list(results["models"]) == models and len(results["folds"]) == k
    for m in results["models"].values():
        assert len(m["folds"]) == k
        assert sum(f["test_examples"] for f in m["folds"]) == n
        for f in m["folds"]:
            assert 0 <= f["accuracy"] <= 1 and 0 <= f["macro_f1"] <= 1
            assert len(f["predictions"]) == f["test_examples"] and f["steps"] > 0
            assert math.isfinite(f["train_loss"])
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert len(rows) == n and Counter(r["fold"] for r in rows) == Counter(
        {i + 1: f["test"] for i, f in enumerate(results["folds"])}
    )
    md = (out / "results.md").read_text()
    assert md == results_markdown(results)
    for label in models:
        assert f"| {label} |" in md
    assert "majority class" in md and f"{models[1]} − {models[0]}" in md
    return results


def test_cli_lora_on_the_ddtp_section_task(tiny_models, tmp_path, capsys):
    lists = write_apt_lists(tmp_path / "lists")
    out = tmp_path / "out"
    argv = ["--ddtp", "--lists-dir", str(lists), "--ddtp-split", "all", "--sections", "3", "--limit", "36",
            "--folds", "3", "--seed", "1", "--lora", "--epochs", "1", "--max-length", "32",
            "--models", f"base={tiny_models['base']}", f"cpt={tiny_models['cpt']}",
            "--out-dir", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert "[base] fold 1/3: fine-tuning on" in printed and "[cpt] fold 3/3: accuracy" in printed
    results = check_results(out, ["base", "cpt"], 36, 3)
    fold = results["models"]["base"]["folds"][0]
    assert fold["trainable_parameters"] < fold["parameters"] / 10  # adapters + head only
    assert results["settings"]["lora"] and results["settings"]["learning_rate"] == 2e-4
    assert results["data"]["classes"] == sorted(WORDS)
    rows = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert all(r["packages"] == [r["group"]] for r in rows)
    assert cli.main(argv) == 2  # the results folder exists
    assert "already exists" in capsys.readouterr().err


def test_cli_full_fine_tuning_on_a_jsonl(tiny_models, tmp_path, capsys):
    data = tmp_path / "data.jsonl"
    with open(data, "w", encoding="utf-8") as f:
        for i in range(24):
            sec = list(WORDS)[i % 3]
            f.write(json.dumps({"text": f"Tekst {i}: {WORDS[sec]}", "label": sec}) + "\n")
    out = tmp_path / "out"
    argv = ["--data", str(data), "--folds", "2", "--lr", "1e-3", "--batch-size", "4",
            "--max-length", "16", "--threads", "1", "--models", f"base={tiny_models['base']}",
            f"cpt={tiny_models['cpt']}", "--out-dir", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    results = check_results(out, ["base", "cpt"], 24, 2)
    fold = results["models"]["cpt"]["folds"][0]
    assert fold["trainable_parameters"] == fold["parameters"]  # full fine-tuning
    assert fold["steps"] == 3 and fold["class_weights"] == pytest.approx([1.0, 1.0, 1.0])
    # errors: a model that is not an HF directory, a class too rare for the folds
    bad = cli.main(["--data", str(data), "--models", f"x={tmp_path}", "--out-dir", str(out)])
    assert bad == 2 and "not an HF directory" in capsys.readouterr().err
    rare = tmp_path / "rare.jsonl"
    rare.write_text(data.read_text() + '{"text": "sjælden", "label": "zzz"}\n')
    bad = cli.main(["--data", str(rare), "--folds", "2", "--models",
                    f"base={tiny_models['base']}", "--out-dir", str(tmp_path / "o2")])  # fmt: skip
    assert bad == 2 and "zzz missing from the training fold" in capsys.readouterr().err
