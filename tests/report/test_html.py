"""The --html report: built by a real ``compare`` run on mnist-cnn, it must show the same
numbers as the terminal table and the --json file, need nothing from the network, and render
in a real browser (headless Chromium) without errors, with every figure decoded."""
from __future__ import annotations

import io
import json
import re
import sys
from contextlib import redirect_stderr, redirect_stdout
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from quantwise.report.html import Document, write_html
from tests.helpers import error_line, invoke
from tests.report.browser import open_page

SMALL = ["--n-calibration", "64", "--n-evaluation", "256"]
BATCHES = (1, 8)


class _Page(HTMLParser):
    """Tables (cell text + data-value), image sources, warning texts and the embedded JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str | None]]]] = []
        self.images: list[str] = []
        self.warnings: list[str] = []
        self.links: list[str] = []
        self.scripts: list[dict[str, str | None]] = []
        self.data = ""
        self._cell: list[str] | None = None
        self._value: str | None = None
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href") and v]
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell, self._value, self._in = [], a.get("data-value"), tag
        elif tag == "img":
            self.images.append(a.get("src") or "")
        elif tag == "div" and a.get("class") == "warning":
            self._cell, self._in = [], "warning"
        elif tag == "script":
            self.scripts.append(a)
            self._in = "script"

    def handle_data(self, data: str) -> None:
        if self._in == "script":
            self.data += data
        elif self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append(("".join(self._cell), self._value))
            self._cell, self._in = None, None
        elif tag == "div" and self._in == "warning":
            self.warnings.append("".join(self._cell or []))
            self._cell, self._in = None, None
        elif tag == "script":
            self._in = None


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """One real compare run (mnist-cnn, two recipes, no compilation) writing --json and --html."""
    from quantwise.cli.main import run as cli

    folder = tmp_path_factory.mktemp("html-report")
    json_path, html_path = folder / "report.json", folder / "nested" / "report.html"
    args = ["quantwise", "-q", "compare", "mnist-cnn", "--recipes", "dynamic,static-fx", "--batches", ",".join(map(str, BATCHES)),
            "--no-compile", "--no-peers", "--repeats", "5", "--json", str(json_path), "--html", str(html_path), *SMALL]
    out, err = io.StringIO(), io.StringIO()
    old, sys.argv = sys.argv, args
    try:
        with redirect_stdout(out), redirect_stderr(err):
            cli()
    except SystemExit as exit_:
        assert not exit_.code, err.getvalue()
    finally:
        sys.argv = old
    page = _Page()
    page.feed(html_path.read_text(encoding="utf-8"))
    return {"json": json.loads(json_path.read_text()), "html_path": html_path, "page": page, "out": out.getvalue(), "folder": folder}


def _results(page: _Page) -> tuple[list[str], list[list[tuple[str, str | None]]]]:
    table = next(t for t in page.tables if [text for text, _ in t[0][:2]] == ["recipe", "runtime"])
    return [text for text, _ in table[0]], table[1:]


def test_table_shows_the_terminal_cells_and_the_json_numbers(compared):
    report, page = compared["json"], compared["page"]
    header, rows = _results(page)
    assert [cells[0][0] for cells in rows] == [r["name"] for r in report["rows"]] == ["float", "bf16 autocast", "dynamic", "static-fx"]
    # the terminal table, cell by cell (rich draws the body rows between │ characters)
    terminal = [[c.strip() for c in line.split("│")[1:-1]] for line in compared["out"].splitlines() if line.startswith("│")]
    assert terminal == [[text for text, _ in cells] for cells in rows]
    # the exact numbers behind each cell are the JSON's
    col = {name: i for i, name in enumerate(header)}
    for cells, row in zip(rows, report["rows"]):
        value = lambda column: float(cells[col[column]][1])  # noqa: E731
        assert value("size MB") == row["size_mb"] and value("x float") == row["size_ratio"]
        for b in BATCHES:
            assert value(f"b{b} med ms") == row["latency"][str(b)]["median_ms"]
            assert value(f"b{b} p90") == row["latency"][str(b)]["p90_ms"]
            assert value(f"b{b} speed-up") == row["speedup"][str(b)]
        assert value(report["primary"]) == row["metrics"][report["primary"]]
        if row["quantize_s"] is not None:
            assert value("quantize s") == row["quantize_s"]
    # the page embeds the whole report: the same data as the --json file
    assert json.loads(page.data) == report


def test_warnings_best_rows_and_setting_are_in_the_page(compared):
    report, page, text = compared["json"], compared["page"], compared["html_path"].read_text(encoding="utf-8")
    expected = [f"{r['name']}: {w['text']}" for r in report["rows"] for w in r["warnings"]]
    assert page.warnings == expected or (not expected and "None." in text)
    for b, best in report["best"].items():
        assert f"Best at batch {b}: {best}" in text
    for fact in (report["model"], report["evaluation"], report["calibration"], f"torch {report['versions']['torch']}", f"threads</th><td>{report['threads']}"):
        assert fact in text
    assert len(page.images) == len(BATCHES)  # one Pareto figure per batch size


def test_page_needs_nothing_from_the_network(compared):
    page = compared["page"]
    assert page.links and all(link.startswith("data:image/png;base64,") for link in page.links), page.links
    assert [s.get("type") for s in page.scripts] == ["application/json"]  # data only, nothing executes
    assert "<link" not in compared["html_path"].read_text(encoding="utf-8")
    for src in page.images:
        image = Image.open(io.BytesIO(__import__("base64").b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.width > 600 and image.height > 300
    # written atomically: no temporary file left beside it
    assert [p.name for p in compared["html_path"].parent.iterdir()] == ["report.html"]


def test_report_renders_in_headless_chromium(compared):
    page = open_page(compared["html_path"], width=1280, height=2000)
    assert page.console == [] and page.errors == [], (page.console, page.errors)
    assert len(page.images) == len(BATCHES)
    for image in page.images:
        assert image["ok"] and image["width"] > 600 and image["height"] > 300, image
    shot = Image.open(io.BytesIO(page.screenshot))
    assert shot.size == (1280, 2000)
    pixels = np.asarray(shot.convert("RGB"), dtype=np.int64)
    assert pixels.std() > 20  # text, tables and a figure, not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200  # the figure's colour map
    assert (pixels.sum(axis=2) < 600).mean() > 0.02  # text, borders and plot: a blank page has none
    assert page.height > 2000  # the second figure lies below the fold
    (compared["folder"] / "screenshot.png").write_bytes(page.screenshot)  # kept for a human look


def test_browser_check_catches_a_broken_page(tmp_path):
    # the check above must be able to fail: a page with a console error, an exception, a
    # missing file and an undecodable image is reported on every count
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>x</p><img src="data:image/png;base64,AAAA"><img src="missing.png">'
                   '<script>console.error("deliberate");</script><script>undefinedFunction();</script></body></html>')
    page = open_page(bad, width=400, height=300)
    assert page.console == ["error: deliberate"]
    assert any("undefinedFunction" in e for e in page.errors)
    assert any("missing.png" in e for e in page.errors)
    assert [i["ok"] for i in page.images] == [False, False]


def test_document_escapes_text_and_refuses_non_png(tmp_path):
    doc = Document("<script>alert(1)</script> & more", data={"note": "</script><b>"})
    section = doc.section("a <b>section</b>")
    section.paragraph("1 < 2")
    with pytest.raises(ValueError, match="PNG"):
        section.figure(b"GIF89a...", "not a png")
    html = write_html(doc, tmp_path / "r.html").read_text(encoding="utf-8")
    assert "<script>alert" not in html and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in html
    assert "1 &lt; 2" in html and "</script><b>" not in html
    embedded = re.search(r'<script type="application/json" id="quantwise-data">(.*?)</script>', html, re.S)
    assert json.loads(embedded.group(1)) == {"note": "</script><b>"}


def test_failed_write_leaves_nothing_and_keeps_the_old_report(tmp_path, monkeypatch):
    path = tmp_path / "r.html"
    path.write_text("old report")

    def broken_render(self):
        raise RuntimeError("figure failed")

    monkeypatch.setattr(Document, "render", broken_render)
    with pytest.raises(RuntimeError):
        write_html(Document("t"), path)
    monkeypatch.undo()

    def broken_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr("quantwise.files.os.replace", broken_replace)
    with pytest.raises(OSError):
        write_html(Document("t"), path)
    assert path.read_text() == "old report" and [p.name for p in tmp_path.iterdir()] == ["r.html"]


@pytest.mark.parametrize("target, words", [("{tmp}", "is a folder"), ("{tmp}/file.txt/report.html", "not a writable folder")])
def test_unusable_html_path_is_refused_before_any_work(capsys, tmp_path, target, words):
    (tmp_path / "file.txt").write_text("x")
    code, _, err = invoke(capsys, "compare", "mnist-cnn", "--html", target.format(tmp=tmp_path), *SMALL)
    assert code == 2 and words in error_line(err) and "--html" in error_line(err)
    assert "loading" not in err  # refused before the model was loaded


# A real language-model compare, recorded on this machine (2 cores, shared: the speeds are
# only inputs here, not claims) with:
#   quantwise --threads 1 compare smollm2-135m --recipes int8-weight-only,int4-rtn --no-compile \
#     --eval-tokens 2048 --context 512 --repeats 2 --json smollm2_compare.json
# (tied_embeddings, ran and each row's activations, fields added to the report later, set by hand: SmolLM2 ties its table; activations
# from each row's "runs with ... activations" note; warnings as {kind, text})
LLM_JSON = Path(__file__).parent / "data" / "smollm2_compare.json"


def test_language_model_report_matches_its_json_and_renders(tmp_path):
    from rich.console import Console

    from quantwise.findings import Finding
    from quantwise.llm.compare import LLMCompareReport, LLMRow
    from quantwise.report.llm_html import llm_candidates, llm_compare_document
    from quantwise.report.llm_table import print_llm_compare

    data = json.loads(LLM_JSON.read_text())
    rows = [LLMRow(**{**r, "warnings": [Finding.from_dict(w) for w in r["warnings"]]}) for r in data["rows"]]
    report = LLMCompareReport(**{**data, "rows": rows})
    path = write_html(llm_compare_document(report), tmp_path / "llm.html")
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    assert json.loads(page.data) == data
    table = next(t for t in page.tables if t[0][0][0] == "method")
    header, rows = [text for text, _ in table[0]], table[1:]
    terminal = io.StringIO()
    print_llm_compare(report, Console(file=terminal, width=250))
    assert [[c.strip() for c in line.split("│")[1:-1]] for line in terminal.getvalue().splitlines() if line.startswith("│")] == [[t for t, _ in r] for r in rows]
    for cells, row in zip(rows, data["rows"]):
        for column, key in (("size MB", "size_mb"), ("perplexity", "perplexity"), ("Δ ppl %", "delta_pct"), ("decode tok/s b1", "decode_tokens_per_s")):
            assert float(cells[header.index(column)][1]) == row[key]
    points = {p.name: p for p in llm_candidates(report)}
    assert [n for n, p in points.items() if p.chosen] == [data["rows"][data["best_index"]]["method"]] == ["int8-weight-only"]
    assert points["int4-rtn"].within_budget is False  # +24.8 % perplexity, past the 2 % tolerance
    assert points["float32 eager"].latency_ms == pytest.approx(1000 / data["rows"][0]["decode_tokens_per_s"])
    assert page.warnings == ["int4-rtn: " + w["text"] for w in data["rows"][3]["warnings"]]
    browser = open_page(path, width=1280, height=1600)
    assert browser.console == [] and browser.errors == [] and [i["ok"] for i in browser.images] == [True]


def test_debug_report_carries_its_json_numbers_and_renders(capsys, tmp_path):
    json_path, html_path = tmp_path / "debug.json", tmp_path / "debug.html"
    code, out, err = invoke(capsys, "-q", "debug", "mnist-cnn", "--recipe", "static-pt2e", "--samples", "16", "--n-calibration", "64",
                            "--json", str(json_path), "--html", str(html_path))
    assert code == 0, err
    data = json.loads(json_path.read_text())
    page = _Page()
    page.feed(html_path.read_text())
    assert json.loads(page.data) == data  # the page embeds exactly the JSON numbers
    layer_rows = [r for r in page.tables[-1][1:]]
    assert [r[0][0] for r in layer_rows] == [layer["name"] for layer in data["layers"]]
    for row, layer in zip(layer_rows, data["layers"]):
        assert float(row[3][1]) == pytest.approx(layer["propagated"]["sqnr_db"])
    shown = open_page(html_path, width=1280, height=2400)
    assert shown.console == [] and shown.errors == [], (shown.console, shown.errors)
    assert len(shown.images) == 2 and all(i["ok"] and i["width"] > 600 for i in shown.images)  # SQNR figure, histograms
