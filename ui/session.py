"""What every page of the app shares: the command line, the models (one copy per server), the
session's cache of results, the URL's query parameters and the sidebar's point settings.

Models are shared by every browser session (``st.cache_resource``): ``viz.capture`` and
``viz.support`` hook each call separately, so sharing is safe. Results are per session, in one
bounded store (:func:`cached`). A page's shareable choices live in the URL (:class:`UrlState`),
so a copied link opens the same picture, unit, method and view.
"""

from __future__ import annotations

import argparse
import gc
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st
import torch

import viz
from models.catalog import TWINS
from models.runtime import add_device_argument, resolve_device
from viz.geometry import BILINEAR
from viz.samples import load_samples, load_scene_samples
from viz.user_model import add_model_arguments, model_from_args

#: per kind of result, how many a session keeps (oldest dropped first): memory stays bounded
#: however long someone plays
CACHE_LIMITS = {"pair": 8, "view": 8, "figure": 64}
#: widgets every page draws (the sidebar's point settings): their state is kept across pages
SHARED_KEYS = ("levels", "method")
DEFAULT_TWINS = {"digits": "regular_plain", "scenes": "scene_regular"}
METHOD_HELP = (
    "nearest: round (public MXNet-demo style); bilinear: interpolate offsets; "
    "exact: expand to the 4 neighbours with weights"
)


@st.cache_resource
def freeze_startup_heap() -> None:
    """Once per server, on the first run: exempt what the imports built from garbage collection.

    Streamlit collects garbage after every run (gc.collect(2)); with torch, torchvision and
    plotly loaded that walked ~390k objects, 190 ms per click or stroke on a 2-core machine, and
    more while the browser drew on the same cores. Frozen, they are skipped (the collection
    takes ~3 ms) and they live as long as the server anyway; everything made later is still
    collected as before. Libraries otherwise imported on first use are imported first, so that
    they are frozen too (torchvision alone adds ~150k objects)."""
    import pandas  # noqa: F401  (st.dataframe's)
    import torchvision  # noqa: F401  (the layer contract's, models.contract)

    gc.collect()
    gc.freeze()


def cli_args() -> argparse.Namespace:
    """Options after ``--`` on the streamlit command line: only these may name user code."""
    p = argparse.ArgumentParser(prog="streamlit run app.py --")
    add_model_arguments(p)
    p.add_argument(
        "--checkpoint",
        action="append",
        default=[],
        help="a deformscope checkpoint of yours (python -m models.train): listed beside the shipped ones",
    )
    p.add_argument("--twin", default=None, help="its regular twin (default: the shipped regular model of its family)")
    add_device_argument(p)
    return p.parse_known_args(sys.argv[1:])[0]


@st.cache_resource
def device() -> torch.device:
    """Where the models run: ``--device`` (default auto: the GPU when there is one)."""
    return resolve_device(cli_args().device)


@st.cache_resource(show_spinner="Loading checkpoints...")
def load_model(name: str):
    # Shared by every browser session: viz.capture records per call, so sharing is safe.
    return viz.load(name, device())


@st.cache_resource(show_spinner=False)
def _load_user_model(argv: tuple[str, ...], _progress=None):
    # Keyed by the command line (model, weights, input size...), shared by every session like the
    # shipped models; _progress (not part of the key) hears each step while it loads.
    return model_from_args(cli_args(), progress=_progress)


def user_model():
    """The model named by --model; the first time a session asks, a status line names the step
    that runs (building, finding the layers, probing) until it is ready."""
    argv = tuple(sys.argv[1:])
    if st.session_state.get("user_model_ready"):
        return _load_user_model(argv)
    with st.status("Loading your model...", expanded=False) as status:

        def step(sentence: str) -> None:
            status.update(label=sentence[0].upper() + sentence[1:] + "...")

        model = _load_user_model(argv, _progress=step)
        status.update(
            label=f"Your model is ready: {len(model.sampling_layers())} stacked deformable layer(s) found",
            state="complete",
        )
    st.session_state["user_model_ready"] = True
    return model


@st.cache_resource
def digit_samples():
    return load_samples()


@st.cache_resource
def scene_samples():
    return load_scene_samples()


def own_checkpoints() -> dict[str, dict[str, tuple[str, str]]]:
    """The user's checkpoints named with ``--checkpoint``, by family: path -> (description, twin)."""
    args = cli_args()
    out: dict[str, dict[str, tuple[str, str]]] = {"digits": {}, "scenes": {}}
    for path in args.checkpoint:
        try:
            model = load_model(path)
        except viz.CheckpointError as exc:
            st.sidebar.error(f"--checkpoint {path}: {exc}")
            continue
        family = getattr(model, "family", "digits")
        if family not in out:
            st.sidebar.error(f"--checkpoint {path}: a {family} model; the app shows digit and scene models")
            continue
        out[family][path] = (f"yours, {model.arch}", args.twin or DEFAULT_TWINS[family])
    return out


def shipped_pairs(prefix: str | None) -> dict[str, tuple[str, str]]:
    """The shipped deformable checkpoints of a family and their twins: name -> (description, twin);
    ``prefix`` ``"scene_"`` for scenes, None for the digit classifiers."""
    if prefix is None:
        return {n: (desc, twin) for n, (twin, desc) in TWINS.items() if not n.startswith(("scene_", "roi_"))}
    return {n: (desc, twin) for n, (twin, desc) in TWINS.items() if n.startswith(prefix)}


