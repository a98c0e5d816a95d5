"""The experiment grid's engines: each (dataset, arch, condition, seed) trial is trained and
tested either one after another in this process (``local``) or as a Ray Tune trial (``ray``):
a grid search over the same jobs, run by the same :func:`run_trial`, so a trial's record is the
same whichever engine ran it.

A trial is a pure function of its job and the data: training is seeded by the job's seed and
the test images are transformed with a fixed seed. (Equal to the last bit only at an equal
number of CPU threads per trial: a float sum split over more threads adds in another order.)

Both engines hand every finished trial to ``on_record`` at once (the experiment appends it to
its ``runs.jsonl`` ledger, which is what makes a rerun finish only what is missing), save the
trained weights to ``models_dir/<trial name>.pt``, retry a trial that raises up to ``retries``
times and return the trials that kept failing, by name; the others complete.

Ray is optional (``pip install "deformscope[grid]"``); it is imported only by :func:`run_ray`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from models.checkpoint import save_checkpoint
from models.data.mnist import Split
from models.runtime import keep_freed_memory
from models.train.loop import TrainConfig, accuracy, config_dict, train

#: ``(record, model)`` of one trained and tested job
TrialFn = Callable[[dict[str, Any], Split, Split, "TrialSettings"], tuple[dict[str, Any], torch.nn.Module]]
OnRecord = Callable[[dict[str, Any]], None]

#: the test (and train) conditions of the experiment: every model is tested under each
CONDITIONS = ("none", "rotate", "translate", "rotate+translate", "scale")

#: the fields of a job; together they name a run in ``runs.jsonl``
JOB_FIELDS = ("dataset", "arch", "condition", "seed", "epochs", "train_limit", "max_steps")


class GridError(RuntimeError):
    """The grid could not run at all (Ray missing, a cluster not reachable); says why."""


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of one grid shares besides the data."""

    batch_size: int = 128
    lr: float = 3e-3
    threads: int = 1  # CPU threads of one trial
    device: str = "cpu"


@dataclass(frozen=True)
class Failure:
    """A trial that raised on every attempt."""

    name: str
    attempts: int
    error: str  # the exception's last line


def job_key(job: dict[str, Any]) -> tuple:
    return tuple(job[f] for f in JOB_FIELDS)


def job_name(job: dict[str, Any]) -> str:
    """A file-name-safe name, e.g. ``mnist-deform-rotate+translate-seed1``."""
    return f"{job['dataset']}-{job['arch']}-{job['condition']}-seed{job['seed']}"


