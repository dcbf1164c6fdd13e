"""``touchline report``: one HTML file that opens in Debian's Chromium with the network cut
off and draws every chart, with no console error."""

from __future__ import annotations

import json
import shutil
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from factories import CLI_OWN_CONNECTION
from serve_kit import build_warehouse
from typer.testing import CliRunner

from touchline import engine, store
from touchline.cli import app
from touchline.config import Settings
from touchline.serve.figures import CHARTS, Filters
from touchline.serve.report import plotly_js, render_report

if TYPE_CHECKING:
    from playwright.sync_api import Browser

pytestmark = pytest.mark.duckdb_only(reason=CLI_OWN_CONNECTION)
WAIT_MS = 20_000


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The hand-made warehouse of serve_kit.py in a DuckDB file: its URL."""
    url = f"duckdb:///{tmp_path_factory.mktemp('report') / 'wh.duckdb'}"
    con = engine.connect(settings=Settings(database_url=url))
    build_warehouse(con)
    con.disconnect()
    return url




def test_report_opens_offline_and_draws_every_chart(warehouse: str, tmp_path: Path,
                                                    browser: Browser) -> None:
    out = tmp_path / "out" / "report.html"
    truth = tmp_path / "truth.json"  # serve_kit's channels as the simulator names them
    truth.write_text(json.dumps({"b2b": False, "channels": {
        "email": {"incremental_conversions": 1.0}, "paid_search": {
            "incremental_conversions": 3.0}}}))
    result = CliRunner().invoke(app, ["report", "--out", str(out), "--model", "last_touch",
                                      "--truth", str(truth), "--database", warehouse],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    # every chart but the calls (serve_kit imported none: said in one line)
    assert f"report: {out}" in result.output and f"{len(CHARTS) - 1} charts" in result.output
    assert "calls: not drawn: no calls table" in result.output
    html = out.read_text()
    assert plotly_js()[:2000] in html  # plotly.js inlined from the package
    ours = html.replace(plotly_js(), "")  # the page around plotly.js asks for nothing
    assert "<script src" not in ours and "<link" not in ours and "http" not in ours
    # the channel numbers under last touch (serve_kit: Paid Search 2 conversions, 300)
    assert "credited by channel (last_touch)" in html
    # the ranking against the truth: last touch (1/3 e-mail, 2/3 paid) is 1/6 from it
    assert "distance to the true incremental conversions (truth.json" in html

    context = browser.new_context(offline=True)
    requests: list[str] = []
    blocked: list[str] = []
    errors: list[str] = []

    def route(r):  # type: ignore[no-untyped-def]
        if r.request.url.startswith(("file:", "data:")):
            r.continue_()
        else:
            blocked.append(r.request.url)
            r.abort()

    context.route("**/*", route)
    page = context.new_page()
    page.on("request", lambda request: requests.append(request.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(out.as_uri())
    drawable = [name for name in CHARTS if name != "calls"]  # serve_kit imported no call
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot').length === "
                           f"{len(drawable)}", timeout=WAIT_MS)
    for name in drawable:
        assert page.locator(f"#chart-{name}.js-plotly-plot .main-svg").count() >= 1, name
    # the Sankey's seven nodes (Organic Search and Email 2 before, Email and Paid Search 1
    # before, (no touch), the conversion and the drop-off: p3's open journey) and the
    # overview's seven tiles (NPS too) are in the drawing
    assert page.locator("#chart-journey_map .sankey-node").count() == 7
    assert page.locator("#chart-overview .indicatorlayer .trace").count() == 7
    assert "Paid Search" in page.locator("#chart-channels").inner_text()
    # the retention heat map's cells: March 100 % and 50 %, April 100 %
    assert page.locator("#chart-retention .heatmaplayer").count() == 1
    assert "50%" in page.locator("#chart-retention").inner_text()
    page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
    context.close()
    assert not blocked, blocked
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert not errors, errors


def test_a_chart_without_its_input_says_what_to_run(warehouse: str, tmp_path: Path) -> None:
    copy = tmp_path / "copy.duckdb"  # the module's warehouse stays whole for the other tests
    shutil.copy(warehouse.removeprefix("duckdb:///"), copy)
    con = engine.connect(settings=Settings(database_url=f"duckdb:///{copy}"))
    con.drop_table("stages", force=True)
    con.create_table("stages", con.table("journeys").limit(0).select(
        unit="unit", unit_id="unit_id", stage_model="conversion", stage="conversion",
        stage_order="sequence", entered_at="converted_at", left_at="converted_at"))
    html, sections = render_report(con, Filters(model="linear"))
    con.disconnect()
    by_name = {s.name: s for s in sections}
    assert by_name["funnel"].error == (
        "the funnel needs two steps; stage model 'lifecycle' has 0 stage(s) with entries: "
        "run `touchline run`")
    assert by_name["funnel_channels"].error == by_name["funnel"].error  # the same steps
    assert by_name["channels"].error is None
    assert by_name["model_ranking"].error.startswith(
        "no ground-truth file, so no ranking of the models")  # no --truth: said, not made up
    assert "run `touchline run`" in html
    # the funnel, its split by channel and the ranking say why; no calls imported (said)
    assert html.count('class="chart"') == len(CHARTS) - 4


def test_docs_python_example_runs(warehouse: str, tmp_path: Path,
                                  monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "dashboard.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("TOUCHLINE_DATABASE_URL", warehouse)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "docs/dashboard.md", "exec"), {})
    # last touch: Paid Search gets p1's first and p2's purchases (100 + 200), Email p1's
    # second and p4's (50 + 30); Paid Social has spend and no conversion
    assert capsys.readouterr().out.split("\n")[1:5] == [
        "         Email          2.0     80.0",
        "   Paid Search          2.0    300.0",
        "Organic Search          0.0      0.0",
        "   Paid Social          0.0      0.0"]
    assert "Plotly.newPlot" in (tmp_path / "channels.html").read_text()


def _png(path: Path) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG file (no imaging library)."""
    import struct
    import zlib

    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", path
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    chunks, at = [], 8
    while at < len(data):
        (length,) = struct.unpack(">I", data[at:at + 4])
        kind = data[at + 4:at + 8]
        if kind == b"IDAT":
            chunks.append(data[at + 8:at + 8 + length])
        at += 12 + length
    return width, height, zlib.decompress(b"".join(chunks))


