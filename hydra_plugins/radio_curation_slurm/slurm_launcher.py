"""``hydra/launcher=slurm_cpu`` and ``slurm_gpu``: hydra-submitit's SLURM launcher, reporting like the entry points.

- A job stopped by a user error (a bad override value, a wrong run ID) has its one-line message printed in
  the launching terminal, which exits with status 2 once every job of the sweep has ended, as the same
  command without ``-m`` would; the job's log on the cluster has it too.
- submitit follows jobs with ``sacct``; where SLURM accounting is disabled (sacct fails), it follows
  them with ``squeue`` instead, saying so once, rather than warning at every poll that job states are
  unknown (and never noticing a job that ended without a result, such as a cancelled one).

Hydra takes launchers only from the ``hydra_plugins`` package, hence this module's place.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from submitit.slurm.slurm import SlurmInfoWatcher, SlurmJob

from radio_curation.errors import RadioCurationError, UserErrorExit, user_cause

log = logging.getLogger(__name__)


class _SqueueWatcher(SlurmInfoWatcher):
    """Job states from ``squeue``, for clusters whose ``sacct`` fails (accounting storage disabled).

    ``squeue --states=all`` lists a user's jobs until ``MinJobAge`` after they end; a job's result file
    (what submitit waits for first) is there by then.
    """

    def _make_command(self) -> list[str] | None:
        if super()._make_command() is None:
            return None
        return ["squeue", "--me", "--states=all", "--noheader", "--format=%i|%T|%N"]

    def read_info(self, string: bytes | str) -> dict[str, dict[str, str]]:
        text = string.decode() if isinstance(string, bytes) else string
        return super().read_info("JobID|State|NodeList\n" + text)


@contextmanager
def _job_states() -> Iterator[None]:
    """submitit's job states from sacct, or from squeue where sacct cannot answer (said once)."""
    try:
        probe = subprocess.run(["sacct", "--noheader", "--jobs", "1"], capture_output=True, text=True)
        reason = (probe.stderr.strip() or f"exit status {probe.returncode}") if probe.returncode else ""
    except FileNotFoundError:
        reason = "no sacct command"
    if not reason:
        yield
        return
    log.warning("sacct cannot report job states here (%s): following the jobs with squeue instead", reason)
    saved = SlurmJob.watcher
    SlurmJob.watcher = _SqueueWatcher(delay_s=saved._delay_s)
    try:
        yield
    finally:
        SlurmJob.watcher = saved


class RadioCurationSlurmLauncher(SlurmLauncher):
    """hydra-submitit's ``SlurmLauncher``, reporting user errors and following jobs without sacct (module doc)."""

    def __call__(
        self,
        sweep_overrides: list[str],
        job_dir_key: str,
        job_num: int,
        job_id: str,
        singleton_state: dict[type, Singleton],
    ) -> JobReturn:
        # Runs in the SLURM job. The entry point printed the message to the job's log and exits; the job
        # returns it instead, so that it reaches the launching terminal.
        try:
            return super().__call__(sweep_overrides, job_dir_key, job_num, job_id, singleton_state)
        except UserErrorExit as stop:
            message = stop.message
        except Exception as err:
            # A setting refused while Hydra resolves the job's run directory (before the entry point runs).
            cause = user_cause(err)
            if cause is None:
                raise
            message = str(cause)
        return JobReturn(
            overrides=list(sweep_overrides),
            status=JobStatus.FAILED,
            _return_value=RadioCurationError(message),
        )

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        with _job_states():
            returns = super().launch(job_overrides, initial_job_idx)
        stopped = [
            (index, job)
            for index, job in enumerate(returns, start=initial_job_idx)
            if job.status == JobStatus.FAILED and isinstance(job._return_value, RadioCurationError)
        ]
        for index, job in stopped:
            overrides = " ".join(filter_overrides(job.overrides or []))
            print(f"error: job #{index} ({overrides}): {job._return_value}", file=sys.stderr, flush=True)
        if stopped:
            raise UserErrorExit(f"{len(stopped)} of {len(returns)} jobs stopped on a user error")
        return returns
