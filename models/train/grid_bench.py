"""Benchmark: the experiment grid, one trial after another vs Ray Tune trials in parallel.

    python -m models.train.grid_bench --data-dir ../shared/data [--epochs 1] [--seeds 0] [--workers 2]

Runs the same grid twice as the command a user types, each in a fresh folder and a fresh
process: ``--engine local`` (one trial at a time with every core) and ``--engine ray --workers
N --threads cores/N`` (N trials at once). Prints both wall times and their ratio (ideal: about
N on N free cores), and Ray's fixed cost measured apart: starting a local Ray and running one
trial that does nothing but import torch, then shutting down. The two grids' accuracies are
compared too (equal only at equal threads per trial, so here they may differ in the last digits).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from models.data.mnist import DEFAULT_DATA_DIR

ROOT = Path(__file__).resolve().parents[1]

_RAY_FIXED_COST = """
import os, time
t0 = time.perf_counter()
from models.train.grid import _init_ray
_init_ray(None, cpus=1, gpus=None)
from ray import tune
def trial(config):
    import torch  # what every real trial's worker pays
    tune.report({"ok": 1})
tune.Tuner(trial, run_config=tune.RunConfig(storage_path=os.environ["STORE"], verbose=0)).fit()
import ray
ray.shutdown()
print(time.perf_counter() - t0)
"""


def _run(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m models.train.grid_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data-dir", default=DEFAULT_DATA_DIR)
    p.add_argument("--archs", nargs="+", default=["regular", "deform"])
    p.add_argument("--conditions", nargs="+", default=["none", "rotate"])
    p.add_argument("--seeds", nargs="+", default=["0"])
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args(argv)
    cores = os.cpu_count() or 1
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    trials = len(args.archs) * len(args.conditions) * len(args.seeds)
    grid = ["--data-dir", args.data_dir, "--archs", *args.archs, "--conditions", *args.conditions,
            "--seeds", *args.seeds, "--epochs", str(args.epochs), "--no-progress"]  # fmt: skip
    print(f"grid: {trials} trials ({', '.join(args.archs)} x {', '.join(args.conditions)} x seeds "
          f"{', '.join(args.seeds)}), {args.epochs} epoch(s) each, {cores} cores")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        base = [sys.executable, "-m", "models.train.experiment", *grid]
        seq = _run([*base, "--out", f"{tmp}/local", "--engine", "local"], env)
        print(f"  local, 1 trial at a time x {cores} threads:  {seq:7.1f} s")
        threads = max(1, cores // args.workers)
        ray_cmd = [*base, "--out", f"{tmp}/ray", "--engine", "ray", "--workers", str(args.workers)]
        par = _run([*ray_cmd, "--threads", str(threads)], env)
        print(f"  ray, {args.workers} trials at once x {threads} threads: {par:7.1f} s")
        fixed = float(
            subprocess.run(
                [sys.executable, "-c", _RAY_FIXED_COST],
                cwd=ROOT,
                env={**env, "STORE": f"{tmp}/fixed"},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()[-1]
        )
        print(f"  Ray's fixed cost (start, one trial importing torch, shut down): {fixed:.1f} s")
        print(f"  ratio local / ray: {seq / par:.2f}x (ideal about {min(args.workers, cores)}x on free cores)")
        runs = {
            name: {
                (r["arch"], r["condition"], r["seed"]): r["test_accuracy"][r["condition"]]
                for r in map(json.loads, Path(f"{tmp}/{name}/runs.jsonl").read_text().splitlines())
            }
            for name in ("local", "ray")
        }
        diff = max(abs(runs["local"][k] - runs["ray"][k]) for k in runs["local"])
        print(f"  largest accuracy difference between the engines: {100 * diff:.2f} points (threads per trial differ)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
