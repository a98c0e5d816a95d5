"""``deformscope``: one command for everything ``python -m ...`` does.

    deformscope app [-- app options]      the Streamlit app (``streamlit run app.py``)
    deformscope export ...                the figures (``python -m viz.export``)
    deformscope report ...                Table 2 on scenes (``python -m viz.scene_report``)
    deformscope train ...                 train a model (``python -m models.train``)
    deformscope evaluate ...              evaluate checkpoints (``python -m models.train.evaluate``)
    deformscope experiment ...            the regular-vs-deformable grid (``python -m models.train.experiment``)
    deformscope bench ...                 the op's benchmark (``python -m models.bench``)
    deformscope viz-bench ...             the viz core's benchmark (``python -m viz.bench``)
    deformscope catalog ...               the shipped checkpoints as a table (``python -m models.catalog``)

Every subcommand takes ``--help``. It runs from any folder: data, checkpoints and the app's files
are found where deformscope is installed.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

#: subcommand -> (module with ``main(argv)``, one line of help)
COMMANDS: dict[str, tuple[str, str]] = {
    "export": ("viz.export", "write the figures (PNG, SVG or HTML), for shipped models or your own"),
    "report": ("viz.scene_report", "the paper's Table 2 on scenes: effective dilation by digit size"),
    "train": ("models.train", "train a digit or scene model and save a checkpoint"),
    "evaluate": ("models.train.evaluate", "evaluate checkpoints on the test digits"),
    "experiment": ("models.train.experiment", "the regular-vs-deformable grid of training runs"),
    "bench": ("models.bench", "benchmark the deformable layers (DCNv1/v2, DCNv3, DCNv4)"),
    "viz-bench": ("viz.bench", "benchmark capture, back-projection, the views and the app's updates"),
    "catalog": ("models.catalog", "the shipped checkpoints and their measured metrics, as a Markdown table"),
}


def app_file() -> Path:
    """The app's entry script, wherever deformscope lives (a checkout or an installed wheel)."""
    spec = importlib.util.find_spec("app")
    if spec is None or spec.origin is None or Path(spec.origin).name != "app.py":
        raise FileNotFoundError("deformscope's app.py is not installed beside viz")
    return Path(spec.origin)


def run_app(argv: list[str]) -> int:
    """``streamlit run app.py`` on the installed app; ``argv`` after an optional ``--`` goes to the
    app (``--model``, ``--checkpoint``, ``--device``, ...)."""
    if argv[:1] in (["-h"], ["--help"]):
        print("usage: deformscope app [-- APP OPTIONS]\n\nStarts the Streamlit app. App options (after --): "
              "--model, --weights, --checkpoint, --device, ...; see docs/your_model.md.")  # fmt: skip
        return 0
    args = argv[1:] if argv[:1] == ["--"] else argv
    # the checkout's .streamlit/config.toml, which `streamlit run` reads only from the current folder
    settings = {
        "server.fileWatcherType": "none",
        "server.maxUploadSize": "10",
        "browser.gatherUsageStats": "false",
        "global.minCachedMessageSize": "1e15",
    }
    flags = [f"--{key}={value}" for key, value in settings.items()]
    # Streamlit in a process of its own (as `streamlit run` is), so that viz never imports it
    return subprocess.call([sys.executable, "-m", "streamlit", "run", str(app_file()), *flags, "--", *args])


def usage() -> str:
    lines = ["usage: deformscope COMMAND [OPTIONS]", "", "See where a deformable convolution looks.", "", "commands:"]
    lines.append(f"  {'app':<12}the Streamlit app (options for the app after --)")
    lines += [f"  {name:<12}{text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "deformscope COMMAND --help explains each one."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    command, rest = argv[0], argv[1:]
    if command == "app":
        return run_app(rest)
    if command not in COMMANDS:
        print(f"deformscope: unknown command {command!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[command][0])
    sys.argv = [f"deformscope {command}", *rest]  # argparse's usage line names the subcommand
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