def test_png_format_writes_each_drawable_chart_for_slides(warehouse: str, tmp_path: Path) -> None:
    """``--format png``: one 1600 × 900 image per chart the report draws, rendered by the
    local Chromium; the chart with no input (no truth file: no ranking) is skipped with its
    reason, and a missing Chromium is an error that says what to install."""
    from factories import CHROMIUM

    from touchline.serve.report import PNG_HEIGHT, PNG_SCALE, PNG_WIDTH

    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium (make browser)")
    out = tmp_path / "charts"
    result = CliRunner().invoke(app, ["report", "--format", "png", "--out", str(out),
                                      "--model", "last_touch", "--database", warehouse],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    drawn = sorted(p.stem for p in out.glob("*.png"))
    assert drawn == sorted(name for name in CHARTS if name not in ("model_ranking", "calls"))
    assert "model_ranking: not drawn: no ground-truth file" in result.output
    assert f"{len(drawn)} PNG files in {out}" in result.output
    images = {name: _png(out / f"{name}.png") for name in ("channels", "journey_map")}
    for width, height, pixels in images.values():
        assert (width, height) == (round(PNG_WIDTH * PNG_SCALE), round(PNG_HEIGHT * PNG_SCALE))
        assert len(set(pixels)) > 50  # a drawing (axes, bars, labels), not a blank page
    assert images["channels"][2] != images["journey_map"][2]

    missing = CliRunner().invoke(app, ["report", "--format", "png", "--out", str(out),
                                       "--database", warehouse],
                                 env={"COLUMNS": "200",
                                      "TOUCHLINE_CHROMIUM_PATH": str(tmp_path / "none")})
    assert missing.exit_code != 0
    assert "install it (Debian: apt-get install chromium)" in missing.output


@pytest.mark.parametrize(("first_error", "calls"), [
    ("ReferenceError: kaleido_scopes is not defined", 2),  # kaleido's tab not ready: again
    ("TypeError: a chart's own error", 1),  # the chart's own: raised at once
])
def test_png_charts_are_drawn_again_only_when_kaleidos_page_was_not_ready(
        warehouse: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first_error: str,
        calls: int) -> None:
    import kaleido
    from kaleido.errors import JavascriptError

    from touchline.serve.report import write_pngs

    asked: list[int] = []

    def draw(jobs: list[dict], **_: object) -> None:
        asked.append(len(jobs))
        if len(asked) == 1:
            raise JavascriptError(f"{{'result': {{'description': '{first_error}'}}}}")
        for job in jobs:
            Path(job["path"]).write_bytes(b"png")

    monkeypatch.setattr(kaleido, "write_fig_from_object_sync", draw)
    con = engine.connect(settings=Settings(database_url=warehouse))
    try:
        if calls == 1:
            with pytest.raises(JavascriptError, match="a chart's own error"):
                write_pngs(con, tmp_path, Filters(), chromium=Path(shutil.which("sh")))
        else:
            result = write_pngs(con, tmp_path, Filters(), chromium=Path(shutil.which("sh")))
            assert sorted(p.stem for p in tmp_path.glob("*.png")) == sorted(
                s.name for s in result.sections if not s.error)
    finally:
        con.disconnect()
    assert len(asked) == calls and asked[0] > 0


@pytest.mark.parametrize(("option", "value", "said"), [
    ("--conversion", "purchse", "conversion 'purchse' (did you mean 'purchase'?)"),
    ("--model", "last_tuch", "--model 'last_tuch' (did you mean 'last_touch'?)")])
def test_an_unknown_conversion_or_model_writes_no_report(warehouse: str, tmp_path: Path,
                                                         option: str, value: str,
                                                         said: str) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--out", str(out), option, value,
                                      "--database", warehouse], env={"COLUMNS": "300"})
    assert result.exit_code == 2, result.output  # as every bad option of the CLI (fail())
    assert said in " ".join(result.output.split())
    assert not out.exists()


