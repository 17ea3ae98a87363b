"""Two-process DDP training on the CPU (gloo), launched the way a user does: ``python train.py trainer=ddp``."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from radio_curation.errors import RadioCurationError
from radio_curation.runs.store import RunStore
from radio_curation.tasks import train as train_task
from tests.conftest import CONFIG_DIR
from tests.ssl.conftest import tiny

REPO = CONFIG_DIR.parent


@pytest.mark.slow
def test_two_process_ddp_fit_with_gathered_negatives(merge_id, runs_dir, data_dir, tmp_path):
    record = tmp_path / "record"
    overrides = tiny(
        "simclr",
        f"source_id={merge_id}",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.sync_batchnorm=false",  # torch's SyncBatchNorm is GPU-only
        "trainer.max_epochs=2",
        "+callbacks.record._target_=tests.ssl.callbacks.RecordFit",
        f"+callbacks.record.path={record}",
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, "train.py", f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}", *overrides],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_id = proc.stdout.strip().splitlines()[-1].removeprefix("run_id=")
    manifest = RunStore(runs_dir).resolve(run_id, stage="train").manifest
    ranks = [json.loads(p.read_text()) for p in sorted(record.glob("rank*.json"))]
    assert [r["rank"] for r in ranks] == [0, 1]
    assert all(r["world_size"] == 2 for r in ranks)
    # Each rank sees half the windows: steps per epoch are those of one rank's shard.
    windows = manifest["counts"]["images"]
    per_rank_batches = (windows + 1) // 2 // 16
    assert ranks[0]["batches"] == ranks[1]["batches"] == per_rank_batches
    assert manifest["counts"]["steps"] == 2 * per_rank_batches
    assert manifest["info"]["world_size"] == 2
    assert manifest["info"]["global_batch_size"] == 32
    assert {"backbone.pt", "checkpoints/last.ckpt"} <= set(manifest["artifacts"])


def test_sync_batchnorm_on_cpu_is_a_clear_error(compose, merge_id):
    cfg = compose("train", tiny("simclr", f"source_id={merge_id}", "trainer=ddp", "trainer.devices=1"))
    assert cfg.trainer.sync_batchnorm
    with pytest.raises(RadioCurationError, match="sync_batchnorm=false"):
        train_task.run(cfg)
