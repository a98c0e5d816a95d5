"""One end-to-end run in a real browser: streamlit run app.py, driven by playwright + Debian's
chromium. Saves a screenshot to test-artifacts/app_e2e.png."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
from pagewatch import POINT_ON_PAGE, ScriptRuns, arm, redrawn, wait_idle  # noqa: E402

pytestmark = pytest.mark.e2e
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
SERVER_LOG = ARTIFACTS / "app_e2e_server.log"
VIEWPORTS = [(1400, 1000), (390, 844)]
#: per page, the views a text check goes through (the text clicked to open each, None: as opened)
VIEWS_SEEN = {
    "": [None, "effective receptive field", "effective sampling locations", "saliency region", "Deformable RoI pooling"],
    "digits": [None, "Level by level", "Offset field", "Sampling density", "Effective dilation"],
}


@pytest.fixture(scope="module")
def server():
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does this)")
    from loadtest import start_server  # the one way this project starts the app for a browser

    ARTIFACTS.mkdir(exist_ok=True)
    proc, url = start_server(log=SERVER_LOG)
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def _unit_box_centre(chart, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of data point (x, y) in a Plotly chart."""
    pos = chart.evaluate(POINT_ON_PAGE, [x, y])
    assert pos is not None, "the chart is not drawn yet"
    return pos


