"""The installable package: a wheel built from the checkout, installed into a fresh virtual
environment beside the project's dependencies, runs from a folder outside the checkout."""

from __future__ import annotations

import site
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import REPO
from viz.cli import COMMANDS, main


def test_cli_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("app", *COMMANDS):
        assert f"  {name}" in out
    assert main(["no-such-command"]) == 2
    assert "unknown command" in capsys.readouterr().err


def test_cli_runs_a_subcommand(tmp_path, capsys):
    assert main(["catalog"]) == 0
    assert "scene_deform.pt" in capsys.readouterr().out


@pytest.mark.slow
def test_the_wheel_installs_and_runs_from_any_folder(tmp_path):
    dist = tmp_path / "dist"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(REPO)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = dist.glob("deformscope-*.whl")
    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    py = env_dir / "bin" / "python"
    # the fresh environment sees the project's dependencies (this interpreter's), not the checkout
    purelib = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    Path(purelib, "project_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    install = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cli = env_dir / "bin" / "deformscope"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(cli), *args], cwd=elsewhere, capture_output=True, text=True, timeout=600)

    assert run("--help").returncode == 0
    where = subprocess.run([py, "-c", "import models, viz; print(models.__file__); print(viz.CHECKPOINT_DIR)"],
                           cwd=elsewhere, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(REPO) not in where and "site-packages" in where
    figs = elsewhere / "figs"
    export = run("export", "--figure", "receptive_field", "--out", str(figs))
    assert export.returncode == 0, export.stderr[-3000:]
    assert (figs / "receptive_field.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    catalog = run("catalog")
    assert catalog.returncode == 0 and "scene_deform.pt" in catalog.stdout
    # the installed app: its pages (ui/*.py, found beside the installed app.py) open from any folder
    pages = subprocess.run(
        [py, "-c", (
            "import importlib.util\n"
            "from streamlit.testing.v1 import AppTest\n"
            "at = AppTest.from_file(importlib.util.find_spec('app').origin, default_timeout=120).run()\n"
            "assert not at.exception, [e.message for e in at.exception]\n"
            "assert at.selectbox(key='scene_model').value == 'scene_deform'\n"
            "at.switch_page('ui/digits.py').run()\n"
            "assert not at.exception, [e.message for e in at.exception]\n"
            "print([m.label for m in at.metric])\n"
        )],
        cwd=elsewhere, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert pages.returncode == 0 and "Deformable predicts" in pages.stdout, pages.stderr[-3000:]
