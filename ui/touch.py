"""Taps on a touch screen select units, as clicks do.

Plotly turns a click on a point into a selection through its hover data, which a touch screen
never produces (no pointer hovers there): on a phone a tap on a unit did nothing. This small
component (no visible element) listens on the page for taps (a touch that ends within 10 px and
half a second of where it began) on a chart, finds the unit nearest to the finger among the
chart's clickable unit cells (the trace whose points carry their ``(row, col)``), and sends it
with the chart's key; the chart's page has registered what choosing a unit means there
(:func:`on_tap`), which runs before the rerun, as a click's callback does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

_HTML = '<div class="dstouch" style="display:none"></div>'
_JS = """
export default function (component) {
  window.__dsTouchSend = component.setStateValue;  // the latest mount's sender
  if (window.__dsTouchTaps) return;
  window.__dsTouchTaps = true;
  let start = null, count = 0;
  const unitAt = (gd, cx, cy) => {
    const fl = gd._fullLayout, xa = fl && fl.xaxis, ya = fl && fl.yaxis;
    if (!xa || !ya) return null;
    const r = gd.getBoundingClientRect();
    const px = cx - r.left - xa._offset, py = cy - r.top - ya._offset;
    if (px < 0 || py < 0 || px > xa._length || py > ya._length) return null;  // off the plot area
    const x = xa.p2l(px), y = ya.p2l(py);
    let best = null, bestDistance = Infinity;
    for (const trace of gd._fullData || []) {
      const cd = trace.customdata;
      if (!cd || !trace.x) continue;
      for (let i = 0; i < trace.x.length; i++) {
        const d = (trace.x[i] - x) ** 2 + (trace.y[i] - y) ** 2;
        if (d < bestDistance) {
          bestDistance = d;
          best = Array.isArray(cd[i]) || ArrayBuffer.isView(cd[i]) ? [cd[i][0], cd[i][1]] : [cd[2 * i], cd[2 * i + 1]];
        }
      }
    }
    return best;
  };
  document.addEventListener("touchstart", (e) => {
    const t = e.touches[0];
    start = e.touches.length === 1 ? { x: t.clientX, y: t.clientY, time: Date.now() } : null;
  }, { capture: true, passive: true });
  document.addEventListener("touchend", (e) => {
    if (!start) return;
    const t = e.changedTouches[0], s = start;
    start = null;
    if (Math.hypot(t.clientX - s.x, t.clientY - s.y) > 10 || Date.now() - s.time > 500) return;
    const target = document.elementFromPoint(t.clientX, t.clientY);
    const gd = target && target.closest(".js-plotly-plot");
    const host = gd && gd.closest("[class*='st-key-']");
    if (!host) return;
    const key = [...host.classList].find((c) => c.startsWith("st-key-")).slice("st-key-".length);
    const unit = unitAt(gd, t.clientX, t.clientY);
    if (unit) window.__dsTouchSend("tap", { key, unit: [Number(unit[0]), Number(unit[1])], n: ++count });
  }, { capture: true, passive: true });
}
"""
_COMPONENT: Any = None


TARGETS = "touch_tap_targets"


def on_tap(chart_key: str, set_unit: Callable[[tuple[int, int]], None]) -> None:
    """What a tap on chart ``chart_key`` means: ``set_unit(unit)`` (kept for this session)."""
    st.session_state.setdefault(TARGETS, {})[chart_key] = set_unit


def _tapped() -> None:
    """A tap arrived: choose its unit on the chart it landed on, before the rerun draws it."""
    value = st.session_state.get("touch_taps")
    tap = getattr(value, "tap", None) if not isinstance(value, dict) else value.get("tap")
    if not tap:
        return
    set_unit = st.session_state.get(TARGETS, {}).get(tap.get("key"))
    if set_unit is not None:
        set_unit((int(tap["unit"][0]), int(tap["unit"][1])))


def touch_taps() -> None:
    """Mount the tap listener (registered once per server process, installed once per page)."""
    global _COMPONENT
    if _COMPONENT is None:
        import streamlit.components.v2 as components

        _COMPONENT = components.component("deformscope_touch", html=_HTML, js=_JS, isolate_styles=False)
    _COMPONENT(key="touch_taps", default={"tap": None}, on_tap_change=_tapped)


__all__ = ["on_tap", "touch_taps"]
