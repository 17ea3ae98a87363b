"""One copy of an array per node, mapped by every rank of a ``torch.distributed`` process group on it.

The lowest rank of each node (ranks are grouped by host) fills a file in a node-local folder
(``/dev/shm`` by default: memory, not disk), the other ranks of the node map the same file, and the file
is removed as soon as every rank holds its mapping: the memory stays until the last rank unmaps it, and
nothing is left behind whether the run ends, fails or is killed afterwards. Failures on any rank (no room
in the folder, a failed read) reach every rank as the same error instead of leaving the others waiting.
"""

from __future__ import annotations

import math
import shutil
import socket
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

from radio_curation.errors import RadioCurationError

#: Name prefix of the files; the rest is a token drawn by rank 0 and the node's first rank.
PREFIX = "radio-curation-shared-"


def _node_key() -> str:
    """This machine: its host name and boot ID (two containers may share a host name)."""
    boot = Path("/proc/sys/kernel/random/boot_id")
    return f"{socket.gethostname()}/{boot.read_text().strip() if boot.is_file() else ''}"


def node_ranks() -> list[int]:
    """The ranks of the process group on this rank's node, ascending (just this rank without a group)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [0]
    keys: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(keys, _node_key())
    return [r for r, key in enumerate(keys) if key == keys[dist.get_rank()]]


def _all_ok(error: str | None, what: str) -> None:
    """Gather every rank's error (a barrier as well); raise the first one on every rank."""
    errors: list[str | None] = [None] * dist.get_world_size()
    dist.all_gather_object(errors, error)
    failed = [(r, e) for r, e in enumerate(errors) if e is not None]
    if failed:
        rank, message = failed[0]
        raise RadioCurationError(f"{what} failed on rank {rank}: {message}")


def _mapped(path: Path, shape: tuple[int, ...]) -> Tensor:
    """``path`` mapped shared (created at the size of ``shape`` if missing) as a float32 tensor."""
    return torch.from_file(str(path), shared=True, size=math.prod(shape), dtype=torch.float32).view(shape)


def shared_on_node(
    shape: tuple[int, ...], fill: Callable[[Tensor], None], directory: str | Path, setting: str
) -> Tensor:
    """A float32 tensor of ``shape`` filled once per node by ``fill`` and mapped by every rank of the node.

    Collective: every rank of the process group calls it.

    Parameters
    ----------
    shape
        Shape of the tensor.
    fill
        Writes the values into the tensor it is given (called on the node's first rank only).
    directory
        Node-local folder of the file that holds the values while the ranks map it.
    setting
        The config key of ``directory``, named in the error when the folder has no room.

    Raises
    ------
    RadioCurationError
        On every rank, when any rank failed: no room in ``directory``, ``fill`` raised, the map failed.
    """
    ranks = node_ranks()
    rank = dist.get_rank()
    token = [uuid.uuid4().hex if rank == 0 else None]
    dist.broadcast_object_list(token, src=0)
    path = Path(directory) / f"{PREFIX}{token[0]}-{ranks[0]}"
    numel = math.prod(shape)
    pixels: Tensor | None = None
    try:
        error = None
        if rank == ranks[0]:
            try:
                free = shutil.disk_usage(directory).free
                if free < numel * 4:
                    raise RadioCurationError(
                        f"{directory} has {free / 1e9:.2f} GB free, the windows take {numel * 4 / 1e9:.2f} GB; "
                        f"set {setting} to a node-local folder with room (or null: a copy per rank)"
                    )
                pixels = _mapped(path, shape)
                fill(pixels)
            except Exception as err:  # reported on every rank by _all_ok, so none waits for the others
                error = f"{type(err).__name__}: {err}"
        _all_ok(error, f"filling the shared windows in {path}")
        if rank != ranks[0]:
            try:
                pixels = _mapped(path, shape)
            except Exception as err:  # reported on every rank by _all_ok
                error = f"{type(err).__name__}: {err}"
        _all_ok(error, f"mapping the shared windows in {path}")
    finally:
        if rank == ranks[0]:
            # Every rank of the node has mapped it (or failed): the name is no longer needed.
            path.unlink(missing_ok=True)
    return pixels


def one_copy_per_node(
    shape: tuple[int, ...], fill: Callable[[Tensor], None], directory: str | Path | None, setting: str
) -> Tensor:
    """:func:`shared_on_node` under a process group of several ranks when ``directory`` is set; otherwise
    a tensor in this process's shared memory (which its DataLoader workers read in place)."""
    if directory is not None and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return shared_on_node(shape, fill, directory, setting)
    pixels = torch.empty(shape, dtype=torch.float32).share_memory_()
    fill(pixels)
    return pixels
