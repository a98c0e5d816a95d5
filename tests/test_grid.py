"""The experiment grid's engines: Ray Tune trials give exactly the sequential path's results,
a killed run resumes without re-running or losing a trial, a raising trial is retried and then
reported by name while the others complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from models.train import experiment, grid

ROOT = Path(__file__).resolve().parents[1]


def _args(data_dir, out, *extra, seeds=("0", "1"), conditions=("none", "rotate")):
    return [
        "--data-dir", str(data_dir), "--out", str(out), "--archs", "deform",
        "--conditions", *conditions, "--seeds", *seeds, "--epochs", "1", "--max-steps", "3",
        "--train-limit", "64", "--test-limit", "40", "--batch-size", "16", "--threads", "1",
        "--no-progress", *extra,
    ]  # fmt: skip


def _records(out):
    return [json.loads(line) for line in (Path(out) / "runs.jsonl").read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def ray_session():
    """Ray started in this process by the tests that need it, shut down after them; the
    environment variables the Ray engine sets for its workers (PYTHONPATH, the heap setting)
    are taken back too, so later tests' subprocesses do not inherit them."""
    ray = pytest.importorskip("ray")
    saved = dict(os.environ)
    yield
    ray.shutdown()
    os.environ.clear()
    os.environ.update(saved)


def test_job_names_and_keys():
    job = {"dataset": "mnist", "arch": "deform", "condition": "rotate+translate", "seed": 1, "epochs": 5,
           "train_limit": None, "max_steps": None}  # fmt: skip
    assert grid.job_name(job) == "mnist-deform-rotate+translate-seed1"
    assert grid.job_key(job) == ("mnist", "deform", "rotate+translate", 1, 5, None, None)
    assert grid.job_key({**job, "seed": 2}) != grid.job_key(job)


def test_flag_errors(tmp_path, capsys):
    assert experiment.main(["--out", str(tmp_path), "--workers", "2"]) == 2
    assert "need --engine ray" in capsys.readouterr().err
    assert experiment.main(["--out", str(tmp_path), "--engine", "ray", "--threads", "0"]) == 2
    assert "--threads must be at least 1" in capsys.readouterr().err


def test_ray_missing_is_a_clear_error(monkeypatch, mnist_dir, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails as if not installed
    assert experiment.main(_args(mnist_dir, tmp_path / "o", "--engine", "ray", seeds=("0",))) == 1
    err = capsys.readouterr().err
    assert "deformscope[grid]" in err and "--engine local" in err


def _flaky_trial_fn(marker_dir: Path, fail_name: str):
    """A trial function that fails for one job, leaving a file per attempt (a closure: Ray
    pickles it by value into its workers)."""

    def trial_fn(job, train_split, test_split, settings):
        name = grid.job_name(job)
        marker_dir.mkdir(parents=True, exist_ok=True)
        attempt = len(list(marker_dir.glob(f"{name}.*"))) + 1
        (marker_dir / f"{name}.{attempt}").write_text(str(os.getpid()))
        if name == fail_name:
            raise ValueError(f"no luck for {name}")
        return grid.run_trial(job, train_split, test_split, settings)

    return trial_fn


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_raising_trial_is_retried_then_reported_by_name(engine, ray_session, mnist_dir, tmp_path, capsys):
    out, markers = tmp_path / "exp", tmp_path / "attempts"
    fn = _flaky_trial_fn(markers, "mnist-deform-rotate-seed0")
    extra = ["--engine", engine, "--retries", "2"] + (["--workers", "2"] if engine == "ray" else [])
    assert experiment.main(_args(mnist_dir, out, *extra), trial_fn=fn) == 1
    err = capsys.readouterr().err
    assert "trial mnist-deform-rotate-seed0 failed 3 times: ValueError: no luck for mnist-deform-rotate-seed0" in err
    assert "1 of 4 trials failed" in err
    attempts = sorted(p.name for p in markers.iterdir())
    assert [a for a in attempts if a.startswith("mnist-deform-rotate-seed0")] == [
        f"mnist-deform-rotate-seed0.{i}" for i in (1, 2, 3)
    ]  # first try + 2 retries
    names = sorted(grid.job_name(r) for r in _records(out))
    assert names == ["mnist-deform-none-seed0", "mnist-deform-none-seed1", "mnist-deform-rotate-seed1"]
    assert sorted(p.stem for p in (out / "models").glob("*.pt")) == names  # weights of every finished trial
    assert all(len([a for a in attempts if a.startswith(n + ".")]) == 1 for n in names)
    # the rerun retries only the failed trial
    assert experiment.main(_args(mnist_dir, out, *extra)) == 0
    assert "3 of 4 runs already finished" in capsys.readouterr().out
    assert len(_records(out)) == 4


@pytest.mark.slow
def test_ray_trials_give_the_sequential_results(ray_session, mnist_dir, tmp_path):
    assert experiment.main(_args(mnist_dir, tmp_path / "seq")) == 0
    assert experiment.main(_args(mnist_dir, tmp_path / "ray", "--engine", "ray", "--workers", "2")) == 0
    seq = {grid.job_key(r): r for r in _records(tmp_path / "seq")}
    par = {grid.job_key(r): r for r in _records(tmp_path / "ray")}
    assert set(seq) == set(par) and len(seq) == 4
    for key in seq:  # same seeds, same threads per trial: the same numbers, to the last bit
        assert par[key]["test_accuracy"] == seq[key]["test_accuracy"]
        assert par[key]["final_train_loss"] == seq[key]["final_train_loss"]
    # Ray Tune kept every trial's result and weights in its own storage
    trial_dirs = list((tmp_path / "ray" / "ray").glob("grid-*/mnist-*"))
    assert len(trial_dirs) == 4 and all(list(d.glob("checkpoint_*/model.pt")) for d in trial_dirs)
    assert "engine: ray, 2 trials at once" in (tmp_path / "ray" / "results.md").read_text()


def _tune_trials(out: Path) -> dict[str, list[str]]:
    """Trial name -> the Tune experiments that ran it to a checkpoint."""
    ran: dict[str, list[str]] = {}
    for ckpt in (out / "ray").glob("grid-*/*/checkpoint_*/model.pt"):
        ran.setdefault(ckpt.parents[1].name, []).append(ckpt.parents[2].name)
    return ran


@pytest.mark.slow
def test_a_killed_ray_grid_resumes_without_rerunning_or_losing_a_trial(mnist_dir, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "exp"
    cmd = [sys.executable, "-m", "models.train.experiment",
           *_args(mnist_dir, out, "--engine", "ray", "--workers", "1", seeds=("0", "1", "2"))]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not ((out / "runs.jsonl").exists() and _records(out)) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stdout.read().decode()
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)  # no chance to clean up or write anything more
    proc.wait()
    before = {grid.job_name(r) for r in _records(out)}
    assert 1 <= len(before) < 6, "the grid should have been killed part-way"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(before)} of 6 runs already finished" in done.stdout
    records = _records(out)
    names = [grid.job_name(r) for r in records]
    assert len(names) == 6 and len(set(names)) == 6  # none lost, none duplicated
    ran = _tune_trials(out)
    experiments = sorted({e for es in ran.values() for e in es})
    assert len(experiments) == 2
    for name in before:  # finished before the kill: not run again by the second experiment
        assert ran[name] == [experiments[0]]
    for name in set(names) - before:
        assert experiments[1] in ran[name]


