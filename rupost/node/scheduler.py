"""The scheduler run by `rupost scheduler` (systemd/rupost-scheduler.service): periodic jobs of
the management core.

A job is ``fn(app)`` registered with ``register_job(name, interval, fn)``. The builtin jobs are
the statistics parser (``stats``) and the self-diagnosis checks (``checks``); other parts of the
core add theirs in ``load_jobs`` (one line each), e.g. the mail queue evacuator or the
distribution-lists updater. Jobs run one after another in the scheduler's process; a job that
raises is logged and retried at its next interval; a job that starts failing, and one that
recovers, is written to the monitor log once.
"""
from __future__ import annotations

import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from rupost.errors import RuPostError, ValidationError

MIN_INTERVAL = 1.0


@dataclass
class Job:
    name: str
    interval: float
    fn: Callable
    description: str = ""
    runs: int = 0
    failures: int = 0
    last_error: str = ""
    last_run: float | None = None
    last_duration: float | None = None
    next_run: float = field(default=0.0)


JOBS: dict[str, Job] = {}


def register_job(name: str, interval: float, fn: Callable, description: str = "") -> Job:
    """Add (or replace) a periodic job: ``fn(app)`` every ``interval`` seconds."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValidationError(f"invalid job name {name!r}: letters, digits, '-' and '_'")
    if interval < MIN_INTERVAL:
        raise ValidationError(f"job {name}: interval {interval} s is below {MIN_INTERVAL} s")
    JOBS[name] = Job(name, float(interval), fn, description or (fn.__doc__ or "").strip().split("\n")[0])
    return JOBS[name]


def _stats(app):
    """Read the postfix and dovecot logs into the statistics."""
    return app.stats.ingest()


def _checks(app):
    """Run every self-diagnosis check; state changes go to the monitor log."""
    return app.checks.run(record=True)


def load_jobs() -> dict[str, Job]:
    """The builtin jobs; other parts of the core register theirs here."""
    if "stats" not in JOBS:
        register_job("stats", 60, _stats)
    if "checks" not in JOBS:
        register_job("checks", 60, _checks)
    if "quota-usage" not in JOBS:
        register_job("quota-usage", 900, _quota_usage)
    if not SYSTEMD_TIMERS.exists():
        # where systemd is not PID 1 its timers (rupost-mailqueue-evacuator.timer,
        # rupost-distribution-lists-updater.timer) do not run: the scheduler runs their jobs
        if "mailqueue-evacuator" not in JOBS:
            register_job("mailqueue-evacuator", 60, _evacuate)
        if "distribution-lists-updater" not in JOBS:
            register_job("distribution-lists-updater", 900, _update_lists)
    return JOBS


SYSTEMD_TIMERS = Path("/run/systemd/system")


def _evacuate(app):
    return app.evacuation.evacuate()


def _update_lists(app):
    from rupost.services.directories import scheduled_sync
    from rupost.services.distribution_lists import scheduled_update

    scheduled_sync(app)
    return scheduled_update(app)


def _quota_usage(app):
    """Measure every mailbox's storage use (dashboard quota tiles) when the last measurement is stale."""
    from rupost.errors import ConflictError

    service = app.quota_usage
    last = service.last_run()
    if not service.stale(last):
        return {"measured_at": last["measured_at"], "skipped": "still fresh"}
    try:
        return service.measure()
    except ConflictError:  # another node of the cluster measures right now
        return {"skipped": "a measurement runs elsewhere"}


class Scheduler:
    def __init__(self, app, only: list[str] | None = None, intervals: dict[str, float] | None = None):
        self.app = app
        jobs = load_jobs()
        unknown = [n for n in list(only or []) + list(intervals or {}) if n not in jobs]
        if unknown:
            raise ValidationError(f"unknown job(s): {', '.join(sorted(set(unknown)))} (jobs: {', '.join(jobs)})")
        self.jobs = [jobs[n] for n in (only or jobs)]
        for name, seconds in (intervals or {}).items():
            if seconds < MIN_INTERVAL:
                raise ValidationError(f"job {name}: interval {seconds} s is below {MIN_INTERVAL} s")
            jobs[name].interval = float(seconds)
        self._stop = False

    def stop(self, *_):
        self._stop = True

    def run_job(self, job: Job) -> bool:
        start = time.monotonic()
        ok, error = True, ""
        try:
            job.fn(self.app)
        except RuPostError as exc:
            ok, error = False, str(exc)
        except Exception as exc:  # a broken job must not stop the others
            ok, error = False, f"{exc.__class__.__name__}: {exc}"
            traceback.print_exc()
        job.runs += 1
        job.last_run, job.last_duration = time.time(), time.monotonic() - start
        if ok and job.last_error:
            self._log(job.name, "ok", f"job {job.name} works again")
        elif not ok and error != job.last_error:
            self._log(job.name, "failed", f"job {job.name} failed: {error}")
        if not ok:
            job.failures += 1
        job.last_error = error
        return ok

    def _log(self, name: str, state: str, message: str) -> None:
        try:
            self.app.checks.log(f"scheduler:{name}", state, message)
        except OSError:
            pass

    def run_once(self) -> dict[str, bool]:
        return {job.name: self.run_job(job) for job in self.jobs}

    def run_forever(self, duration: float | None = None) -> None:
        """Run the jobs on their intervals until SIGTERM/SIGINT (or for `duration` seconds)."""
        try:
            signal.signal(signal.SIGTERM, self.stop)
            signal.signal(signal.SIGINT, self.stop)
        except ValueError:
            pass  # not the main thread (tests): stop() is called directly
        self._log("scheduler", "started", "jobs: " + ", ".join(f"{j.name} every {j.interval:g}s" for j in self.jobs))
        deadline = None if duration is None else time.monotonic() + duration
        now = time.monotonic()
        for job in self.jobs:
            job.next_run = now
        while not self._stop:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            for job in sorted(self.jobs, key=lambda j: j.next_run):
                if self._stop:
                    break
                if job.next_run <= time.monotonic():
                    self.run_job(job)
                    # the next run is an interval after this one started, never in a burst
                    job.next_run = max(job.next_run + job.interval, time.monotonic())
            wake = min(j.next_run for j in self.jobs)
            while not self._stop and time.monotonic() < wake and (deadline is None or time.monotonic() < deadline):
                time.sleep(min(0.2, max(0.0, wake - time.monotonic())))
        self._log("scheduler", "stopped", "signal" if self._stop else "duration reached")

    def describe(self) -> list[dict]:
        return [{"job": j.name, "interval": j.interval, "description": j.description, "runs": j.runs,
                 "failures": j.failures, "last_error": j.last_error} for j in self.jobs]
