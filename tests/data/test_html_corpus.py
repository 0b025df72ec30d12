"""HTML -> text for the GIMP-manual corpus builder."""

from __future__ import annotations

import json

import pytest

from megatron_lang.data.html_corpus import build_html_corpus, html_to_text

pytestmark = pytest.mark.unit

PAGE = """<?xml version="1.0" encoding="UTF-8"?>
<html><head><title>Kapitel 5.  Lag</title><style>p {color: red}</style></head>
<body><div class="navheader"><a href="x.html">Forrige</a></div>
<h1>Lag &amp; kanaler</h1>
<p>Et billede i   GIMP kan
bestå af flere <em>lag</em>.</p><script>var x = 1;</script>
<pre>kode  linje 1
kode  linje 2</pre>
<ul><li>Første</li><li>Anden</li></ul>
<div class="navfooter">Næste</div></body></html>"""


def test_html_to_text():
    text, title = html_to_text(PAGE)
    assert title == "Kapitel 5. Lag"
    assert text.split("\n") == [
        "Lag & kanaler",
        "Et billede i GIMP kan bestå af flere lag.",
        "kode linje 1",
        "kode linje 2",
        "Første",
        "Anden",
    ]


def test_build_corpus_from_folders(tmp_path):
    for lang in ("da", "nn"):
        (tmp_path / "help" / lang / "sub").mkdir(parents=True)
        (tmp_path / "help" / lang / "a.html").write_text(PAGE)
        (tmp_path / "help" / lang / "sub" / "b.html").write_text("<p>Hei verda.</p>")
        (tmp_path / "help" / lang / "empty.html").write_text("<p> </p>")
    stats = build_html_corpus(tmp_path / "c.jsonl", ["da", "nn"], tmp_path / "help")
    records = [json.loads(line) for line in (tmp_path / "c.jsonl").read_text().splitlines()]
    assert stats.documents == len(records) == 4
    assert [r["source"] for r in records] == [
        "da/a.html",
        "da/sub/b.html",
        "nn/a.html",
        "nn/sub/b.html",
    ]
    assert records[1] == {
        "text": "Hei verda.",
        "lang": "da",
        "source": "da/sub/b.html",
        "title": "",
    }
    with pytest.raises(FileNotFoundError, match="gimp-help-se"):
        build_html_corpus(tmp_path / "d.jsonl", ["se"], tmp_path / "help")
    assert not (tmp_path / "d.jsonl").exists()


def test_real_gimp_manual_corpus(gimp_texts):
    assert len(gimp_texts) == 75 and all(t.strip() for t in gimp_texts)
    assert not any("<" in t and "</" in t for t in gimp_texts)  # no markup left