def _dying_trial_fn(marker_dir: Path, victim: str):
    """A trial function whose worker process dies (SIGKILL, as a lost node's would) on the
    victim's first attempt."""

    def trial_fn(job, train_split, test_split, settings):
        name = grid.job_name(job)
        marker_dir.mkdir(parents=True, exist_ok=True)
        attempt = len(list(marker_dir.glob(f"{name}.*"))) + 1
        (marker_dir / f"{name}.{attempt}").write_text(str(os.getpid()))
        if name == victim and attempt == 1:
            os.kill(os.getpid(), signal.SIGKILL)
        return grid.run_trial(job, train_split, test_split, settings)

    return trial_fn


@pytest.mark.slow
def test_a_trial_whose_worker_dies_is_run_again(ray_session, mnist_dir, tmp_path):
    out, markers = tmp_path / "exp", tmp_path / "attempts"
    fn = _dying_trial_fn(markers, "mnist-deform-none-seed1")
    args = _args(mnist_dir, out, "--engine", "ray", "--workers", "2", "--retries", "1")
    assert experiment.main(args, trial_fn=fn) == 0
    assert sorted(grid.job_name(r) for r in _records(out)) == [
        "mnist-deform-none-seed0", "mnist-deform-none-seed1", "mnist-deform-rotate-seed0", "mnist-deform-rotate-seed1"
    ]  # fmt: skip
    attempts = sorted(p.name for p in markers.iterdir())
    assert [a for a in attempts if a.startswith("mnist-deform-none-seed1")] == [
        "mnist-deform-none-seed1.1",
        "mnist-deform-none-seed1.2",
    ]
    dead, alive = (int((markers / f"mnist-deform-none-seed1.{i}").read_text()) for i in (1, 2))
    assert dead != alive  # the second attempt ran in a new worker process


def test_ctrl_c_keeps_the_finished_trials_and_a_rerun_runs_the_rest(mnist_dir, tmp_path, capsys):
    out, calls = tmp_path / "exp", []

    def interrupted_at_the_third(job, train_split, test_split, settings):
        calls.append(grid.job_name(job))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return grid.run_trial(job, train_split, test_split, settings)

    assert experiment.main(_args(mnist_dir, out), trial_fn=interrupted_at_the_third) == 130
    assert "interrupted: 2 of 4 trials finished" in capsys.readouterr().err
    assert len(_records(out)) == 2
    assert experiment.main(_args(mnist_dir, out)) == 0
    assert "2 of 4 runs already finished" in capsys.readouterr().out
    assert len({grid.job_name(r) for r in _records(out)}) == len(_records(out)) == 4
