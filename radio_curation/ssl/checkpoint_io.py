"""Checkpoints that are either the old file or the new one: a job killed mid-save keeps a loadable last.ckpt."""

from __future__ import annotations

from typing import Any

from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from radio_curation.atomic import atomic_path


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, writing to a temporary file that is renamed into place.

    Lightning writes ``last.ckpt`` over itself; a SIGKILL (pre-emption, time limit) in the middle of that
    write would leave a truncated file and a run that cannot resume.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        with atomic_path(path) as tmp:
            super().save_checkpoint(checkpoint, tmp, storage_options)
