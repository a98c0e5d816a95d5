"""The experiment command end to end on a tiny budget, MNIST and a generated CIFAR set."""

from __future__ import annotations

import csv
import json
import pickle

import numpy as np
import pytest

from models.train import experiment


def _tiny_args(data_dir, out, dataset="mnist"):
    return [
        "--dataset", dataset, "--data-dir", str(data_dir), "--out", str(out),
        "--archs", "regular", "deform", "--conditions", "none", "rotate", "--seeds", "0", "1",
        "--epochs", "1", "--max-steps", "2", "--train-limit", "64", "--test-limit", "50",
        "--batch-size", "32", "--no-progress",
    ]  # fmt: skip


@pytest.mark.slow
def test_tiny_mnist_grid_runs_resumes_and_reports(mnist_dir, tmp_path, capsys):
    out = tmp_path / "exp"
    assert experiment.main(_tiny_args(mnist_dir, out)) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 8  # 2 archs x 2 conditions x 2 seeds
    assert {(r["arch"], r["condition"], r["seed"]) for r in runs} == {
        (a, c, s) for a in ("regular", "deform") for c in ("none", "rotate") for s in (0, 1)
    }
    for r in runs:
        assert set(r["test_accuracy"]) == set(experiment.CONDITIONS)  # cross-condition
        assert all(0.0 <= v <= 1.0 for v in r["test_accuracy"].values())
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 8 * len(experiment.CONDITIONS)
    md = (out / "results.md").read_text()
    assert "| Regular conv |" in md and "| Deformable conv (DCNv1) |" in md and " ± " in md
    assert "rotate U(-60, 60) deg" in md and "trained on plain digits, tested transformed" in md
    assert (out / "accuracy_by_condition.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # rerun: nothing is redone
    capsys.readouterr()
    assert experiment.main(_tiny_args(mnist_dir, out)) == 0
    assert "8 of 8 runs already finished" in capsys.readouterr().out
    assert len((out / "runs.jsonl").read_text().splitlines()) == 8
    # an interrupted write leaves half a line: that run alone is redone
    lines = (out / "runs.jsonl").read_text().splitlines()
    (out / "runs.jsonl").write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:20])
    assert experiment.main(_tiny_args(mnist_dir, out)) == 0
    assert "7 of 8 runs already finished" in capsys.readouterr().out


def _write_fake_cifar(root, n_train=40, n_test=20):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)

    def batch(n):
        labels = rng.integers(0, 10, n).tolist()
        return {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": labels}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_train // 5)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_test)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}))


@pytest.mark.slow
def test_tiny_generated_cifar_grid(tmp_path):
    _write_fake_cifar(tmp_path / "data")
    out = tmp_path / "exp"
    args = _tiny_args(tmp_path / "data", out, dataset="cifar10")
    assert experiment.main(args) == 0
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == 8 and all(r["dataset"] == "cifar10" for r in runs)
    assert "## cifar10" in (out / "results.md").read_text()


def test_report_only_and_errors(tmp_path, capsys):
    assert experiment.main(["--report", "--out", str(tmp_path / "none")]) == 1
    assert "no finished runs" in capsys.readouterr().err
    assert experiment.main(["--conditions", "sideways", "--out", str(tmp_path)]) == 2
    args = ["--data-dir", str(tmp_path / "missing"), "--dataset", "cifar10", "--out", str(tmp_path / "o")]
    assert experiment.main([*args, "--no-download"]) == 1
    assert "CIFAR-10 is not in" in capsys.readouterr().err