def run_trial(
    job: dict[str, Any], train_split: Split, test_split: Split, settings: TrialSettings
) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train ``job``'s model on ``train_split`` and test it on ``test_split`` under every
    condition; returns the record (the job's fields, ``test_accuracy`` per condition, times,
    final training loss) and the trained model."""
    cfg = TrainConfig(
        arch=job["arch"],
        augment=job["condition"],
        epochs=job["epochs"],
        batch_size=settings.batch_size,
        lr=settings.lr,
        seed=job["seed"],
        max_steps=job["max_steps"],
    )
    t0 = time.perf_counter()
    model, log = train(cfg, train_split, progress=False, device=settings.device)
    train_seconds = time.perf_counter() - t0
    accs = {c: accuracy(model, test_split, c) for c in CONDITIONS}
    record = {
        **{f: job[f] for f in JOB_FIELDS},
        "test_accuracy": accs,
        "train_seconds": train_seconds,
        "eval_seconds": time.perf_counter() - t0 - train_seconds,
        "final_train_loss": log["epochs"][-1]["loss"] if log["epochs"] else None,
        "train": config_dict(cfg),
    }
    return record, model


def save_trial_model(model: torch.nn.Module, path: Path, record: dict[str, Any]) -> None:
    """The trained weights as a deformscope checkpoint (``python -m models.train.evaluate`` reads it)."""
    meta = {"train": record["train"], "test_accuracy": record["test_accuracy"]["none"], "grid_record": record}
    save_checkpoint(model, path, model.config(), meta)  # the config that rebuilds the net


def _error_line(exc: BaseException) -> str:
    """``Type: message`` of the exception at the root (Ray wraps a trial's own in its task error)."""
    while isinstance(getattr(exc, "cause", None), BaseException):
        exc = exc.cause  # type: ignore[attr-defined]
    lines = traceback.format_exception_only(type(exc), exc)
    return lines[-1].strip() if lines else repr(exc)


class _Progress:
    """Done / running / pending and the best accuracy so far: a tqdm bar, or one printed line
    per finished trial when the bar is off (logs)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.total, self.done, self.failed, self.running = total, 0, 0, 0
        self.best: tuple[float, str] | None = None
        self.enabled = enabled
        self.bar = tqdm(total=total, desc="trials", unit="trial", disable=not enabled)

    def _postfix(self) -> None:
        pending = self.total - self.done - self.failed - self.running
        post = {"running": self.running, "pending": pending}
        if self.failed:
            post["failed"] = self.failed
        if self.best:
            post["best"] = f"{self.best[1]} {self.best[0]:.2%}"
        self.bar.set_postfix(post)

    def started(self) -> None:
        self.running += 1
        self._postfix()

    def finished(self, record: dict[str, Any]) -> None:
        self.running = max(0, self.running - 1)
        self.done += 1
        acc = record["test_accuracy"][record["condition"]]
        name = job_name(record)
        if self.best is None or acc > self.best[0]:
            self.best = (acc, name)
        self.bar.update(1)
        self._postfix()
        if not self.enabled:
            print(
                f"trial {self.done + self.failed}/{self.total} done: {name}: {acc:.2%} on its own condition "
                f"({record['train_seconds']:.0f} s training)",
                flush=True,
            )

    def errored(self, name: str, error: str, final: bool) -> None:
        self.running = max(0, self.running - 1)
        if final:
            self.failed += 1
        self._postfix()
        what = "failed" if final else "failed, retrying"
        tqdm.write(f"trial {name} {what}: {error}")

    def close(self) -> None:
        self.bar.close()


def run_local(
    jobs: list[dict[str, Any]],
    train_split: Split,
    test_split: Split,
    settings: TrialSettings,
    on_record: OnRecord,
    models_dir: Path,
    retries: int = 0,
    progress: bool = True,
    trial_fn: TrialFn = run_trial,
) -> list[Failure]:
    """Every job in turn, in this process, with ``settings.threads`` CPU threads."""
    torch.set_num_threads(settings.threads)
    bar = _Progress(len(jobs), progress)
    failures = []
    for job in jobs:
        name = job_name(job)
        for attempt in range(1, retries + 2):
            bar.started()
            try:
                record, model = trial_fn(job, train_split, test_split, settings)
            except Exception as exc:  # one trial's failure must not stop the grid
                error = _error_line(exc)
                bar.errored(name, error, final=attempt > retries)
                if attempt > retries:
                    failures.append(Failure(name, attempt, error))
                continue
            save_trial_model(model, models_dir / f"{name}.pt", record)
            on_record(record)
            bar.finished(record)
            break
    bar.close()
    return failures


def _tune_trial(
    config: dict[str, Any], train_split: Split, test_split: Split, settings: TrialSettings, trial_fn: TrialFn
) -> None:
    """One Ray Tune trial (runs in a Ray worker): train, test, report the record and the weights."""
    from ray import tune

    torch.set_num_threads(settings.threads)
    keep_freed_memory()  # as the local engine's process does: without it every large block is mapped afresh
    if settings.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("the trial was given a GPU by Ray but torch sees none (CUDA_VISIBLE_DEVICES?)")
    record, model = trial_fn(config["job"], train_split, test_split, settings)
    with tempfile.TemporaryDirectory() as folder:
        save_trial_model(model, Path(folder) / "model.pt", record)
        metrics = {"record": json.dumps(record), "accuracy": record["test_accuracy"][record["condition"]]}
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def _ledger_callback(on_record: OnRecord, models_dir: Path, bar: _Progress, retries: int):
    from ray import tune

    class Ledger(tune.Callback):
        """In the driver: a trial's record reaches ``on_record`` (the ledger) the moment the
        trial reports, and its weights are copied next to the other trials'."""

        def __init__(self) -> None:
            self.attempts: dict[str, int] = {}

        def on_trial_start(self, iteration, trials, trial, **info) -> None:  # noqa: ANN001
            self.attempts[trial.trial_id] = self.attempts.get(trial.trial_id, 0) + 1
            bar.started()

        def on_trial_result(self, iteration, trials, trial, result, **info) -> None:  # noqa: ANN001
            record = json.loads(result["record"])
            on_record(record)
            bar.finished(record)

        def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:  # noqa: ANN001
            source = Path(checkpoint.path) / "model.pt"
            if source.exists():  # storage on this machine; a cloud URI keeps the weights there
                models_dir.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, models_dir / f"{job_name(trial.config['job'])}.pt")

        def on_trial_error(self, iteration, trials, trial, **info) -> None:  # noqa: ANN001
            final = self.attempts.get(trial.trial_id, 1) > retries
            bar.errored(job_name(trial.config["job"]), _tune_error(trial), final)

        def on_trial_recover(self, iteration, trials, trial, **info) -> None:  # noqa: ANN001
            bar.errored(job_name(trial.config["job"]), _tune_error(trial), final=False)

    return Ledger()