#: Narrow screens (Streamlit stacks columns below 640 px): the page's chart column first, the
#: inputs under it, so that a phone shows the picture, not a screenful of inputs, first.
NARROW_CSS = """<style>
@media (max-width: 640px) {
  .st-key-page_row > [data-testid="stLayoutWrapper"] > [data-testid="stHorizontalBlock"]
    > [data-testid="stColumn"]:last-child { order: -1; }
  h1 { font-size: 1.5rem !important; }
}
</style>"""


def page_columns():
    """A page's two columns: inputs on the left (a third), the charts on the right; on a narrow
    screen the charts come first (:data:`NARROW_CSS`, which ``app.py`` puts on every page)."""
    with st.container(key="page_row"):
        return st.columns([1, 2])


def cached(kind: str, key: Any, build: Callable[[], Any]) -> Any:
    """This session's result of ``build`` for ``(kind, key)``: computed once, kept among the last
    :data:`CACHE_LIMITS` ``[kind]`` of its kind. The one store every page keeps results in."""
    store: dict[Any, Any] = st.session_state.setdefault("results", {})
    full = (kind, key)
    if full in store:
        return store[full]
    value = build()
    same = [k for k in store if k[0] == kind]
    for k in same[: max(0, len(same) - CACHE_LIMITS.get(kind, 8) + 1)]:
        del store[k]
    store[full] = value
    return value


def points_settings(stacked: int, levels_key: str) -> tuple[int, str]:
    """The sidebar's levels slider (over ``stacked`` layers) and reading method; their values."""
    with st.sidebar:
        st.header("Points")
        st.session_state.setdefault(levels_key, min(3, stacked))
        if st.session_state[levels_key] > max(stacked, 2):
            st.session_state[levels_key] = min(3, stacked)
        levels = st.slider(
            "Levels (layers back-projected)",
            1,
            max(stacked, 2),
            key=levels_key,
            help="How many stacked layers the points go back through (9 samples a layer, x groups).",
            disabled=stacked < 2,
        )
        st.session_state.setdefault("method", BILINEAR)
        method = st.radio("Reading between units", viz.METHODS, key="method", help=METHOD_HELP)
    return int(levels), str(method)


@dataclass(frozen=True)
class Field:
    """One query parameter: its name in the URL, the session-state key it fills, and how its
    text becomes a value (``parse`` raises ValueError on nonsense) and back."""

    name: str
    key: str
    parse: Callable[[str], Any] = str
    show: Callable[[Any], str] = str


def parse_unit(text: str) -> tuple[int, int]:
    """``"7,3"`` -> ``(7, 3)``."""
    row, col = (int(v) for v in text.split(","))
    return row, col


def show_unit(unit: tuple[int, int]) -> str:
    return f"{int(unit[0])},{int(unit[1])}"


def one_of(choices: tuple[str, ...] | list[str]) -> Callable[[str], str]:
    """A parser that accepts only ``choices``."""

    def parse(text: str) -> str:
        if text not in choices:
            raise ValueError(f"{text!r} is not one of {list(choices)}")
        return text

    return parse


def int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if not low <= value <= high:
            raise ValueError(f"{value} is not between {low} and {high}")
        return value

    return parse


def float_in(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        value = round(float(text), 2)
        if not low <= value <= high:
            raise ValueError(f"{value} is not between {low} and {high}")
        return value

    return parse


class UrlState:
    """A page's shareable choices mirrored in the URL's query parameters.

    :meth:`restore` (before the page's widgets) fills their session state from the URL on the
    session's first run, so that a copied link opens the same picture; :meth:`publish` (after them)
    writes the current choices back. A parameter that does not parse is left out and said.
    """

    def __init__(self, page: str, fields: list[Field]) -> None:
        self.page = page
        self.fields = {f.name: f for f in fields}

    def restore(self) -> dict[str, Any]:
        """The values read from the URL on this session's first run (else {}): a link is read by
        the page it opens; the choices of a page switched to later start afresh."""
        if st.session_state.get("url_restored"):
            return {}
        st.session_state["url_restored"] = self.page
        got, bad = {}, []
        for name, f in self.fields.items():
            if name not in st.query_params:
                continue
            try:
                got[f.key] = f.parse(st.query_params[name])
            except (ValueError, TypeError) as exc:
                bad.append(f"{name}: {exc}")
        for key, value in got.items():
            st.session_state[key] = value
        if bad:
            st.warning("Some settings in the link were not understood and were left out: " + "; ".join(bad))
        return got

    def publish(self, leave_out: tuple[str, ...] = ()) -> None:
        """Write the current choices to the URL (those in ``leave_out``, or unset, are removed)."""
        want = {}
        for name, f in self.fields.items():
            if name in leave_out or f.key not in st.session_state:
                continue
            want[name] = f.show(st.session_state[f.key])
        if dict(st.query_params.to_dict()) != want:
            st.query_params.from_dict(want)

    def set(self, name: str, value: Any) -> None:
        """Write one choice to the URL at once (a click on a unit, in a fragment's rerun)."""
        text = self.fields[name].show(value)
        if st.query_params.get(name) != text:
            st.query_params[name] = text


__all__ = [
    "CACHE_LIMITS",
    "NARROW_CSS",
    "page_columns",
    "SHARED_KEYS",
    "Field",
    "UrlState",
    "cached",
    "cli_args",
    "device",
    "digit_samples",
    "float_in",
    "freeze_startup_heap",
    "int_in",
    "load_model",
    "one_of",
    "own_checkpoints",
    "parse_unit",
    "points_settings",
    "scene_samples",
    "shipped_pairs",
    "show_unit",
    "user_model",
]