def _click_unit(
    page, runs, chart_key: str, unit: tuple[int, int], x: float, y: float, shown: str, attempts: int = 4
) -> tuple[float, float]:
    """Click data point (x, y) of the single chart in ``chart_key`` until the chart shows
    ``unit``'s points and the page ``shown``; returns the seconds from the (successful) click to
    the points redrawn, and to the page's script runs ended (the server's part).

    The mouse moves onto the point first and rests there as a person's does: Plotly reports a
    click on the point it last hovered, and computes hovers on the animation frame after a move.
    A slow machine can still be re-laying out the page, so a click that is lost is retried a
    bounded number of times; a click that never selects the unit still fails the test."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import expect

    selector = f".{chart_key} .js-plotly-plot"
    charts = page.locator(selector)
    for attempt in range(attempts):
        wait_idle(page, runs)
        expect(charts).to_have_count(1)
        px, py = _unit_box_centre(charts.first, x, y)
        page.mouse.move(px, py, steps=2)
        page.wait_for_timeout(500)
        arm(page, selector, f"unit {unit}")
        t0 = time.perf_counter()
        page.mouse.click(px, py)
        try:
            drawn = redrawn(page, timeout=10_000)
        except PlaywrightTimeout:
            if attempt == attempts - 1:
                raise
            continue
        wait_idle(page, runs)
        expect(page.get_by_text(shown)).to_be_visible()
        return drawn, runs.last_end - t0
    raise AssertionError("unreachable")


def _report(mode: str, timings: dict[str, tuple[float, float]]) -> None:
    for what, (drawn, done) in timings.items():
        print(
            f"end to end, {mode}, {what}: points redrawn {1e3 * drawn:.0f} ms (server runs ended {1e3 * done:.0f} ms)"
        )


def test_page_sample_click_and_draw(server):
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1500, "height": 1200})
        page.set_default_timeout(60_000)
        runs = ScriptRuns(page)
        page.goto(server)
        page.locator('[data-testid="stSidebar"]').get_by_text("Single digit", exact=True).click()
        expect(page.get_by_text("Deformable predicts")).to_be_visible()

        # A bundled digit: sample 0 is a 7.
        number = page.get_by_label("Bundled test digit (0-99)")
        number.fill("0")
        number.press("Enter")
        expect(page.get_by_text("MNIST test #0, label 7")).to_be_visible()
        metric = page.locator('[data-testid="stMetric"]').filter(has_text="Deformable predicts")
        expect(metric).to_contain_text("7")

        # The overlay: a Plotly chart with the unit scatter and 729 points.
        charts = page.locator(".st-key-points_chart .js-plotly-plot")
        expect(charts).to_have_count(1)  # a rerun briefly shows the old and the new chart
        chart = charts.first
        expect(chart).to_be_visible()
        expect(chart).to_contain_text("729 sampling points (level 3)")

        # Click the unit at row 3, column 10: pixel (x, y) = (2*10 + 0.5, 2*3 + 0.5). The axes of
        # both charts (the deformable model's and the twin's) hold still: the points move.
        ranges = "c => [c._fullLayout.xaxis.range, c._fullLayout.yaxis.range]"
        both = page.locator(".st-key-points_chart .js-plotly-plot, .st-key-points_chart_2 .js-plotly-plot")
        wait_idle(page, runs)  # the new digit's charts, not the last one's
        page.wait_for_timeout(500)
        before = [both.nth(i).evaluate(ranges) for i in range(2)]
        timings = {
            "click a unit": _click_unit(
                page, runs, "st-key-points_chart", (3, 10), 20.5, 6.5, "Unit (3, 10): 729 sampling points"
            )
        }
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        assert [both.nth(i).evaluate(ranges) for i in range(2)] == before
        page.screenshot(path=str(ARTIFACTS / "app_e2e.png"), full_page=True)

        # The address holds the page, the digit and the unit: a copied link opens the same view.
        from urllib.parse import parse_qs, urlparse

        link = urlparse(page.url)
        assert link.path.endswith("/digits"), page.url
        query = {k: v[0] for k, v in parse_qs(link.query).items()}
        assert query["sample"] == "0" and query["unit"] == "3,10", page.url
        shared = browser.new_page(viewport={"width": 1500, "height": 1200})
        shared.set_default_timeout(60_000)
        shared.goto(page.url)
        expect(shared.get_by_text("MNIST test #0, label 7")).to_be_visible()
        expect(shared.get_by_text("Unit (3, 10): 729 sampling points")).to_be_visible()
        shared.close()

        # Draw: the empty canvas has no prediction; a stroke gives one.
        page.get_by_text("Draw", exact=True).click()
        expect(page.get_by_text("The canvas is empty: draw a digit.")).to_be_visible()
        canvas = page.locator(".dscanvas canvas").first
        expect(canvas).to_be_visible()
        wait_idle(page, runs)
        box = canvas.bounding_box()
        arm(page, ".st-key-points_chart .js-plotly-plot", "unit (")
        page.mouse.move(box["x"] + 60, box["y"] + 50)
        page.mouse.down()
        for px, py in [(130, 50), (200, 50), (170, 120), (140, 180), (110, 240)]:
            page.mouse.move(box["x"] + px, box["y"] + py, steps=8)
        t0 = time.perf_counter()
        page.mouse.up()
        drawn = redrawn(page)
        wait_idle(page, runs)
        timings["stroke"] = (drawn, runs.last_end - t0)
        expect(metric).to_be_visible()
        expect(page.locator(".st-key-points_chart .js-plotly-plot")).to_contain_text("sampling points (level 3)")
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "app_e2e_drawn.png"), full_page=True)
        drawn_prediction = metric.inner_text().split()[-1]  # the predicted digit
        assert drawn_prediction != "2"  # unlike the sample below, so the check after the switch means something

        # Away to the samples and back: the drawing is still there and still analysed.
        page.get_by_text("Sample digit", exact=True).click()
        expect(page.get_by_text("MNIST test #")).to_be_visible()
        wait_idle(page, runs)
        page.get_by_text("Draw", exact=True).click()
        expect(page.locator(".dscanvas canvas").first).to_be_visible()
        expect(page.get_by_text("MNIST test #")).to_have_count(0)
        expect(metric).to_contain_text(drawn_prediction)  # the drawing's digit again (the sample is a 2)
        wait_idle(page, runs)
        expect(page.get_by_text("The canvas is empty: draw a digit.")).to_have_count(0)
        page.get_by_role("button", name="Clear").click()  # the canvas's own Clear: the prompt again
        expect(page.get_by_text("The canvas is empty: draw a digit.")).to_be_visible()
        wait_idle(page, runs)

        # A series of uploads, a huge picture among them: the page keeps answering (no "Cached
        # ForwardMsg MISS" lock-up: previews are small whatever the upload).
        page.get_by_text("Upload", exact=True).click()
        files = _upload_series(ARTIFACTS / "uploads")
        for path, shown in files:
            page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(str(path))
            expect(page.get_by_text(shown).first).to_be_visible()
            wait_idle(page, runs)
        expect(metric).to_contain_text("7")  # the last upload is a 7 and is analysed
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        browser.close()
    _report("digit mode", timings)


def _upload_series(folder) -> list[tuple[object, str]]:
    """Files to upload one after another and a text each shows: a 7, a 9000x9000 picture
    (refused: too many pixels), a 2000x10 sliver, a truncated file, and a 7 again."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)

    def seven(path):
        img = Image.new("L", (160, 160), 255)
        ImageDraw.Draw(img).line([(30, 25), (120, 25), (60, 140)], fill=0, width=14)
        img.save(path)
        return path

    huge = folder / "huge.png"
    Image.new("1", (9000, 9000), 1).save(huge)
    sliver = folder / "sliver.png"
    img = Image.new("L", (2000, 10), 255)
    ImageDraw.Draw(img).line([(10, 5), (1990, 5)], fill=0, width=3)
    img.save(sliver)
    cut = folder / "cut.png"
    cut.write_bytes(seven(folder / "whole.png").read_bytes()[:300])
    return [
        (seven(folder / "first.png"), "Deformable predicts"),
        (huge, "megapixels are refused"),
        (sliver, "Deformable predicts"),
        (cut, "truncated or corrupt"),
        (seven(folder / "last.png"), "Deformable predicts"),
    ]


