"""The features stage: rows equal a direct forward, limits, dtypes, resume after a kill, DDP, errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision
import yaml
from transformers import Dinov2Config, Dinov2Model

from radio_curation.backbones import build_backbone
from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.preprocess import Preprocess
from radio_curation.errors import RadioCurationError, instantiate_user
from radio_curation.features import io as features_io
from radio_curation.features.matrix import FeatureFile
from radio_curation.runs.store import RunStore
from radio_curation.tasks import features as features_task

ROOT = Path(__file__).resolve().parents[2]


def _merged(runs_dir: Path, merge_id: str) -> WindowReader:
    return WindowReader(RunStore(runs_dir).resolve(merge_id, stage="merge").artifact("merged.h5"))


def _features(runs_dir: Path, run_id: str) -> FeatureFile:
    return FeatureFile(RunStore(runs_dir).resolve(run_id, stage="features").artifact("features.h5"))


def _cli(overrides: list[str], runs_dir: Path, data_dir: Path, cwd: Path) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "extract.py"),
        *overrides,
        f"paths.runs_dir={runs_dir}",
        f"paths.data_dir={data_dir}",
        "logger=csv",
    ]


def test_rows_are_the_direct_forward_of_every_cutout(
    compose, features_overrides, runs_dir, merge_id, monkeypatch
):
    cfg = compose("extract", features_overrides)
    result = features_task.run(cfg)
    reader = _merged(runs_dir, merge_id)
    assert set(np.unique(reader.table()["size"])) == {32, 64}
    with _features(runs_dir, result["run_id"]) as ff:
        assert ff.n == len(reader.cutout_ids) == result["counts"]["rows"]
        np.testing.assert_array_equal(ff.cutout_ids, reader.cutout_ids)
        assert np.all(np.diff(ff.cutout_ids) > 0)
        extractor = build_backbone(cfg.backbone).eval()
        preprocess = Preprocess(instantiate_user(cfg.normalization), extractor.in_chans, 32)
        sizes = reader.table()["size"]
        for size in (32, 64):
            rows = np.flatnonzero(sizes == size)[:7]
            with torch.no_grad():
                want = extractor(preprocess(torch.from_numpy(reader.read(reader.cutout_ids[rows])))).numpy()
            np.testing.assert_allclose(ff.read(rows), want, rtol=1e-4, atol=1e-5)
        attrs = ff.attrs
        assert (attrs["tap"], attrs["pooling"], attrs["resize"], attrs["dim"]) == (
            "output",
            "default",
            32,
            ff.dim,
        )
        assert "MinMaxInterval" in attrs["normalization"] and "test_vit" in attrs["backbone"]
        assert attrs["source_id"] == merge_id and ff.dtype == np.float32
    run_dir = Path(result["run_dir"])
    assert not (run_dir / "shards").exists()
    assert features_task.run(cfg)["reused"] is True
    # Another DDP rank of the same command finds nothing to compute and starts no process group.
    monkeypatch.setenv("RANK", "1")
    on_rank = features_task.run(cfg)
    assert (on_rank["rank"], on_rank["run_id"], on_rank["reused"]) == (1, result["run_id"], True)
    assert "counts" not in on_rank


def test_limit_batches_and_float16(compose, features_overrides, runs_dir):
    full = features_task.run(compose("extract", features_overrides))
    quick_overrides = [*features_overrides, "limit_batches=3", "batch_size=8", "features_dtype=float16"]
    quick = features_task.run(compose("extract", quick_overrides))
    assert quick["run_id"] != full["run_id"]
    manifest = yaml.safe_load((Path(quick["run_dir"]) / "manifest.yaml").read_text())
    assert manifest["info"]["limit_batches"] == 3 and manifest["config"]["limit_batches"] == 3
    with _features(runs_dir, quick["run_id"]) as ff, _features(runs_dir, full["run_id"]) as whole:
        assert ff.n == 24 and ff.attrs["limit_batches"] == 3
        np.testing.assert_array_equal(ff.cutout_ids, whole.cutout_ids[:24])
        assert ff.dtype == np.float16 and ff.attrs["dtype"] == "float16"
        chunks = list(ff.iter_chunks(10))
        assert [start for start, _ in chunks] == [0, 10, 20]
        assert all(chunk.dtype == np.float32 for _, chunk in chunks)
        got = np.concatenate([c for _, c in chunks])
        np.testing.assert_allclose(got, whole.read(np.arange(24)), rtol=2e-3, atol=2e-3)


def test_sigkill_and_restart_gives_the_uninterrupted_result(
    compose, features_overrides, runs_dir, data_dir, tmp_path
):
    reference = features_task.run(compose("extract", features_overrides))
    with _features(runs_dir, reference["run_id"]) as ff:
        want_ids, want = ff.cutout_ids.copy(), ff.read()
    # The same settings as a forced new run from the command line, killed once it has written blocks.
    overrides = [*features_overrides, "batch_size=4", "force=true"]
    run_dir = runs_dir / "features" / f"{reference['run_id']}-2"
    log = tmp_path / "killed.log"
    command = _cli(overrides, runs_dir, data_dir, tmp_path)
    with open(log, "wb") as out, subprocess.Popen(command, cwd=tmp_path, stdout=out, stderr=out) as proc:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list((run_dir / "shards").glob("block-*.h5"))) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, log.read_text()[-3000:]
        proc.send_signal(signal.SIGKILL)
    assert not (run_dir / "features.h5").exists()
    shards = features_io.BlockShards(run_dir / "shards")
    done = shards.done()
    assert len(done) >= 2
    # What a write cut short leaves behind never counts as a block.
    (shards.directory / ".block-00000099.h5.tmp-999").write_bytes(b"half a block")
    (run_dir / ".features.h5.tmp-999").write_bytes(b"half a join")
    resumed = features_task.run(compose("extract", overrides))
    assert resumed["run_id"] == run_dir.name and resumed["reused"] is False
    manifest = yaml.safe_load((run_dir / "manifest.yaml").read_text())
    assert manifest["status"] == "complete" and manifest["attempts"] == 2
    assert manifest["info"]["blocks_done_before"] >= len(done)
    assert not shards.directory.exists() and not (run_dir / ".features.h5.tmp-999").exists()
    with FeatureFile(run_dir / "features.h5") as ff:
        np.testing.assert_array_equal(ff.cutout_ids, want_ids)
        # Another batch size than the reference run: the same rows up to float rounding.
        np.testing.assert_allclose(ff.read(), want, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_two_process_ddp_gives_the_single_process_rows(
    compose, features_overrides, runs_dir, data_dir, tmp_path
):
    single = features_task.run(compose("extract", features_overrides))
    with _features(runs_dir, single["run_id"]) as ff:
        want_ids, want = ff.cutout_ids.copy(), ff.read()
    command = _cli(
        [*features_overrides, "strategy=ddp", "devices=2", "force=true"], runs_dir, data_dir, tmp_path
    )
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-4000:]
    run_id = done.stdout.strip().splitlines()[-1].removeprefix("run_id=")
    assert run_id == f"{single['run_id']}-2"
    manifest = yaml.safe_load((runs_dir / "features" / run_id / "manifest.yaml").read_text())
    assert set(manifest["info"]["blocks_by_rank"]) == {0, 1}
    with _features(runs_dir, run_id) as ff:
        np.testing.assert_array_equal(ff.cutout_ids, want_ids)
        np.testing.assert_allclose(ff.read(), want, rtol=1e-5, atol=1e-6)


def _old_pipeline_models(directory: Path) -> dict[str, str]:
    """A tiny DINOv2 checkpoint directory and a solo-learn BYOL checkpoint, saved locally."""
    torch.manual_seed(0)
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    Dinov2Model(config).save_pretrained(directory / "finetune-dinov2-small" / "checkpoints")
    resnet = torchvision.models.resnet18(weights=None)
    state = {f"backbone.{k}": v for k, v in resnet.state_dict().items() if not k.startswith("fc.")}
    state["projector.0.weight"] = torch.zeros(8, 512)
    (directory / "byol" / "dnqos6hx").mkdir(parents=True)
    torch.save({"state_dict": state}, directory / "byol" / "dnqos6hx" / "last.ckpt")
    return {
        "hf": str(directory / "finetune-dinov2-small" / "checkpoints"),
        "solo_learn": str(directory / "byol" / "dnqos6hx" / "last.ckpt"),
    }


@pytest.mark.parametrize(("kind", "dim"), [("hf", 32), ("solo_learn", 512)])
def test_the_old_pipeline_command_lines(compose, merge_id, runs_dir, tmp_path, kind, dim):
    models = _old_pipeline_models(tmp_path / "models")
    lines = {
        "hf": f"backbone=hf backbone.path={models['hf']} backbone.module_name=layernorm normalization=imagenet",
        "solo_learn": (
            f"backbone=solo_learn backbone.arch=resnet18 backbone.checkpoint={models['solo_learn']} "
            "backbone.module_name=avgpool normalization=minmax"
        ),
    }
    overrides = [
        "stage=features",
        f"source_id={merge_id}",
        *lines[kind].split(),
        "resize=32",
        "batch_size=64",
    ]
    result = features_task.run(compose("extract", [*overrides, "num_workers=0", "accelerator=cpu"]))
    with _features(runs_dir, result["run_id"]) as ff:
        assert ff.dim == dim and ff.n == len(_merged(runs_dir, merge_id).cutout_ids)
        assert ff.attrs["tap"] == ("layernorm" if kind == "hf" else "avgpool")
        assert np.isfinite(ff.read()).all() and ff.read().std(axis=0).mean() > 0


def test_wrong_or_missing_source_id(compose, features_overrides, runs_dir):
    cutouts_id = next(r.run_id for r in RunStore(runs_dir).runs("cutouts"))
    overrides = [o for o in features_overrides if not o.startswith("source_id=")]
    with pytest.raises(RadioCurationError, match=r"is a 'cutouts' run, but a 'merge' run is needed"):
        features_task.run(compose("extract", [*overrides, f"source_id={cutouts_id}"]))
    with pytest.raises(RadioCurationError, match=r"no source: give the merge run"):
        features_task.run(compose("extract", overrides))
    with pytest.raises(RadioCurationError, match=r"no run 'merge-nope'"):
        features_task.run(compose("extract", [*overrides, "source_id=merge-nope"]))


def test_bad_checkpoint_module_name_and_settings(compose, features_overrides, tmp_path):
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(RadioCurationError, match=r"cannot read checkpoint .*broken\.pth"):
        features_task.run(compose("extract", [*features_overrides, f"backbone.checkpoint={broken}"]))
    with pytest.raises(RadioCurationError, match=r"'blocks\.9' is not a module.*Closest names: blocks\.5"):
        features_task.run(compose("extract", [*features_overrides, "backbone.module_name=blocks.9"]))
    with pytest.raises(RadioCurationError, match=r"features_dtype=int8: expected one of float32, float16"):
        features_task.run(compose("extract", [*features_overrides, "features_dtype=int8"]))
    with pytest.raises(RadioCurationError, match="cannot take 32 px windows"):
        features_task.run(
            compose(
                "extract",
                [*features_overrides, "backbone.name=vit_tiny_patch16_224", "backbone.checkpoint=null"],
            )
        )


def test_feature_file_reader_checks(tmp_path: Path):
    with pytest.raises(RadioCurationError, match="does not exist"):
        FeatureFile(tmp_path / "none.h5")
    with h5py.File(tmp_path / "bad.h5", "w") as f:
        f["features"] = np.zeros((3, 2), np.float32)
    with pytest.raises(RadioCurationError, match="is not a features file"):
        FeatureFile(tmp_path / "bad.h5")
    with h5py.File(tmp_path / "ok.h5", "w") as f:
        f["features"] = np.arange(12, dtype=np.float32).reshape(6, 2)
        f["cutout_id"] = np.array([2, 4, 6, 8, 10, 12])
    with FeatureFile(tmp_path / "ok.h5") as ff:
        np.testing.assert_array_equal(ff.read([5, 0, 5]), [[10, 11], [0, 1], [10, 11]])
        np.testing.assert_array_equal(ff.rows_of([12, 2]), [5, 0])
        with pytest.raises(RadioCurationError, match="not in"):
            ff.rows_of([3])
        with pytest.raises(RadioCurationError, match="out of range"):
            ff.read([6])