def test_report_says_which_filters_a_chart_leaves_aside(warehouse: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--out", str(out), "--since", "2024-01-01",
                                      "--device", "mobile", "--database", warehouse])
    assert result.exit_code == 0, result.output
    html = out.read_text()
    # the funnel follows every stage ever entered: the same note as the dashboard's
    funnel = html.split('<section id="funnel">')[1].split("</section>")[0]
    assert ("date range does not apply here: a funnel follows each unit through every stage "
            "it ever entered") in funnel
    retention = html.split('<section id="retention">')[1].split("</section>")[0]
    assert "device does not apply here" in retention and "date range" not in retention
    # what the numbers leave empty and why: spend is not split by device
    channels = html.split('<section id="channels">')[1].split("</section>")[0]
    assert "spend is not split by B2B/B2C or by device" in channels
    # no --model given: no chart says the attribution model is left aside
    assert "attribution model does not apply" not in html


def test_the_cli_funnel_of_stages_is_cumulative_unless_asked_and_says_which(
        warehouse: str) -> None:
    """serve_kit's lifecycle: p1 reached retention, p2 and p4 decision (both skipped
    consideration), p3 awareness; in order only p1 goes past awareness."""
    steps = [f"stage:{s}" for s in ("awareness", "consideration", "decision", "retention")]

    def run(*extra: str) -> tuple[list[list[str]], str]:
        result = CliRunner().invoke(app, ["funnel", *steps, *extra, "--database", warehouse],
                                    env={"COLUMNS": "200"})
        assert result.exit_code == 0, result.output
        rows = [[c.strip() for c in line.split("│")[1:-1]]
                for line in result.output.splitlines() if line.startswith("│")]
        return [r for r in rows if r[0].isdigit()], " ".join(result.output.split())

    rows, text = run()
    assert [(r[1], r[2], r[4]) for r in rows] == [
        ("stage:awareness", "4", "1"), ("stage:consideration", "3", "0"),
        ("stage:decision", "3", "2"), ("stage:retention", "1", "")]
    assert "funnel (cumulative)" in text
    assert ("cumulative funnel: a person counts at every step up to the furthest one it "
            "reached, skipped steps included (`touchline funnel --mode ordered`: only the "
            "steps reached in order)") in text
    rows, text = run("--mode", "ordered")
    assert [r[2] for r in rows] == ["4", "1", "1", "1"]
    assert "funnel (ordered)" in text and "cumulative" not in text
    assert "ordered funnel: a person counts at a step when it reached every step" in text
    # the report (as the dashboard) says which funnel it draws, in one line
    con = engine.connect(settings=Settings(database_url=warehouse))
    try:
        html, _ = render_report(con, Filters(model="linear"))
    finally:
        con.disconnect()
    funnel = html.split('<section id="funnel">')[1].split("</section>")[0]
    assert ("cumulative funnel: a person counts at every step up to the furthest one it "
            "reached, skipped steps included") in funnel