def test_scene_mode_draw_two_digits_and_click_a_unit_on_each(server):
    """Scene mode (the default): draw a large and a small 7, click a unit on each, see the
    caption name the digit and its size class; time each step end to end."""
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    expect.set_options(timeout=30_000)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1500, "height": 1300})
        page.set_default_timeout(60_000)
        runs = ScriptRuns(page)
        page.goto(server)
        expect(page.get_by_text("At a glance: a background unit")).to_be_visible()  # a test scene at once
        page.get_by_text("Draw", exact=True).click()
        expect(page.get_by_text("The canvas is empty: draw a few digits")).to_be_visible()
        canvas = page.locator(".dscanvas canvas").first
        expect(canvas).to_be_visible()
        wait_idle(page, runs)
        box = canvas.bounding_box()

        def stroke(points: list[tuple[int, int]]) -> float:
            """Draw a stroke; returns the time the mouse button went up."""
            page.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
            page.mouse.down()
            for px, py in points[1:]:
                page.mouse.move(box["x"] + px, box["y"] + py, steps=10)
            page.mouse.up()
            return time.perf_counter()

        scene_chart = ".st-key-scene_chart .js-plotly-plot"
        timings = {}
        # a large 7 (scene pixels about (7..38, 7..55)), then a small one (about (47..58, 40..54))
        for what, points in (
            ("stroke", [(30, 30), (150, 30), (80, 220)]),
            ("second stroke", [(190, 160), (230, 160), (205, 215)]),
        ):
            arm(page, scene_chart, "unit (")
            t0 = stroke(points)
            try:
                drawn = redrawn(page)
                wait_idle(page, runs)
            except Exception:
                page.screenshot(path=str(ARTIFACTS / "app_e2e_scene_failed.png"), full_page=True)
                raise
            timings[what] = (drawn, runs.last_end - t0)
            expect(page.get_by_text("Input: your drawing.")).to_be_visible()
        # the table of digits lists the small one
        page.wait_for_function("() => document.body.textContent.includes('small (')", timeout=10_000)
        expect(page.locator(scene_chart)).to_have_count(1)
        # unit (row, col) is centred on scene pixel (4 * col + 1.5, 4 * row + 1.5)
        for (row, col), shown in (((5, 5), "lies on digit 1 (large"), ((11, 12), "lies on digit 2 (small")):
            timings[f"click unit ({row}, {col})"] = _click_unit(
                page,
                runs,
                "st-key-scene_chart",
                (row, col),
                4 * col + 1.5,
                4 * row + 1.5,
                f"Unit ({row}, {col}) {shown}",
            )
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        page.screenshot(path=str(ARTIFACTS / "app_e2e_scene.png"), full_page=True)
        page.get_by_role("tab", name="Deformable RoI pooling").click()  # a lazy tab: computed when opened
        expect(page.get_by_text("Deformable RoI pooling reads")).to_be_visible()
        expect(page.locator(".st-key-roi_chart .js-plotly-plot")).to_have_count(1)
        expect(page.locator('[data-testid="stException"]')).to_have_count(0)
        browser.close()
    _report("scene mode", timings)


