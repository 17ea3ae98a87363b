"""One rank of ``test_the_ranks_of_a_node_share_one_copy_of_the_resident_windows`` (run under torchrun).

``python resident_worker.py MERGED SHARED_DIR OUT N``: ``N`` windows of ``MERGED`` (its windows repeated)
held resident by a TrainingWindows of every rank, shared through ``SHARED_DIR``; writes
``OUT/rank<r>.json`` with what the rank saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import psutil
import torch.distributed as dist

from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.datamodule import TrainingWindows
from radio_curation.errors import RadioCurationError


def main(merged: str, shared_dir: str, out: str, n: int) -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    ids = np.resize(WindowReader(merged).cutout_ids, n)
    report: dict = {}
    try:
        TrainingWindows(merged, ids, batch_size=16, resident_gb=1, shared_dir=f"{shared_dir}/missing").setup(
            "fit"
        )
    except RadioCurationError as err:
        report["error"] = str(err)
    dm = TrainingWindows(merged, ids, batch_size=16, resident_gb=1, shared_dir=shared_dir)
    before = psutil.Process().memory_info().rss
    dm.setup("fit")
    report["rss_growth"] = psutil.Process().memory_info().rss - before
    dist.barrier()
    report["files_after_setup"] = sorted(os.listdir(shared_dir))
    pixels = dm._pixels
    report["bytes"] = pixels.nbytes
    report["filename"] = pixels.untyped_storage().filename
    report["sha256"] = hashlib.sha256(pixels.numpy().tobytes()).hexdigest()
    batch = next(iter(dm.train_dataloader()))
    report["batch_shape"] = list(batch.shape)
    Path(out, f"rank{rank}.json").write_text(json.dumps(report))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
