"""Regular vs deformable conv on transformed digits: train every (arch, condition, seed),
test every model on the full test split under every condition (seeded: all models see the same
test images), and write the results.

    python -m models.train.experiment --data-dir ../shared/data --out runs/experiment --epochs 5
    python -m models.train.experiment ... --engine ray --workers 2        # 2 trials at once (Ray Tune)
    python -m models.train.experiment ... --engine ray --address auto     # on a running Ray cluster

Engines: ``local`` (default) runs the trials one after another in this process; ``ray`` runs
each as a Ray Tune trial (pip install "deformscope[grid]"), ``--workers`` at once with
``--threads`` CPU threads each, on a Ray started inside the command or on the cluster at
``--address``. Same jobs, same seeds, same training function: the same results.

Resumable: every finished trial is appended to ``runs.jsonl`` in ``--out`` the moment it ends
and skipped when the command runs again with the same settings, so rerunning after Ctrl-C, a
killed process or a lost node finishes only what is missing. A trial that raises is retried
``--retries`` times, then reported by name; the others complete. ``--report`` only rewrites the
tables and plot.

Outputs in ``--out``: ``runs.jsonl`` (one JSON object per run), ``results.csv`` (one row per
run and test condition), ``results.md`` (mean and standard deviation over seeds, same-condition
and cross-condition tables, transform parameters, data, epochs, time per run),
``accuracy_by_condition.png``, ``models/<trial>.pt`` (each trial's trained weights) and, with
Ray, ``ray/`` (Ray Tune's experiment folders: every trial's result and checkpoint).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

import torch

from models.data.mnist import DEFAULT_DATA_DIR, DataError, load
from models.data.transforms import RANGES, TEST_SEED, describe, parse_augment
from models.nets.digits import ARCHS
from models.runtime import (
    add_device_argument,
    describe_device,
    device_or_exit,
    keep_freed_memory,
    use_all_cpu_threads,
)
from models.train.grid import CONDITIONS, GridError, TrialFn, TrialSettings, job_key, run_local, run_ray, run_trial


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
        f"Command: `{settings.get('command', 'python -m models.train.experiment')}`",
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
    for key in ("train_data", "test_data", "epochs", "batch_size", "lr", "engine", "threads", "device", "machine"):
        if key in settings:
            name = "threads per trial" if key == "threads" else key.replace("_", " ")
            lines.append(f"- {name}: {settings[key]}")
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
        prog="python -m models.train.experiment",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
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
    g = p.add_argument_group("engine")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: one trial after another in this process; ray: Ray Tune trials in parallel (default: local)",
    )
    g.add_argument(
        "--workers",
        type=int,
        default=None,
        help="ray: trials at once (default: this machine's cores / --threads; on a cluster: as many as its CPUs allow)",
    )
    g.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads per trial (default: local all cores; ray cores / --workers, so the machine is not oversubscribed)",
    )
    g.add_argument(
        "--address", default=None, help="ray: join the Ray cluster at this address (ray://host:10001 or auto)"
    )
    g.add_argument("--gpus-per-trial", type=float, default=0, help="ray: GPUs per trial (fractions share a GPU)")
    g.add_argument(
        "--retries", type=int, default=2, help="attempts after a trial raises or its worker dies (default 2)"
    )
    p.add_argument("--no-download", action="store_true", help="never try to download the dataset")
    p.add_argument("--report", action="store_true", help="only rewrite the report from finished runs")
    p.add_argument("--no-progress", action="store_true", help="a line per finished trial instead of a progress bar")
    add_device_argument(p)
    return p


def _engine_shape(args: argparse.Namespace) -> tuple[int, int | None]:
    """(threads per trial, trials at once) from the flags and this machine's cores."""
    cores = os.cpu_count() or 1
    if args.engine == "local":
        return (args.threads or use_all_cpu_threads()), 1
    if args.address and args.workers is None:
        return (args.threads or 1), None  # Tune fills the cluster's CPUs
    workers = args.workers or max(1, cores // (args.threads or 1))
    threads = args.threads or max(1, cores // workers)
    return threads, workers


def main(argv: list[str] | None = None, trial_fn: TrialFn = run_trial) -> int:
    """The command; ``trial_fn`` trains and tests one job (tests pass their own)."""
    args = build_parser().parse_args(argv)
    for c in args.conditions:
        if c not in CONDITIONS:
            print(f"error: unknown condition {c!r}; choose from {', '.join(CONDITIONS)}", file=sys.stderr)
            return 2
        parse_augment(c)
    for flag in ("workers", "threads"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            print(f"error: --{flag} must be at least 1", file=sys.stderr)
            return 2
    if args.engine == "local" and (args.address or args.workers or args.gpus_per_trial):
        print("error: --address, --workers and --gpus-per-trial need --engine ray", file=sys.stderr)
        return 2
    threads, workers = _engine_shape(args)
    keep_freed_memory()  # large tensors are reused, not mapped afresh each step
    device = device_or_exit(args.device) if args.engine == "local" else torch.device("cpu")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs_file = out / "runs.jsonl"
    engine = "local" if args.engine == "local" else f"ray, {workers or 'as many as fit'} trials at once"
    settings: dict[str, Any] = {
        "command": "python -m models.train.experiment " + " ".join(argv if argv is not None else sys.argv[1:]),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "threads": threads,
        "engine": engine,
        "device": describe_device(device, threads)
        if args.engine == "local"
        else f"{threads} CPU threads per trial"
        + (f", {args.gpus_per_trial} GPU per trial" if args.gpus_per_trial else ""),
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
    finished = {job_key(r) for r in done}
    pending = [t for t in todo if job_key(t) not in finished]
    print(f"{len(todo) - len(pending)} of {len(todo)} runs already finished in {runs_file}; {len(pending)} to go")

    def on_record(record: dict[str, Any]) -> None:
        """Append the trial to the ledger at once (flushed to disk: a kill right after loses
        nothing) and refresh the report."""
        if job_key(record) in finished:  # a retried trial that had already reported
            return
        record = {**record, "settings": settings}
        with runs_file.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        finished.add(job_key(record))
        done.append(record)
        write_report(out, [r for r in done if r["dataset"] == args.dataset], settings)

    trial_settings = TrialSettings(args.batch_size, args.lr, threads, str(device))
    common = dict(
        on_record=on_record,
        models_dir=out / "models",
        retries=args.retries,
        progress=not args.no_progress,
        trial_fn=trial_fn,
    )
    try:
        if not pending:
            failures = []
        elif args.engine == "local":
            failures = run_local(pending, train_split, test_split, trial_settings, **common)
        else:
            failures = run_ray(
                pending,
                train_split,
                test_split,
                trial_settings,
                storage=out / "ray",
                workers=workers,
                address=args.address,
                gpus_per_trial=args.gpus_per_trial,
                **common,
            )
    except GridError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C in the local engine (Tune handles its own and returns)
        failures = None
    if done:
        write_report(out, done, settings)
        print(f"wrote {out / 'results.md'}, {out / 'results.csv'}, {out / 'accuracy_by_condition.png'}")
    left = [t for t in todo if job_key(t) not in finished]
    if failures is None or (left and not failures):
        print(
            f"interrupted: {len(todo) - len(left)} of {len(todo)} trials finished (kept in {runs_file}); "
            "rerun the same command to run only the rest",
            file=sys.stderr,
        )
        return 130
    if failures:
        for f in failures:
            print(f"error: trial {f.name} failed {f.attempts} times: {f.error}", file=sys.stderr)
        print(
            f"{len(failures)} of {len(todo)} trials failed; rerun the same command to retry only them", file=sys.stderr
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