def _browser(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


@pytest.mark.parametrize(("width", "height"), VIEWPORTS, ids=["1400x1000", "390x844"])
def test_no_chart_text_overlaps_another_or_leaves_its_chart(server, width, height):
    """Every title, tick label, axis title, colour-bar label and legend entry of every chart, in
    every view of both pages, on a wide window and on a phone."""
    from pagewatch import TEXT_BOXES, text_problems
    from playwright.sync_api import expect, sync_playwright

    problems = []
    with sync_playwright() as p:
        browser = _browser(p)
        phone = width < 600
        for path, views in VIEWS_SEEN.items():
            page = browser.new_context(
                viewport={"width": width, "height": height}, has_touch=phone, is_mobile=phone
            ).new_page()
            page.set_default_timeout(60_000)
            runs = ScriptRuns(page)
            page.goto(f"{server}/{path}")
            expect(page.locator(".js-plotly-plot").first).to_be_visible(timeout=120_000)  # a cold server loads models
            for view in views:
                if view is not None:
                    page.get_by_text(view, exact=True).first.click()
                wait_idle(page, runs)
                page.wait_for_timeout(1500)  # Plotly lays a new chart out after it is mounted
                boxes = page.evaluate(TEXT_BOXES)
                assert len(boxes) > 10, f"/{path} {view}: no chart texts found"
                problems += [f"/{path}, {view or 'as opened'}: {what}" for what in text_problems(boxes)]
            page.close()
        browser.close()
    assert not problems, "\n".join(problems)


def test_a_tap_on_a_phone_selects_a_unit_and_the_axes_hold_still(server):
    """On a touch screen a tap chooses the unit under the finger; the chart's axes are the same
    before and after (the picture holds still while the points move)."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = _browser(p)
        page = browser.new_context(viewport={"width": 390, "height": 844}, has_touch=True, is_mobile=True).new_page()
        page.set_default_timeout(60_000)
        runs = ScriptRuns(page)
        page.goto(server)
        chart = page.locator(".st-key-scene_chart .js-plotly-plot")
        expect(chart).to_have_count(1, timeout=120_000)  # a cold server loads models
        wait_idle(page, runs)
        page.wait_for_timeout(1500)
        chart.first.scroll_into_view_if_needed()
        ranges = "c => [c._fullLayout.xaxis.range, c._fullLayout.yaxis.range]"
        before = chart.first.evaluate(ranges)
        # unit (row, col) is centred on scene pixel (4 * col + 1.5, 4 * row + 1.5)
        x, y = chart.first.evaluate(POINT_ON_PAGE, [4 * 3 + 1.5, 4 * 12 + 1.5])
        page.touchscreen.tap(x, y)
        expect(page.get_by_text("Unit (12, 3) lies on")).to_be_visible()
        wait_idle(page, runs)
        page.wait_for_timeout(1000)
        assert chart.first.evaluate(ranges) == before
        assert "unit=12%2C3" in page.url or "unit=12,3" in page.url
        browser.close()


def test_the_server_log_has_no_warnings(server):
    """Run last in this module: everything the browser tests above did left no warning (such as
    Streamlit's about a widget given a default and a Session State value) in the server's log."""
    text = SERVER_LOG.read_text()
    flagged = [line for line in text.splitlines() if "warning" in line.lower() or "error" in line.lower()]
    assert not flagged, "\n".join(flagged)
