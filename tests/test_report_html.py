"""The report page (RUN/report/index.html): built from the CSV's numbers, self-contained, offline,
and rendered by a real browser (headless Chromium; skipped where no Chromium is installed)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pandas as pd
import pytest

from fusionbench.data.datasets import load_dataset
from fusionbench.data.io import atomic_write_bytes
from fusionbench.methods import _REGISTRY, FusionMethod, register_method
from fusionbench.report import build_report
from fusionbench.report.html import table_context
from fusionbench.report.panels import checkerboard, to_png
from fusionbench.report.tables import build_table, read_table, to_markdown, write_table
from fusionbench.results import wilcoxon_vs_best
from fusionbench.runner import RunConfig, run

SPEC = "phantom:n=4,size=64"
FAST_METRICS = ["MI", "SF", "SSIM", "EN", "PSNR"]
FAILURE = "kaboom <script>alert('x')</script> & more"


class _Page(HTMLParser):
    """Tables (cells with their data-* attributes), image and link targets, and the body's attributes."""

    def __init__(self):
        super().__init__()
        self.body: dict[str, str] = {}
        self.images: list[str] = []
        self.links: list[str] = []
        self.tables: dict[str, list[dict]] = {}
        self.cells: dict[tuple[str, str, str], dict] = {}
        self._table = self._row = None
        self._cell: dict | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "body":
            self.body = a
        elif tag == "img":
            self.images.append(a.get("src", ""))
        elif tag in ("a", "link", "script", "iframe", "source", "video", "audio", "object", "embed"):
            for key in ("href", "src", "data"):
                if a.get(key):
                    self.links.append(a[key])
        elif tag == "table" and "id" in a:
            self._table = a["id"]
            self.tables[self._table] = []
        elif tag == "tr" and self._table and "data-method" in a:
            self._row = a["data-method"]
        elif tag == "td" and self._table and self._row and "data-col" in a:
            self._cell = {"value": a.get("data-value", ""), "title": a.get("title", ""),
                          "class": a.get("class", ""), "text": ""}
            self.cells[(self._table, self._row, a["data-col"])] = self._cell
            self.tables[self._table].append({"method": self._row, "col": a["data-col"]})

    def handle_endtag(self, tag):
        if tag == "table":
            self._table = None
        elif tag == "tr":
            self._row = None
        elif tag == "td":
            self._cell = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    """A tiny run (two classic methods, identity registration, one method failing everywhere) and
    its report; a private phantom cache."""
    cache = tmp_path_factory.mktemp("cache")
    old = os.environ.get("FUSIONBENCH_CACHE")
    os.environ["FUSIONBENCH_CACHE"] = str(cache)
    load_dataset(SPEC, "test", jobs=1)

    @register_method("html-explodes", kind="traditional")
    class Explodes(FusionMethod):
        def fuse(self, pat, mri):
            raise RuntimeError(FAILURE)

    out = tmp_path_factory.mktemp("runs") / "tiny"
    try:
        run(RunConfig(methods=["average", "maximum", "html-explodes"], out=out, dataset=SPEC,
                      registration="identity", jobs=1, metrics=FAST_METRICS))
        written = build_report(out)
    finally:
        _REGISTRY.pop("html-explodes", None)
    yield out, written
    if old is None:
        os.environ.pop("FUSIONBENCH_CACHE", None)
    else:
        os.environ["FUSIONBENCH_CACHE"] = old


def test_build_report_writes_the_page(report_run):
    out, written = report_run
    page = out / "report" / "index.html"
    assert written["html"][0] == page and page.stat().st_size > 0
    assert all(p.is_file() for p in written["html"])
    html = page.read_text(encoding="utf-8")
    for section in ("record", "tables", "gallery", "registration", "runtime", "failures", "figures"):
        assert f'id="{section}"' in html, section
    assert "phantom:n=4,size=64" in html and "identity" in html  # the run's record
    assert "fusionbench" in html and "numpy" in html  # versions


def test_page_values_equal_the_csv(report_run):
    out, _ = report_run
    page = _parse(out / "report" / "index.html")
    csv = pd.read_csv(out / "report" / "fusion.csv", index_col="method")
    md = (out / "report" / "fusion.md").read_text()
    checked = 0
    for method in ("average", "maximum"):
        for metric in FAST_METRICS:
            cell = page.cells[("fusion", method, metric)]
            assert float(cell["value"]) == csv.loc[method, f"{metric}_mean"], (method, metric)
            # The shown text is the Markdown table's rounding of the same mean and std.
            shown = re.sub(r"\s+", " ", cell["text"]).strip().rstrip("*").strip()
            assert shown in md, shown
            checked += 1
        assert float(page.cells[("fusion", method, "avg_rank")]["value"]) == csv.loc[method, "avg_rank"]
    assert checked == 2 * len(FAST_METRICS)
    reg = pd.read_csv(out / "report" / "registration.csv", index_col="method")
    cell = page.cells[("registration", "identity", "EPE_mean")]
    assert float(cell["value"]) == reg.loc["identity", "EPE_mean_mean"]
    runtime = pd.read_csv(out / "report" / "runtime.csv", index_col="method")
    assert float(page.cells[("runtime", "average", "scoring")]["value"]) == runtime.loc["average", "scoring_mean"]


