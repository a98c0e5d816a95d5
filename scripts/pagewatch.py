"""Watch the app's page while playwright drives it: when its script runs end (read off the
websocket) and when a chart shows a new drawing (checked in the page on every animation frame).

Streamlit's own "running" icon appears only after a run has taken 500 ms, so its absence does
not mean the page is idle; and the text of a result can show before its chart is drawn. These
two signals are the ones a latency measurement needs. Used by ``tests/test_app_e2e.py`` and
``scripts/loadtest.py``; works with playwright's sync and async APIs alike.
"""

from __future__ import annotations

import time

from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

# a run cut short because a newer one was asked for: the newer one's end is what counts
_EARLY = ForwardMsg.FINISHED_EARLY_FOR_RERUN


class ScriptRuns:
    """Requests for a run (a widget change, a click, a stroke) and ends of runs on one page,
    timed with ``time.perf_counter``. Attach before ``page.goto``."""

    def __init__(self, page) -> None:
        self.last_request = 0.0
        self.last_end = 0.0
        page.on("websocket", self._attach)

    def _attach(self, ws) -> None:
        ws.on("framesent", self._sent)
        ws.on("framereceived", self._received)

    def _sent(self, payload) -> None:
        if isinstance(payload, bytes | bytearray):
            msg = BackMsg()
            msg.ParseFromString(bytes(payload))
            if msg.WhichOneof("type") == "rerun_script":
                self.last_request = time.perf_counter()

    def _received(self, payload) -> None:
        if isinstance(payload, bytes | bytearray):
            msg = ForwardMsg()
            msg.ParseFromString(bytes(payload))
            if msg.WhichOneof("type") == "script_finished" and msg.script_finished != _EARLY:
                self.last_end = time.perf_counter()

    def idle(self, quiet: float = 0.2) -> bool:
        """The last run asked for has ended, and nothing new was asked for within ``quiet`` s."""
        now = time.perf_counter()
        return self.last_end > self.last_request and now - self.last_end >= quiet


def wait_idle(page, runs: ScriptRuns, timeout: float = 60.0) -> None:
    """Block (sync API) until ``runs.idle()``; the page keeps processing events meanwhile."""
    deadline = time.perf_counter() + timeout
    while not runs.idle():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the page's script runs did not end within {timeout:.0f} s")
        page.wait_for_timeout(20)


async def wait_idle_async(page, runs: ScriptRuns, timeout: float = 60.0) -> None:
    """``wait_idle`` for playwright's async API."""
    deadline = time.perf_counter() + timeout
    while not runs.idle():
        if time.perf_counter() > deadline:
            raise TimeoutError(f"the page's script runs did not end within {timeout:.0f} s")
        await page.wait_for_timeout(20)


# Arm before an input: remembers the chart's current data, notes the time of the next pointer
# release or key press anywhere on the page (a click on the chart, the end of a stroke on the
# canvas, Enter in a number box), then
# checks every animation frame for the chart (looked up afresh: Streamlit replaces the element
# on a new figure) drawn by Plotly with new data and a trace whose name starts with `trace`.
ARM = """([sel, trace]) => {
    const old = document.querySelector(sel);
    const w = {armed: old ? old.data : null, input: null, drawn: null};
    window.__dsWatch = w;
    const mark = () => { if (w.input === null) w.input = performance.now(); };
    window.addEventListener('pointerup', mark, {capture: true, once: true});
    window.addEventListener('keydown', mark, {capture: true, once: true});
    const check = () => {
        const gd = document.querySelector(sel);
        if (w.input !== null && gd && gd.data && gd.data !== w.armed && gd._fullData
                && gd._fullData.some(d => (d.name || '').startsWith(trace))) {
            w.drawn = performance.now();
            return;
        }
        requestAnimationFrame(check);
    };
    requestAnimationFrame(check);
}"""
DRAWN = "() => window.__dsWatch && window.__dsWatch.drawn !== null"
SECONDS = "() => (window.__dsWatch.drawn - window.__dsWatch.input) / 1000"


# Page coordinates of data point [x, y] in a Plotly chart element (the first subplot's axes);
# null until Plotly has drawn into the element (a newer chart may replace it before it does).
POINT_ON_PAGE = """(gd, xy) => {
    if (!gd._fullLayout || !gd._fullLayout.xaxis) return null;
    const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
    return [r.left + xa._offset + xa.l2p(xy[0]), r.top + ya._offset + ya.l2p(xy[1])];
}"""


def arm(page, chart: str, trace: str) -> None:
    """Start watching chart ``chart`` (a CSS selector) for the next input's redraw."""
    page.evaluate(ARM, [chart, trace])


def redrawn(page, timeout: float = 30_000) -> float:
    """Seconds from the input after ``arm`` to the chart drawn anew (measured in the page)."""
    page.wait_for_function(DRAWN, polling="raf", timeout=timeout)
    return float(page.evaluate(SECONDS))


async def arm_async(page, chart: str, trace: str) -> None:
    """``arm`` for playwright's async API."""
    await page.evaluate(ARM, [chart, trace])


async def redrawn_async(page, timeout: float = 30_000) -> float:
    """``redrawn`` for playwright's async API."""
    await page.wait_for_function(DRAWN, polling="raf", timeout=timeout)
    return float(await page.evaluate(SECONDS))


#: Every visible text of every Plotly chart on the page (titles, tick labels, axis titles, colour
#: bar labels, legend entries, annotations) with its box in page pixels and its chart's box.
TEXT_BOXES = """() => {
  const out = [];
  document.querySelectorAll('.js-plotly-plot').forEach((chart, index) => {
    const c = chart.getBoundingClientRect();
    if (c.width === 0 || c.height === 0) return;
    chart.querySelectorAll('text').forEach(t => {
      const text = t.textContent.trim();
      if (!text) return;
      const style = getComputedStyle(t);
      if (style.display === 'none' || style.visibility === 'hidden' || Number(style.opacity) === 0) return;
      const b = t.getBoundingClientRect();
      if (b.width === 0 || b.height === 0) return;
      out.push({chart: index, text, x0: b.left, y0: b.top, x1: b.right, y1: b.bottom,
                cx0: c.left, cy0: c.top, cx1: c.right, cy1: c.bottom});
    });
  });
  return out;
}"""


def text_problems(boxes: list[dict], slack: float = 1.0) -> list[str]:
    """What is wrong with the charts' texts (``TEXT_BOXES``): two texts of one chart that
    overlap by more than ``slack`` pixels each way, or a text that leaves its chart."""
    problems = []
    for b in boxes:
        if b["x0"] < b["cx0"] - slack or b["x1"] > b["cx1"] + slack or b["y0"] < b["cy0"] - slack or b["y1"] > b["cy1"] + slack:
            problems.append(f"chart {b['chart']}: {b['text']!r} leaves its chart")
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            if a["chart"] != b["chart"]:
                continue
            dx = min(a["x1"], b["x1"]) - max(a["x0"], b["x0"])
            dy = min(a["y1"], b["y1"]) - max(a["y0"], b["y0"])
            if dx > slack and dy > slack:
                problems.append(f"chart {a['chart']}: {a['text']!r} overlaps {b['text']!r}")
    return problems
