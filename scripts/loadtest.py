"""Load test of the real app: several browser sessions on one server, each checked against a
serial computation of its own input.

    python scripts/loadtest.py --sessions 8 --seconds 60
    python scripts/loadtest.py --sessions 1 --updates 500      # soak: memory over a long session

Starts ``streamlit run app.py`` (or uses ``--url``), opens N sessions as playwright contexts in
one Debian chromium, and in each, in the single-digit mode, keeps switching to another bundled
digit and clicking another top-layer unit. After every update it reads the prediction shown
and the drawn sampling points out of the page and compares them with what ``viz`` computes
serially, in this process, for that digit and unit: a session that shows another session's
points (the bug of hooks shared between threads) counts as a mismatch. Prints the number of
updates, mismatches, errors, p50/p95 update latency (the digit switch plus the click, each from the
input to the new points drawn, timed in the page; the harness's own waits and lost-click retries
left out, retries counted) and the server's
resident memory before and after (and after the first 50 updates).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))
from pagewatch import POINT_ON_PAGE, ScriptRuns, arm_async, redrawn_async, wait_idle_async  # noqa: E402

CLICK_ATTEMPTS = 8
CHROMIUM = os.environ.get("CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")


@dataclass
class Report:
    updates: int = 0
    mismatches: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    rss_mb: dict[str, float] = field(default_factory=dict)
    details: list[str] = field(default_factory=list)
    clicks_retried: int = 0

    def summary(self, sessions: int) -> str:
        lat = sorted(self.latencies)
        p50 = statistics.median(lat) if lat else float("nan")
        p95 = lat[min(len(lat) - 1, int(0.95 * len(lat)))] if lat else float("nan")
        mem = ", ".join(f"{k} {v:.0f} MB" for k, v in self.rss_mb.items())
        return (
            f"sessions {sessions}, updates {self.updates}, mismatches {self.mismatches}, errors {len(self.errors)}, "
            f"latency p50 {1e3 * p50:.0f} ms, p95 {1e3 * p95:.0f} ms, clicks retried {self.clicks_retried}; "
            f"server memory: {mem}"
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """``streamlit run app.py`` on a free port; its output goes to ``log`` (else nowhere)."""
    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(REPO / "app.py"),
        "--server.headless",
        "true",
        "--server.port",
        str(port),
        "--server.address",
        "127.0.0.1",
        "--browser.gatherUsageStats",
        "false",
    ]
    out = open(log, "w") if log is not None else subprocess.DEVNULL  # noqa: SIM115 (the server's lifetime)
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=1).read() == b"ok":
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise RuntimeError("streamlit did not start within 120 s")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Expected:
    """Serial ground truth: prediction and level-3 points of (digit, unit) for the default model."""

    def __init__(self) -> None:
        import viz
        from viz.samples import load_samples

        self.viz = viz
        self.model = viz.load("deform_rts")
        self.samples = load_samples()
        self.cache: dict[int, object] = {}

    def capture(self, k: int):
        if k not in self.cache:
            self.cache[k] = self.viz.capture(self.model, self.samples.images[k])
        return self.cache[k]

    def prediction(self, k: int) -> int:
        return int(self.capture(k).predictions[0])

    def points(self, k: int, unit: tuple[int, int]) -> list[tuple[float, float]]:
        pts = self.viz.backproject(self.capture(k), unit, method="bilinear")
        sel = pts.level == 3
        return sorted(zip(pts.x[sel].tolist(), pts.y[sel].tolist(), strict=True))


READ_POINTS = """(gd) => {
    // _fullData: Plotly's decoded arrays (gd.data keeps the base64 "bdata" payloads)
    const t = gd._fullData.find(d => d.name && d.name.includes('sampling points'));
    return t ? [Array.from(t.x), Array.from(t.y)] : null;
}"""
SHOWN = "(text) => document.body.textContent.includes(text)"
CHART = ".st-key-points_chart .js-plotly-plot"


async def _shown(page, runs: ScriptRuns, text: str, timeout: float = 120_000) -> None:
    """Until ``text`` is on the page and its script runs have ended."""
    await page.wait_for_function(SHOWN, arg=text, polling="raf", timeout=timeout)
    await wait_idle_async(page, runs, timeout=timeout / 1000)


async def _unit_position(charts, xy: list[float]) -> list[float]:
    """Page position of data point ``xy`` in the single chart of ``charts``, once Plotly has
    drawn it and the position holds still for 250 ms: the axes follow the points, so a new
    digit re-lays the chart out, and the chart element itself can be replaced meanwhile (it is
    looked up again every time)."""
    from playwright.async_api import Error as PlaywrightError
    from playwright.async_api import expect

    last = None
    for _ in range(80):
        await expect(charts).to_have_count(1)  # a rerun briefly shows the old and the new chart
        try:
            pos = await charts.first.evaluate(POINT_ON_PAGE, xy)
        except PlaywrightError:  # the element went away between finding and reading it
            pos = None
        if pos is not None and pos == last:
            return pos
        last = pos
        await asyncio.sleep(0.25)
    raise RuntimeError("the chart did not settle within 20 s")


def _same(shown: list[list[float]] | None, expected: list[tuple[float, float]]) -> bool:
    if shown is None:
        return False
    got = sorted(zip(shown[0], shown[1], strict=True))
    return len(got) == len(expected) and all(
        abs(a[0] - b[0]) < 1e-3 and abs(a[1] - b[1]) < 1e-3 for a, b in zip(got, expected, strict=True)
    )


async def session(
    browser,
    url: str,
    s: int,
    deadline: float,
    updates: int,
    truth: Expected,
    report: Report,
    pid,
    verbose: bool = False,
):
    from playwright.async_api import TimeoutError as PlaywrightTimeout
    from playwright.async_api import expect

    context = await browser.new_context(viewport={"width": 1400, "height": 1100})
    page = await context.new_page()
    runs = ScriptRuns(page)
    page.set_default_timeout(120_000)
    expect.set_options(timeout=120_000)
    try:
        await page.goto(url)
        await page.locator('[data-testid="stSidebar"]').get_by_text("Single digit", exact=True).click()
        await expect(page.get_by_text("Deformable predicts")).to_be_visible()
        i, step = 0, "open the page"
        while time.perf_counter() < deadline and (updates <= 0 or i < updates):
            k = (s * 13 + i * 7) % 100
            step = f"switch to digit {k}"
            box = page.get_by_label("Bundled test digit (0-99)")
            await box.fill(str(k))
            await arm_async(page, CHART, "unit (")
            await box.press("Enter")
            switch_s = await redrawn_async(page, timeout=120_000)  # Enter to the new digit's points drawn
            await _shown(page, runs, f"MNIST test #{int(truth.samples.test_indices[k])},")
            # then click a unit: row/col vary per session and step
            row, col = 2 + (s + i) % 10, 3 + (2 * s + i) % 9
            if f"Unit ({row}, {col}):" in await page.locator("body").inner_text():
                col += 1  # already the unit shown (a new digit starts at its centre): a click would change nothing
            step = f"click unit {(row, col)} on digit {k}"
            # a click that lands while the page is still settling (a rerun in flight, the chart being
            # re-laid out) is lost: click again after a short wait; clicking the same unit twice is harmless
            for attempt in range(CLICK_ATTEMPTS):
                charts = page.locator(CHART)
                await wait_idle_async(page, runs, timeout=120)
                x, y = await _unit_position(charts, [2 * col + 0.5, 2 * row + 0.5])
                # Plotly reports a click on the point it last hovered, and computes hovers on the
                # next animation frame after a mouse move: move first and let it hover, as a person
                # does, or the click can come before the hover and select nothing
                await page.mouse.move(x, y, steps=2)
                await page.wait_for_timeout(500)
                await arm_async(page, CHART, f"unit {(row, col)}")
                await page.mouse.click(x, y)
                try:
                    click_s = await redrawn_async(page, timeout=10_000)
                    await _shown(page, runs, f"Unit ({row}, {col}): 729 sampling points", timeout=10_000)
                    break
                except PlaywrightTimeout:
                    if attempt == CLICK_ATTEMPTS - 1:
                        raise
                    report.clicks_retried += 1
                    await wait_idle_async(page, runs, timeout=120)
            # an update's latency: the digit switch plus the (successful) click, each from the input
            # to the new points drawn (timed in the page); the harness's own waits (layout settling,
            # hovering, lost-click retries) are not the app's and are left out (retries are counted)
            report.latencies.append(switch_s + click_s)
            if verbose:
                print(f"session {s}, update {i + 1}: {report.latencies[-1]:.1f} s", flush=True)
            metric = page.locator('[data-testid="stMetric"]').filter(has_text="Deformable predicts")
            found = re.search(r"predicts\s+(\d)\b", await metric.inner_text())
            shown_pred = found.group(1) if found else ""
            shown_pts = await page.locator(".st-key-points_chart .js-plotly-plot").first.evaluate(READ_POINTS)
            ok = shown_pred == str(truth.prediction(k)) and _same(shown_pts, truth.points(k, (row, col)))
            report.updates += 1
            if not ok:
                report.mismatches += 1
                n = len(shown_pts[0]) if shown_pts else 0
                report.details.append(
                    f"session {s}, digit {k}, unit {(row, col)}: shows {shown_pred!r} and {n} points, "
                    f"expected {truth.prediction(k)} and {len(truth.points(k, (row, col)))}"
                )
            if report.updates == 50 and pid is not None:
                report.rss_mb["after 50 updates"] = rss_mb(pid)
            if report.updates % 50 == 0 and pid is not None:  # progress of long (soak) runs
                print(f"after {report.updates} updates: server memory {rss_mb(pid):.0f} MB", flush=True)
            i += 1
        if await page.locator('[data-testid="stException"]').count():
            report.errors.append(f"session {s}: an exception is shown")
    except Exception as exc:  # a failed session is an error of the run, reported, not raised
        report.errors.append(f"session {s}, {step}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
    finally:
        await context.close()


async def run(url: str, sessions: int, seconds: float, updates: int, pid: int | None, verbose: bool = False) -> Report:
    from playwright.async_api import async_playwright

    truth = Expected()
    report = Report()
    if pid is not None:
        report.rss_mb["before"] = rss_mb(pid)
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        deadline = time.perf_counter() + (seconds if updates <= 0 else 10**9)
        await asyncio.gather(
            *(session(browser, url, s, deadline, updates, truth, report, pid, verbose) for s in range(sessions))
        )
        await browser.close()
    if pid is not None:
        report.rss_mb["after"] = rss_mb(pid)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python scripts/loadtest.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sessions", type=int, default=8, help="concurrent browser sessions")
    p.add_argument("--seconds", type=float, default=60, help="how long each session keeps updating")
    p.add_argument("--updates", type=int, default=0, help="stop each session after this many updates instead")
    p.add_argument("--url", default=None, help="an app already running (default: start one)")
    p.add_argument("--verbose", action="store_true", help="print every update's latency as it happens")
    args = p.parse_args(argv)
    if not os.path.exists(CHROMIUM):
        print(f"error: no chromium at {CHROMIUM} (apt-get install chromium)", file=sys.stderr)
        return 2
    proc = None
    url = args.url
    if url is None:
        proc, url = start_server()
    try:
        report = asyncio.run(
            run(url, args.sessions, args.seconds, args.updates, proc.pid if proc else None, args.verbose)
        )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
    print(report.summary(args.sessions))
    for e in report.errors:
        print(f"  error: {e}")
    for d in report.details[:10]:
        print(f"  mismatch: {d}")
    return 0 if report.mismatches == 0 and not report.errors and report.updates > 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