def test_every_referenced_file_exists_and_nothing_is_external(report_run):
    out, _ = report_run
    page_path = out / "report" / "index.html"
    html = page_path.read_text(encoding="utf-8")
    page = _parse(page_path)
    assert len(page.images) >= 2 + 2 * 4  # sources and two fused images per case, at least
    for target in page.images + page.links:
        if target.startswith("#"):
            continue
        parsed = urlparse(target)
        assert not parsed.scheme and not parsed.netloc, target  # relative, on disk
        path = (page_path.parent / unquote(parsed.path)).resolve()
        assert path.is_file(), target
        assert page_path.parent.resolve() in path.parents, target  # inside report/
    assert not re.search(r"https?:", html, re.IGNORECASE)
    assert not re.search(r"""(src|href)\s*=\s*["']//""", html)
    assert "@import" not in html and "url(" not in html


def test_failures_are_listed_with_their_message_escaped(report_run):
    out, _ = report_run
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    failures = html[html.index('id="failures"'):]
    assert "html-explodes" in failures
    assert "kaboom &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; more" in failures
    assert "<script>alert" not in html


def test_gallery_pages_every_case_with_every_method(report_run):
    out, _ = report_run
    html = (out / "report" / "index.html").read_text(encoding="utf-8")
    gallery = html[html.index('<section id="gallery"'):html.index('<section id="registration"')]
    cases = [c.id for c in load_dataset(SPEC, "test")]
    assert gallery.count('class="page"') == len(cases)
    for case in cases:
        assert f'data-case="{case}"' in gallery
    for title in ("PAT", "MRI", "average", "maximum"):
        assert f"<figcaption>{title}</figcaption>" in gallery
    assert gallery.count('class="zoom"') == len(cases) * 4
    # The first page is shown, the others hidden until paged to.
    assert gallery.count(" hidden>") == len(cases) - 1


def test_column_figures_fit_a_paper_column(report_run):
    from PIL import Image

    out, written = report_run
    figures = [p for p in written["figures"] if p.parent.name == "figures"]
    assert {p.name.split("_")[0] for p in figures} == {"fusion", "registration"}
    for p in figures:
        with Image.open(p) as im:
            assert 0.9 * 3.5 * 300 <= im.width <= 3.5 * 300 + 1, p.name
            assert im.info.get("dpi", (0,))[0] == pytest.approx(300, abs=1)
    assert (out / "report" / "fused_grid.png").is_file()


def test_task_tables_and_overlay_appear_when_the_run_has_them(report_run, tmp_path):
    src, _ = report_run
    out = tmp_path / "with_tasks"
    shutil.copytree(src, out, ignore=shutil.ignore_patterns("report"))
    seg = out / "segment"
    rows = [{"method": m, "case": f"c{i}", "group": "segmentation", "metric": k, "value": v + i, "seconds": 0.0}
            for m, base in (("PAT", 60.0), ("MRI", 80.0), ("average", 85.0))
            for k, v in (("DSC", base), ("Hausdorff", 100 - base)) for i in range(3)]
    table = build_table(pd.DataFrame(rows), "segmentation", "Body-contour segmentation", ["PAT", "MRI", "average"])
    write_table(table, seg, "contour")
    atomic_write_bytes(seg / "overlay.png", to_png(checkerboard(np.zeros((32, 32)), np.ones((32, 32)))))
    build_report(out)
    page = _parse(out / "report" / "index.html")
    assert "task-contour" in page.tables
    assert float(page.cells[("task-contour", "average", "DSC")]["value"]) == pytest.approx(86.0)
    assert "best" in page.cells[("task-contour", "average", "DSC")]["class"]
    assert "img/segment_overlay.png" in page.images
    back = read_table(seg, "contour")
    assert back.title == "Body-contour segmentation" and back.higher == {"DSC": True, "Hausdorff": False}
    assert to_markdown(back) == to_markdown(table)


