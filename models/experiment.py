"""Regular vs deformable conv on transformed digits: train every (arch, condition, seed),
test every model on the full test split under every condition (seeded: all models see the same
test images), and write the results.

    python -m models.experiment --data-dir ../shared/data --out runs/experiment --epochs 5

Resumable: every finished run is appended to ``runs.jsonl`` in ``--out`` and skipped when the
command runs again with the same settings. ``--report`` only rewrites the tables and plot.

Outputs in ``--out``: ``runs.jsonl`` (one JSON object per run), ``results.csv`` (one row per
run and test condition), ``results.md`` (mean and standard deviation over seeds, same-condition
and cross-condition tables, transform parameters, data, epochs, time per run) and
``accuracy_by_condition.png``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from models.data import DEFAULT_DATA_DIR, DataError, load
from models.nets import ARCHS
from models.runtime import add_device_argument, describe_device, device_or_exit, keep_freed_memory, use_all_cpu_threads
from models.training import TrainConfig, accuracy, train
from models.transforms import RANGES, TEST_SEED, describe, parse_augment

CONDITIONS = ("none", "rotate", "translate", "rotate+translate", "scale")


def run_key(r: dict[str, Any]) -> tuple:
    return (r["dataset"], r["arch"], r["condition"], r["seed"], r["epochs"], r["train_limit"], r["max_steps"])


def read_runs(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    runs = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                runs.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted write: that run is redone
    return runs


def mean_std(values: list[float]) -> tuple[float, float]:
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    m, s = mean_std([100 * v for v in values])
    return f"{m:.2f} ± {s:.2f}" if len(values) > 1 else f"{m:.2f}"


def write_report(out: Path, runs: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    """results.csv, results.md and accuracy_by_condition.png from the finished runs."""
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            ["dataset", "arch", "train_condition", "seed", "epochs", "test_condition", "accuracy", "train_seconds"]
        )
        for r in runs:
            for cond, acc in r["test_accuracy"].items():
                w.writerow(
                    [
                        r["dataset"],
                        r["arch"],
                        r["condition"],
                        r["seed"],
                        r["epochs"],
                        cond,
                        f"{acc:.4f}",
                        f"{r['train_seconds']:.1f}",
                    ]
                )

    archs = [a for a in ("regular", "deform", "deform2") if any(r["arch"] == a for r in runs)]
    conds = [c for c in CONDITIONS if any(r["condition"] == c for r in runs)]
    datasets = sorted({r["dataset"] for r in runs})
    names = {"regular": "Regular conv", "deform": "Deformable conv (DCNv1)", "deform2": "Modulated deformable (DCNv2)"}
    lines = ["# Experiment results", ""]
    lines += [
        f"Command: `{settings.get('command', 'python -m models.experiment')}`",
        "",
        "Accuracy (%) on the full test split, mean ± standard deviation over seeds "
        f"({', '.join(str(s) for s in sorted({r['seed'] for r in runs}))}).",
        "",
    ]
    for ds in datasets:
        dr = [r for r in runs if r["dataset"] == ds]
        lines += [f"## {ds}: trained and tested under the same condition", ""]
        lines += ["| Model | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
        for a in archs:
            cells = [fmt([r["test_accuracy"][c] for r in dr if r["arch"] == a and r["condition"] == c]) for c in conds]
            lines.append(f"| {names[a]} | " + " | ".join(cells) + " |")
        lines += ["", f"## {ds}: trained on plain digits, tested transformed (cross-condition)", ""]
        lines += ["| Model | " + " | ".join(f"test {c}" for c in conds) + " |", "|---|" + "---|" * len(conds)]
        for a in archs:
            cells = [
                fmt(
                    [
                        r["test_accuracy"][c]
                        for r in dr
                        if r["arch"] == a and r["condition"] == "none" and c in r["test_accuracy"]
                    ]
                )
                for c in conds
            ]
            lines.append(f"| {names[a]} | " + " | ".join(cells) + " |")
        lines += ["", f"## {ds}: every train condition (rows) x test condition (columns)", ""]
        lines += ["| Model, trained on | " + " | ".join(conds) + " |", "|---|" + "---|" * len(conds)]
        for a in archs:
            for tc in conds:
                sel = [r for r in dr if r["arch"] == a and r["condition"] == tc]
                if sel:
                    cells = [fmt([r["test_accuracy"][c] for r in sel if c in r["test_accuracy"]]) for c in conds]
                    lines.append(f"| {a}, {tc} | " + " | ".join(cells) + " |")
        times = {a: [r["train_seconds"] for r in dr if r["arch"] == a] for a in archs}
        lines += [
            "",
            "Training time per run (s, mean over runs): "
            + ", ".join(f"{a} {sum(t) / len(t):.0f}" for a, t in times.items() if t),
            "",
        ]
    lines += ["## Setup", ""]
    lines += [
        "- Transforms (drawn uniformly per image, train and test): "
        + ", ".join(describe(k) for k in RANGES)
        + "; combined conditions draw each part independently."
    ]
    lines += [f"- Test sets: the full test split transformed with seed {TEST_SEED}, identical for every model."]
    for key in ("train_data", "test_data", "epochs", "batch_size", "lr", "threads", "device", "machine"):
        if key in settings:
            lines.append(f"- {key.replace('_', ' ')}: {settings[key]}")
    lines.append(f"- Runs finished: {len(runs)}")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    _plot(out / "accuracy_by_condition.png", runs, archs, conds, names)


def _plot(path: Path, runs: list[dict[str, Any]], archs: list[str], conds: list[str], names: dict[str, str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = sorted({r["dataset"] for r in runs})
    fig, axes = plt.subplots(1, len(datasets), figsize=(7 * len(datasets), 4.2), squeeze=False)
    width = 0.8 / max(len(archs), 1)
    colours = {"regular": "#7f7f7f", "deform": "#d62728", "deform2": "#1f77b4"}
    for ax, ds in zip(axes[0], datasets, strict=True):
        for i, a in enumerate(archs):
            means, stds = [], []
            for c in conds:
                vals = [
                    100 * r["test_accuracy"][c]
                    for r in runs
                    if r["dataset"] == ds and r["arch"] == a and r["condition"] == c
                ]
                m, s = mean_std(vals) if vals else (float("nan"), 0.0)
                means.append(m)
                stds.append(s)
            xs = [j + (i - (len(archs) - 1) / 2) * width for j in range(len(conds))]
            ax.bar(xs, means, width, yerr=stds, capsize=3, label=names[a], color=colours[a])
        ax.set_xticks(range(len(conds)), conds)
        ax.set_ylabel("test accuracy (%), same condition as training")
        ax.set_title(f"{ds}: accuracy by condition (mean ± sd over seeds)")
        # The axis spans only what is drawn (same-condition accuracies), so small gaps show.
        lo = min((100 * r["test_accuracy"][r["condition"]] for r in runs if r["dataset"] == ds), default=90)
        ax.set_ylim(max(0.0, math.floor(lo) - 1), 100)
        ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(path)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m models.experiment", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--dataset", choices=("mnist", "cifar10"), default="mnist")
    p.add_argument(
        "--data-dir", default=DEFAULT_DATA_DIR, help="folder in torchvision's layout (MNIST/raw or cifar-10-batches-py)"
    )
    p.add_argument("--out", default="runs/experiment", help="results folder (resumes from runs.jsonl there)")
    p.add_argument("--archs", nargs="+", default=["regular", "deform", "deform2"], choices=ARCHS)
    p.add_argument(
        "--conditions", nargs="+", default=list(CONDITIONS), help=f"train conditions, from {', '.join(CONDITIONS)}"
    )
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--train-limit", type=int, default=None, help="use the first N training images")
    p.add_argument("--test-limit", type=int, default=None, help="use the first N test images (smoke runs only)")
    p.add_argument("--max-steps", type=int, default=None, help="stop each run after N steps (smoke runs only)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")
    p.add_argument("--no-download", action="store_true", help="never try to download the dataset")
    p.add_argument("--report", action="store_true", help="only rewrite the report from finished runs")
    p.add_argument("--no-progress", action="store_true")
    add_device_argument(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for c in args.conditions:
        if c not in CONDITIONS:
            print(f"error: unknown condition {c!r}; choose from {', '.join(CONDITIONS)}", file=sys.stderr)
            return 2
        parse_augment(c)
    if args.threads:
        torch.set_num_threads(args.threads)
        threads = args.threads
    else:
        threads = use_all_cpu_threads()
    keep_freed_memory()  # large tensors are reused, not mapped afresh each step
    device = device_or_exit(args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "runs.jsonl"
    settings: dict[str, Any] = {
        "command": "python -m models.experiment " + " ".join(argv if argv is not None else sys.argv[1:]),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": threads,
        "device": describe_device(device, threads),
        "machine": f"{platform.machine()}, torch {torch.__version__}",
    }
    done = read_runs(runs_file)
    if args.report:
        if not done:
            print(f"error: no finished runs in {runs_file}", file=sys.stderr)
            return 1
        settings.update(done[-1].get("settings", {}))
        write_report(out, done, settings)
        print(f"wrote {out / 'results.md'}")
        return 0
    try:
        download = not args.no_download
        train_split = load(args.dataset, args.data_dir, True, download).subset(args.train_limit)
        test_split = load(args.dataset, args.data_dir, False, download).subset(args.test_limit)
    except DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    settings.update({"train_data": train_split.description, "test_data": test_split.description})
    todo = [
        {
            "dataset": args.dataset,
            "arch": a,
            "condition": c,
            "seed": s,
            "epochs": args.epochs,
            "train_limit": args.train_limit,
            "max_steps": args.max_steps,
        }
        for s in args.seeds
        for c in args.conditions
        for a in args.archs
    ]
    finished = {run_key(r) for r in done}
    pending = [t for t in todo if run_key(t) not in finished]
    print(f"{len(todo) - len(pending)} of {len(todo)} runs already finished in {runs_file}; {len(pending)} to go")
    bar = tqdm(pending, desc="runs", unit="run", disable=args.no_progress)
    for job in bar:
        bar.set_postfix(arch=job["arch"], condition=job["condition"], seed=job["seed"])
        cfg = TrainConfig(
            arch=job["arch"],
            augment=job["condition"],
            epochs=args.epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=job["seed"],
            max_steps=args.max_steps,
        )
        t0 = time.perf_counter()
        model, log = train(cfg, train_split, progress=False, device=device)
        train_seconds = time.perf_counter() - t0
        accs = {c: accuracy(model, test_split, c) for c in CONDITIONS}
        record = {
            **job,
            "test_accuracy": accs,
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - t0 - train_seconds,
            "final_train_loss": log["epochs"][-1]["loss"] if log["epochs"] else None,
            "settings": settings,
        }
        with runs_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
        done.append(record)
        write_report(out, [r for r in done if r["dataset"] == args.dataset], settings)
    bar.close()
    if done:
        write_report(out, done, settings)
        print(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'accuracy_by_condition.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