def _tune_error(trial: Any) -> str:
    """The last line of a Tune trial's error file, or a generic sentence."""
    path = getattr(trial, "error_file", None) or ""
    try:
        lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip()]
    except OSError:
        return "the trial's worker died or raised (see Ray's logs)"
    return lines[-1].strip() if lines else "unknown error"


def _init_ray(address: str | None, cpus: int, gpus: int | None) -> None:
    try:
        import ray
    except ImportError:
        raise GridError(
            'the Ray engine needs Ray Tune: pip install "deformscope[grid]" (or pip install "ray[tune]"); '
            "--engine local runs the grid without it"
        ) from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # never phone home
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    # Tune's own table is replaced by our progress line.
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # Tune runs a trial in a thread of its worker, and glibc gives each thread its own heap, which
    # ignores keep_freed_memory: a batch's large tensors were mapped afresh at every call and the
    # evaluation took twice as long as in a plain process. One heap for all threads fixes it.
    worker_env = {"MALLOC_ARENA_MAX": "1"}
    models_pkg = Path(__file__).resolve().parent
    if ray.is_initialized():
        return
    try:
        if address:
            # The workers of a cluster import this package from a copy Ray uploads; torch and
            # torchvision must be installed on every node.
            runtime_env = {"py_modules": [str(models_pkg)], "env_vars": worker_env}
            ray.init(address=address, runtime_env=runtime_env, logging_level="ERROR")
        else:
            # Local workers are this machine's processes: they find the package through the
            # inherited PYTHONPATH, whether it is installed or a checkout.
            for key, value in worker_env.items():  # inherited by the local workers
                os.environ.setdefault(key, value)
            root = str(models_pkg.parent)
            path = os.environ.get("PYTHONPATH", "")
            if root not in path.split(os.pathsep):
                os.environ["PYTHONPATH"] = root + (os.pathsep + path if path else "")
            ray.init(
                num_cpus=cpus,
                num_gpus=gpus,
                include_dashboard=False,
                logging_level="ERROR",
                log_to_driver=False,
            )
    except Exception as exc:  # ConnectionError, a bad address, ...
        raise GridError(f"could not start or join Ray ({address or 'local'}): {_error_line(exc)}") from None


def _experiment_name(storage: Path) -> str:
    """``grid-<date>-<time>``, a new one per call (a rerun's trials sit beside the first run's)."""
    base = time.strftime("grid-%Y%m%d-%H%M%S")
    name, n = base, 1
    while (storage / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def run_ray(
    jobs: list[dict[str, Any]],
    train_split: Split,
    test_split: Split,
    settings: TrialSettings,
    on_record: OnRecord,
    models_dir: Path,
    storage: Path,
    workers: int,
    address: str | None = None,
    gpus_per_trial: float = 0,
    retries: int = 0,
    progress: bool = True,
    trial_fn: TrialFn = run_trial,
) -> list[Failure]:
    """Every job as a Ray Tune trial, ``workers`` at once (``settings.threads`` CPUs each), on a
    local Ray started here or on the cluster at ``address``. Tune keeps each trial's result and
    weights under ``storage`` (a new experiment folder per call); the data is put in Ray's
    object store once, so cluster nodes need no copy of it."""
    _init_ray(address, cpus=workers * settings.threads, gpus=None if address else int(gpus_per_trial * workers))
    from ray import tune

    if gpus_per_trial:
        settings = TrialSettings(settings.batch_size, settings.lr, settings.threads, "cuda")
    trainable = tune.with_parameters(
        _tune_trial, train_split=train_split, test_split=test_split, settings=settings, trial_fn=trial_fn
    )
    trainable = tune.with_resources(trainable, {"cpu": settings.threads, "gpu": gpus_per_trial})
    bar = _Progress(len(jobs), progress)
    tuner = tune.Tuner(
        trainable,
        param_space={"job": tune.grid_search(jobs)},
        tune_config=tune.TuneConfig(
            max_concurrent_trials=workers,
            reuse_actors=True,  # a worker imports torch once, not once per trial
            trial_name_creator=lambda t: job_name(t.config["job"]),
            trial_dirname_creator=lambda t: job_name(t.config["job"]),
        ),
        run_config=tune.RunConfig(
            name=_experiment_name(Path(storage)),
            storage_path=str(Path(storage).resolve()),
            failure_config=tune.FailureConfig(max_failures=retries),
            callbacks=[_ledger_callback(on_record, models_dir, bar, retries)],
            verbose=0,
        ),
    )
    try:
        results = tuner.fit()
    finally:
        bar.close()
    failures = []
    for result in results:
        if result.error is not None:
            failures.append(Failure(job_name(result.config["job"]), retries + 1, _error_line(result.error)))
    return failures