def test_significance_marks_follow_the_wilcoxon_tests():
    rng = np.random.default_rng(1)
    base = rng.random(12)
    wobble = np.where(np.arange(12) % 2, 0.01, -0.011)  # up and down by about as much: a tie
    rows = [{"method": m, "case": f"c{i}", "group": "fusion", "metric": "MI", "value": v, "seconds": 0.0}
            for m, values in (("best", base + 1.0), ("worse", base), ("close", base + 1.0 + wobble))
            for i, v in enumerate(values)]
    df = pd.DataFrame(rows)
    sig = wilcoxon_vs_best(df, "fusion")
    ctx = table_context(build_table(df, "fusion", "t"), "fusion", sig=sig)
    cells = {r["method"]: r["cells"][0] for r in ctx["rows"]}
    assert [r["method"] for r in ctx["rows"]][0] == "best"  # ranked
    assert cells["best"]["best"] and cells["best"]["mark"] == ""
    assert cells["worse"]["mark"] == "*" and "Holm p" in cells["worse"]["tip"]
    assert cells["close"]["mark"] == "" and "Holm p" in cells["close"]["tip"]  # not significant
    assert ctx["has_marks"]


def test_cli_report_rebuilds_the_page(report_run):
    from typer.testing import CliRunner

    from fusionbench.cli import app

    out, _ = report_run
    page = out / "report" / "index.html"
    page.unlink()
    result = CliRunner().invoke(app, ["report", str(out)])
    assert result.exit_code == 0, result.output
    assert page.is_file() and "index.html" in result.output


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.mark.skipif(_chromium() is None, reason="no Chromium installed (CI installs Debian's chromium)")
@pytest.mark.slow
def test_page_renders_in_headless_chromium(report_run, tmp_path):
    """The page loads in a real browser without script or image errors, runs its scripts, draws
    images and shows the tables."""
    from PIL import Image

    out, _ = report_run
    url = (out / "report" / "index.html").resolve().as_uri()
    base = [_chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
            "--disable-extensions", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]
    dom = subprocess.run(base + ["--enable-logging=stderr", "--v=0", "--dump-dom", url],
                         capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = re.search(r"<body([^>]*)>", dom.stdout)
    assert body, dom.stdout[:2000]
    attrs = dict(re.findall(r'([\w-]+)="([^"]*)"', body.group(1)))
    assert attrs.get("data-ready") == "yes", "the page's script did not run to its end"
    assert attrs.get("data-errors") == "0", re.findall(r"<li>(.*?)</li>", dom.stdout)
    assert int(attrs.get("data-images", "0")) >= 4, "no image was drawn"
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    assert not [line for line in console if re.search(r"Uncaught|Error|error|Failed", line)], console
    for table in ("fusion", "registration", "runtime"):
        assert f'id="{table}"' in dom.stdout
    assert "page scripts ran" in dom.stdout

    # Clicking a column header sorts (best first, then reversed); "next" shows the second case.
    copy = tmp_path / "report"
    shutil.copytree(out / "report", copy)
    probe = """<script>(function () {
      var t = document.getElementById("fusion"), th = t.querySelector('th[data-col="MI"]');
      function order() { return Array.prototype.map.call(t.tBodies[0].rows,
                                 function (r) { return r.getAttribute("data-method"); }).join(","); }
      th.click(); var first = order(); th.click(); var second = order();
      document.querySelector("#gallery .next").click();
      var shown = Array.prototype.filter.call(document.querySelectorAll("#gallery .page"),
                                              function (p) { return !p.hidden; });
      document.body.setAttribute("data-probe", first + "|" + second + "|" + shown.length + "|"
                                 + shown[0].getAttribute("data-case"));
    })();</script></body>"""
    html = (copy / "index.html").read_text(encoding="utf-8")
    (copy / "index.html").write_text(html.replace("</body>", probe), encoding="utf-8")
    res = subprocess.run(base + ["--dump-dom", (copy / "index.html").as_uri()], capture_output=True, text=True,
                         timeout=180)
    found = re.search(r'data-probe="([^"]*)"', res.stdout)
    assert found, res.stdout[-2000:]
    first, second, n_shown, case = found.group(1).split("|")
    mi = pd.read_csv(out / "report" / "fusion.csv", index_col="method")["MI_mean"]
    assert first.split(",") == list(mi.sort_values(ascending=False).index)  # MI: higher is better first
    assert second.split(",") == list(mi.sort_values(ascending=True).index)
    cases = [c.id for c in load_dataset(SPEC, "test")]
    assert n_shown == "1" and case == cases[1]

    shot = tmp_path / "page.png"
    res = subprocess.run(base + ["--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape == (1600, 1280)
    assert pixels.std() > 10  # text, tables and images, not a blank page