def test_report_header_states_the_window_of_each_section(warehouse: str) -> None:
    con = engine.connect(settings=Settings(database_url=warehouse))
    try:
        html, _ = render_report(con, Filters(model="linear"))
        dated, _ = render_report(con, Filters(model="linear", since=datetime(2025, 4, 1),
                                              until=datetime(2025, 5, 1)))
    finally:
        con.disconnect()
    header = html.split('<p class="meta">')[1].split("</p>")[0]
    # no dates: the overview shows the 30 days up to the last purchase (20 April 2025)
    assert "all dates (the overview: 2025-03-22 to 2025-04-20, against the days before" in header
    header = dated.split('<p class="meta">')[1].split("</p>")[0]
    assert "2025-04-01 to 2025-04-30" in header and "the overview:" not in header


def test_the_reports_data_quality_holds_the_pages_figures(tmp_path: Path) -> None:
    """The report draws the Data quality page's charts from the same data functions: on
    serve_kit's quality warehouse, the headline of each."""
    from serve_kit import build_quality_warehouse

    con = engine.connect(settings=Settings(database_url=f"duckdb:///{tmp_path / 'q.duckdb'}"))
    build_quality_warehouse(con)
    store.init(con)  # the other charts' tables, empty (as `touchline run` leaves them)
    html, sections = render_report(con, Filters(model="linear"))
    con.disconnect()
    drawn = {s.name: s for s in sections if s.error is None}
    assert {"freshness", "data_quality", "bot_share", "duplicates", "calls",
            "identity_cuts"} <= set(drawn)
    for headline in ("bot share: 25.0% of 12 rows read by prepare",
                     "duplicates merged: 6 exact, 1 cross-source, 0 order",
                     "unmatched calls: 2 of 6 (no number lease explains them)",
                     "identity merges cut by the guards: 3 links (kept: 4)",
                     "2025-04-20 10:00 UTC"):
        assert headline in html, headline
    assert drawn["bot_share"].data.attrs["share"] == 0.25


def test_report_takes_the_stage_model(warehouse: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = CliRunner().invoke(app, ["report", "--out", str(out), "--stage-model", "funnel",
                                      "--database", warehouse])
    assert result.exit_code == 0, result.output
    # serve_kit's funnel model: p1 entered "top" only, so no funnel of it (the lifecycle's
    # has four stages with entries)
    funnel = out.read_text().split('<section id="funnel">')[1].split("</section>")[0]
    assert "stage model &#39;funnel&#39; has 1 stage(s) with entries" in funnel
    assert "consideration" not in funnel
    wrong = CliRunner().invoke(app, ["report", "--out", str(out), "--stage-model",
                                     "lifecycel", "--database", warehouse])
    assert wrong.exit_code == 2
    assert "--stage-model 'lifecycel' (did you mean 'lifecycle'?): choose from" in (
        wrong.output)
