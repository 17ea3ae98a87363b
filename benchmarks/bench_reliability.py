"""Reliability sweep: bad inputs and kill -9 points replayed from the command line, as a user would.

A tiny pipeline (synthetic sky → cutouts → merge → features → curate → train) is built once in a baseline
store. Then:

- every bad input (bad settings, values of the wrong type, wrong or missing IDs, broken files, damaged
  stores, a read-only store, Hydra config mistakes) runs as its own command; each must exit 2 with one ``error:`` line and no
  traceback, and leave no new run directory;
- every kill trial copies the parents of one stage into a fresh store, starts the stage, kills it with
  SIGKILL when a chosen point is reached (a file of its partial work appears), runs the same command again
  and compares the result with the baseline's uninterrupted run (array for array);
- the baseline's complete runs are fingerprinted before and after: none may change.

Usage::

    python benchmarks/bench_reliability.py              # work dir in a temporary directory
    python benchmarks/bench_reliability.py --keep DIR   # keep the stores in DIR for a look afterwards
    python benchmarks/bench_reliability.py --quick      # a sixth of the bad inputs, 3 kill points

Prints ``RESULT reliability tried=<n> clear_exit2=<n> left_dirs=<n> tracebacks=<n> changed_finished=<n>
kill_trials=<n> kill_identical=<n>`` (and one ``FAIL`` line per input or trial that missed its target).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import timm
import torch
import yaml
from astropy.io import fits
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
SKY = ["experiment=demo", "survey.mosaics=2", "survey.size=384", "cutouts.window_size=64"]
# The demo backbone with fixed weights, saved once: an unseeded random network would differ per process.
FEATURES = ["experiment=demo", "resize=32", "batch_size=4", "num_workers=0", "backbone.checkpoint=WEIGHTS"]
CURATE = [
    "experiment=demo",
    "clustering.n_clusters=[16,4]",
    "clustering.n_resampling_steps=[1,2]",
    "clustering.sample_size=[2,2]",
    "target_size=40",
]
TRAIN = [
    "experiment=demo",
    "data.batch_size=8",
    "trainer.max_epochs=2",
    "augmentation.global_size=32",
    "augmentation.local_size=16",
    "callbacks.checkpoint.every_n_train_steps=2",
    "trainer.enable_progress_bar=false",
]


@dataclass
class Store:
    """A run store and the data directory its commands use."""

    runs: Path
    data: Path
    prefix: tuple[str, ...] = ()

    def env(self) -> dict[str, str]:
        return {**os.environ, "RC_RUNS_DIR": str(self.runs), "RC_DATA_DIR": str(self.data)}

    def command(self, *args: str) -> list[str]:
        return [*self.prefix, sys.executable, *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.command(*args), cwd=ROOT, env=self.env(), capture_output=True, text=True, timeout=900
        )

    def stage(self, *args: str) -> str:
        """Run a command that must succeed; the run ID it printed last."""
        done = self.run(*args)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
        return done.stdout.strip().splitlines()[-1].split("=", 1)[1]

    def dirs(self) -> set[Path]:
        return {p for p in self.runs.glob("*/*") if p.is_dir() and not p.parent.name.startswith("_")}


@dataclass
class Pipeline:
    cutouts: str
    merge: str
    features: str
    cluster: str
    sample: str
    train: str
    commands: dict[str, list[str]] = field(default_factory=dict)


def fixed_weights(path: Path) -> None:
    """Save the demo's backbone (whatever experiment=demo selects) with weights drawn once, and point at them."""
    with initialize_config_dir(str(ROOT / "configs"), version_base=None):
        backbone = compose("extract", overrides=["experiment=demo"]).backbone
    torch.manual_seed(0)
    model = timm.create_model(
        backbone.name, pretrained=False, in_chans=backbone.in_chans, **backbone.model_kwargs
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    FEATURES[-1] = f"backbone.checkpoint={path}"


def build_baseline(store: Store) -> Pipeline:
    commands = {"cutouts": ["extract.py", "stage=cutouts", *SKY]}
    cutouts = store.stage(*commands["cutouts"])
    commands["merge"] = ["extract.py", "experiment=demo", "stage=merge", f"cutouts_ids=[{cutouts}]"]
    merge = store.stage(*commands["merge"])
    commands["features"] = ["extract.py", "stage=features", *FEATURES, f"source_id={merge}"]
    features = store.stage(*commands["features"])
    commands["curate"] = ["curate.py", *CURATE, f"features_id={features}"]
    done = store.run(*commands["curate"])
    ids = [line.split("=", 1)[1] for line in done.stdout.splitlines() if line.startswith("run_id=")]
    cluster, sample = ids
    commands["train"] = ["train.py", *TRAIN, f"subsample_id={sample}"]
    train = store.stage(*commands["train"])
    return Pipeline(cutouts, merge, features, cluster, sample, train, commands)


def fingerprint(store: Store) -> dict[str, str]:
    """sha256 of the manifest, config and artifacts of every complete run (logs may grow on reuse)."""
    prints = {}
    for manifest in store.runs.glob("*/*/manifest.yaml"):
        run_dir = manifest.parent
        if yaml.safe_load(manifest.read_text()).get("status") != "complete":
            continue
        digest = hashlib.sha256()
        for path in sorted(run_dir.rglob("*")):
            if path.is_file() and path.suffix != ".log" and path.name != ".lock" and "csv" not in path.parts:
                digest.update(path.relative_to(run_dir).as_posix().encode() + path.read_bytes())
        prints[run_dir.name] = digest.hexdigest()
    return prints


def copy_runs(source: Store, target: Store, run_ids: list[str]) -> None:
    for run_id in run_ids:
        stage = run_id.split("-", 1)[0]
        shutil.copytree(source.runs / stage / run_id, target.runs / stage / run_id)


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def bad_files(directory: Path) -> dict[str, Path]:
    """FITS and other files that are wrong in one way each."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    noise = (rng.standard_normal((128, 128)) * 1e-4).astype(np.float32)
    wcs = {
        "CTYPE1": "RA---SIN",
        "CTYPE2": "DEC--SIN",
        "CRPIX1": 64.0,
        "CRPIX2": 64.0,
        "CRVAL1": 180.0,
        "CRVAL2": 50.0,
        "CDELT1": -1.5 / 3600,
        "CDELT2": 1.5 / 3600,
        "CUNIT1": "deg",
        "CUNIT2": "deg",
        "BUNIT": "JY/BEAM",
    }
    files = {}
    files["no_wcs"] = directory / "no_wcs.fits"
    fits.PrimaryHDU(noise).writeto(files["no_wcs"], overwrite=True)
    files["all_nan"] = directory / "all_nan.fits"
    fits.PrimaryHDU(np.full((128, 128), np.nan, np.float32), fits.Header(wcs)).writeto(
        files["all_nan"], overwrite=True
    )
    files["garbage"] = directory / "garbage.fits"
    files["garbage"].write_bytes(rng.bytes(20000))
    files["truncated"] = directory / "truncated.fits"
    fits.PrimaryHDU(noise, fits.Header(wcs)).writeto(files["truncated"], overwrite=True)
    truncate(files["truncated"], 0.4)
    files["one_d"] = directory / "one_d.fits"
    fits.PrimaryHDU(noise[0]).writeto(files["one_d"], overwrite=True)
    files["catalog_no_ra"] = directory / "catalog.csv"
    files["catalog_no_ra"].write_text("name,flux\na,1.0\nb,2.0\n")
    files["wrong_keys_ckpt"] = directory / "wrong_keys.ckpt"
    torch.save({"state_dict": {"encoder.weight": torch.zeros(3)}}, files["wrong_keys_ckpt"])
    files["not_a_ckpt"] = directory / "not_a.ckpt"
    files["not_a_ckpt"].write_text("hello")
    return files


def damaged_stores(base: Store, p: Pipeline, work: Path) -> dict[str, Store]:
    """One store per kind of damage, holding the parents up to the damaged run."""
    chains = {
        "cutouts_h5": ([p.cutouts], "cutouts", p.cutouts, "cutouts.h5"),
        "merged_h5": ([p.cutouts, p.merge], "merge", p.merge, "merged.h5"),
        "features_h5": ([p.cutouts, p.merge, p.features], "features", p.features, "features.h5"),
        "subsample_h5": (
            [p.cutouts, p.merge, p.features, p.cluster, p.sample],
            "sample",
            p.sample,
            "subsample.h5",
        ),
        "features_manifest": ([p.cutouts, p.merge, p.features], "features", p.features, "manifest.yaml"),
        "merged_changed": ([p.cutouts, p.merge], "merge", p.merge, "merged.h5"),
    }
    stores = {}
    for name, (ids, stage, run_id, file) in chains.items():
        store = Store(work / f"damaged_{name}", base.data)
        copy_runs(base, store, ids)
        path = store.runs / stage / run_id / file
        if name == "merged_changed":  # same size, one byte different: only the checksum sees it
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
        else:
            truncate(path)
        stores[name] = store
    return stores


def read_only(work: Path, data: Path) -> Store | None:
    """A store mounted read-only in a private mount namespace (root ignores file permissions)."""
    runs = work / "read_only"
    runs.mkdir()
    if os.geteuid() != 0:
        runs.chmod(0o555)
        return Store(runs, data)
    if shutil.which("unshare") is None:
        return None
    script = f'mount --bind "{runs}" "{runs}" && mount -o remount,ro,bind "{runs}" && exec "$0" "$@"'
    probe = subprocess.run(["unshare", "-m", "sh", "-c", script, "true"], capture_output=True)
    return Store(runs, data, ("unshare", "-m", "sh", "-c", script)) if probe.returncode == 0 else None


def bad_inputs(base: Store, p: Pipeline, files: dict[str, Path], damaged: dict[str, Store], ro: Store | None):
    """(name, store, command) of every bad input."""
    f, c, m, s = p.features, p.cutouts, p.merge, p.sample
    glob = ["extract.py", "stage=cutouts", "survey=fits_glob"]
    cases = [
        ("cutouts overlap=1", ["extract.py", "stage=cutouts", *SKY, "cutouts.overlap=1"]),
        ("cutouts window_size=1", ["extract.py", "stage=cutouts", *SKY, "cutouts.window_size=1"]),
        ("cutouts window > mosaic", ["extract.py", "stage=cutouts", *SKY, "cutouts.window_size=4096"]),
        ("cutouts max_nan_fraction=2", ["extract.py", "stage=cutouts", *SKY, "cutouts.max_nan_fraction=2"]),
        ("survey on_error=maybe", ["extract.py", "stage=cutouts", *SKY, "survey.on_error=maybe"]),
        ("survey shard=3/2", ["extract.py", "stage=cutouts", *SKY, "survey.shard=3/2"]),
        ("survey num_workers=0", ["extract.py", "stage=cutouts", *SKY, "survey.num_workers=0"]),
        ("fits without WCS", [*glob, f"survey.pattern={files['no_wcs']}"]),
        ("all-NaN fits", [*glob, f"survey.pattern={files['all_nan']}"]),
        ("garbage fits", [*glob, f"survey.pattern={files['garbage']}"]),
        ("truncated fits", [*glob, f"survey.pattern={files['truncated']}"]),
        ("1-D fits", [*glob, f"survey.pattern={files['one_d']}"]),
        ("fits pattern matches nothing", [*glob, "survey.pattern=/no/such/*.fits"]),
        (
            "catalogue missing",
            ["extract.py", "stage=cutouts", *SKY, "cutouts=catalog", "cutouts.catalog=/no/such.csv"],
        ),
        (
            "catalogue without ra",
            [
                "extract.py",
                "stage=cutouts",
                *SKY,
                "cutouts=catalog",
                f"cutouts.catalog={files['catalog_no_ra']}",
            ],
        ),
        ("unknown survey option", ["extract.py", "stage=cutouts", "survey=fitsglob"]),
        ("misspelled cutouts key", ["extract.py", "stage=cutouts", "cutouts.window_sise=64"]),
        ("override syntax", ["extract.py", "stage=cutouts", "cutouts.window_size=[64"]),
        ("merge without ids", ["extract.py", "stage=merge"]),
        ("merge unknown id", ["extract.py", "stage=merge", "cutouts_ids=[cutouts-0000000000]"]),
        ("merge id of another stage", ["extract.py", "stage=merge", f"cutouts_ids=[{m}]"]),
        (
            "merge removes everything",
            ["extract.py", "stage=merge", f"cutouts_ids=[{c}]", "merge.min_peak_snr=1e12"],
        ),
        ("features without source", ["extract.py", "stage=features", *FEATURES]),
        ("features source of another stage", ["extract.py", "stage=features", *FEATURES, f"source_id={c}"]),
        (
            "features precision=banana",
            ["extract.py", "stage=features", *FEATURES, f"source_id={m}", "precision=banana"],
        ),
        (
            "features dtype float8",
            ["extract.py", "stage=features", *FEATURES, f"source_id={m}", "features_dtype=float8"],
        ),
        (
            "features batch_size=0",
            ["extract.py", "stage=features", *FEATURES, f"source_id={m}", "batch_size=0"],
        ),
        (
            "features limit_batches=0",
            ["extract.py", "stage=features", *FEATURES, f"source_id={m}", "limit_batches=0"],
        ),
        (
            "solo-learn checkpoint missing",
            [
                "extract.py",
                "stage=features",
                *FEATURES,
                f"source_id={m}",
                "backbone=solo_learn",
                "backbone.checkpoint=/no/such.ckpt",
                "backbone.arch=resnet18",
            ],
        ),
        (
            "solo-learn checkpoint wrong keys",
            [
                "extract.py",
                "stage=features",
                *FEATURES,
                f"source_id={m}",
                "backbone=solo_learn",
                f"backbone.checkpoint={files['wrong_keys_ckpt']}",
                "backbone.arch=resnet18",
            ],
        ),
        (
            "checkpoint not a checkpoint",
            [
                "extract.py",
                "stage=features",
                *FEATURES,
                f"source_id={m}",
                "backbone=solo_learn",
                f"backbone.checkpoint={files['not_a_ckpt']}",
                "backbone.arch=resnet18",
            ],
        ),
        (
            "run backbone unknown id",
            [
                "extract.py",
                "stage=features",
                *FEATURES,
                f"source_id={m}",
                "backbone=run",
                "backbone.model_id=train-0000000000",
            ],
        ),
        (
            "run backbone id of another stage",
            [
                "extract.py",
                "stage=features",
                *FEATURES,
                f"source_id={m}",
                "backbone=run",
                f"backbone.model_id={c}",
            ],
        ),
        (
            "timm model that does not exist",
            [
                "extract.py",
                "stage=features",
                *FEATURES,
                f"source_id={m}",
                "backbone=timm",
                "backbone.name=no_such_net",
            ],
        ),
        ("curate without ids", ["curate.py", *CURATE]),
        ("curate unknown features id", ["curate.py", *CURATE, "features_id=features-0000000000"]),
        ("curate target_size=0", ["curate.py", *CURATE, f"features_id={f}", "target_size=0"]),
        (
            "curate more clusters than points",
            [
                "curate.py",
                *CURATE,
                f"features_id={f}",
                "clustering.n_clusters=[100000]",
                "clustering.n_resampling_steps=[1]",
                "clustering.sample_size=[1]",
            ],
        ),
        (
            "curate increasing n_clusters",
            ["curate.py", *CURATE, f"features_id={f}", "clustering.n_clusters=[2,8]"],
        ),
        ("curate k-means init banana", ["curate.py", *CURATE, f"features_id={f}", "clustering.init=banana"]),
        ("curate target larger than pool", ["curate.py", *CURATE, f"features_id={f}", "target_size=1000000"]),
        ("curate unknown sampler", ["curate.py", *CURATE, f"features_id={f}", "sampler=no_such"]),
        ("train without ids", ["train.py", *TRAIN]),
        ("train both ids", ["train.py", *TRAIN, f"subsample_id={s}", f"source_id={m}"]),
        ("train random_subset=0", ["train.py", *TRAIN, f"source_id={m}", "random_subset=0"]),
        ("train precision=banana", ["train.py", *TRAIN, f"subsample_id={s}", "trainer.precision=banana"]),
        ("train window size absent", ["train.py", *TRAIN, f"subsample_id={s}", "data.window_size=999"]),
        (
            "train sync_batchnorm on CPU",
            ["train.py", *TRAIN, f"subsample_id={s}", "trainer.sync_batchnorm=true"],
        ),
        ("train misspelled key", ["train.py", *TRAIN, "trainer.max_epoch=1"]),
        ("train unknown ssl", ["train.py", *TRAIN, "ssl=no_such"]),
        ("evaluate unknown model", ["evaluate.py", "eval=linear_probe", "model_id=train-0000000000"]),
        ("evaluate unknown eval", ["evaluate.py", "eval=no_such"]),
        # Values of the wrong type (issue 26): each is refused before a run is claimed.
        ("cutouts window_size=abc", ["extract.py", "stage=cutouts", *SKY, "cutouts.window_size=abc"]),
        ("cutouts overlap=half", ["extract.py", "stage=cutouts", *SKY, "cutouts.overlap=half"]),
        ("survey mosaics=two", ["extract.py", "stage=cutouts", *SKY, "survey.mosaics=two"]),
        ("merge dedup=maybe", ["extract.py", "stage=merge", f"cutouts_ids=[{c}]", "merge.dedup=maybe"]),
        ("features seed=x", ["extract.py", "stage=features", *FEATURES, f"source_id={m}", "seed=x"]),
        ("features resize=big", ["extract.py", "stage=features", *FEATURES, f"source_id={m}", "resize=big"]),
        ("curate target_size=abc", ["curate.py", *CURATE, f"features_id={f}", "target_size=abc"]),
        ("curate n_iters=[1]", ["curate.py", *CURATE, f"features_id={f}", "clustering.n_iters=[1]"]),
        ("train max_epochs=many", ["train.py", *TRAIN, f"subsample_id={s}", "trainer.max_epochs=many"]),
        ("train ssl lr=fast", ["train.py", *TRAIN, f"subsample_id={s}", "ssl.optimizer.lr=fast"]),
        ("evaluate k=ten", ["evaluate.py", "eval=knn", f"features_id={f}", "eval.k=ten"]),
    ]
    runs = [(name, base, command) for name, command in cases]
    runs += [
        ("damaged cutouts.h5", damaged["cutouts_h5"], ["extract.py", "stage=merge", f"cutouts_ids=[{c}]"]),
        (
            "damaged merged.h5",
            damaged["merged_h5"],
            ["extract.py", "stage=features", *FEATURES, f"source_id={m}"],
        ),
        (
            "changed merged.h5",
            damaged["merged_changed"],
            ["extract.py", "stage=features", *FEATURES, f"source_id={m}"],
        ),
        ("damaged features.h5", damaged["features_h5"], ["curate.py", *CURATE, f"features_id={f}"]),
        ("damaged subsample.h5", damaged["subsample_h5"], ["train.py", *TRAIN, f"subsample_id={s}"]),
        ("damaged manifest", damaged["features_manifest"], ["curate.py", *CURATE, f"features_id={f}"]),
        (
            "damaged manifest, same stage",
            damaged["features_manifest"],
            ["extract.py", "stage=features", *FEATURES, f"source_id={m}"],
        ),
    ]
    if ro is not None:
        runs.append(("read-only store", ro, ["extract.py", "stage=cutouts", *SKY]))
    return runs


def clear(done: subprocess.CompletedProcess) -> bool:
    """Exit 2 and one ``error:`` line, last on stderr (libraries' own info lines may come before it)."""
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    return done.returncode == 2 and len(errors) == 1 and lines[-1] == errors[0]


# Kill trials: (parents to copy, command key, file pattern that marks the kill point, delay s).
KILL_POINTS = [
    ([], "cutouts", "cutouts/*/parts/*.h5", 0.0),
    (["cutouts", "merge"], "features", "features/*/manifest.yaml", 0.0),
    (["cutouts", "merge"], "features", "features/*/shards/plan.json", 0.0),
    (["cutouts", "merge"], "features", "features/*/shards/block-00000000.h5", 0.0),
    (["cutouts", "merge"], "features", "features/*/shards/block-00000002.h5", 0.0),
    (["cutouts", "merge", "features"], "curate", "cluster/*/manifest.yaml", 0.0),
    (["cutouts", "merge", "features"], "curate", "cluster/*/levels/level_1.h5", 0.0),
    (["cutouts", "merge", "features"], "curate", "cluster/*/clusters.h5", 0.0),
    (["cutouts", "merge", "features"], "curate", "sample/*/manifest.yaml", 0.0),
    (["cutouts", "merge", "features", "cluster", "sample"], "train", "train/*/manifest.yaml", 0.0),
    (
        ["cutouts", "merge", "features", "cluster", "sample"],
        "train",
        "train/*/checkpoints/*.ckpt",
        0.0,
    ),
    (["cutouts", "merge", "features", "cluster", "sample"], "train", "train/*/backbone.pt", 0.0),
]
RESULT_FILES = {
    "cutouts": [("cutouts", "cutouts.h5")],
    "features": [("features", "features.h5")],
    "curate": [("cluster", "clusters.h5"), ("sample", "subsample.h5")],
    "train": [("train", "backbone.pt")],
}


def h5_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: arrays.update({name: obj[()]}) if isinstance(obj, h5py.Dataset) else None
        )
    return arrays


def same_result(a: Path, b: Path) -> bool:
    if a.suffix == ".h5":
        x, y = h5_arrays(a), h5_arrays(b)
        return x.keys() == y.keys() and all(
            np.array_equal(x[k], y[k], equal_nan=x[k].dtype.kind == "f") for k in x
        )
    x = torch.load(a, map_location="cpu", weights_only=False)
    y = torch.load(b, map_location="cpu", weights_only=False)
    sx, sy = x["state_dict"], y["state_dict"]
    return sx.keys() == sy.keys() and all(torch.equal(sx[k], sy[k]) for k in sx)


def kill_trial(base: Store, p: Pipeline, work: Path, number: int, point: tuple) -> tuple[bool, bool, str]:
    """(killed, identical, note) of one trial."""
    parents, key, pattern, delay = point
    store = Store(work / f"kill_{number}", base.data)
    copy_runs(base, store, [getattr(p, name) for name in parents])
    store.runs.mkdir(parents=True, exist_ok=True)
    command = p.commands[key]
    proc = subprocess.Popen(
        store.command(*command),
        cwd=ROOT,
        env=store.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    while proc.poll() is None and not list(store.runs.glob(pattern)):
        time.sleep(0.01)
    time.sleep(delay)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    again = store.run(*command)
    if again.returncode != 0:
        return killed, False, f"rerun exit {again.returncode}: {again.stderr.strip().splitlines()[-1:]}"
    for result_stage, name in RESULT_FILES[key]:
        run_id = getattr(p, result_stage)
        mine, theirs = store.runs / result_stage / run_id / name, base.runs / result_stage / run_id / name
        if not mine.is_file() or not same_result(mine, theirs):
            return killed, False, f"{result_stage}/{name} differs from the uninterrupted run"
    return killed, True, ""


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", type=Path, help="work in this directory and keep it")
    parser.add_argument("--no-kill", action="store_true", help="bad inputs only")
    parser.add_argument("--no-inputs", action="store_true", help="kill trials only")
    parser.add_argument("--jobs", type=int, default=1, help="bad inputs run this many at a time")
    parser.add_argument("--quick", action="store_true", help="every 6th bad input and 3 kill points")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench_reliability_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        base = Store(work / "base", work / "data")
        fixed_weights(work / "files" / "demo_backbone.pth")
        started = time.perf_counter()
        pipeline = build_baseline(base)
        print(
            f"baseline pipeline built in {time.perf_counter() - started:.0f} s: {pipeline.train}", flush=True
        )
        before = fingerprint(base)
        files = bad_files(work / "files")
        inputs = bad_inputs(
            base, pipeline, files, damaged_stores(base, pipeline, work), read_only(work, base.data)
        )
        points = KILL_POINTS
        if args.quick:
            inputs, points = inputs[::6], [KILL_POINTS[i] for i in (3, 6, 9)]
        counts = dict.fromkeys(["tried", "clear_exit2", "left_dirs", "tracebacks"], 0)
        stores = {id(store): store for _, store, _ in inputs}
        existing = {key: store.dirs() for key, store in stores.items()}

        def attempt(case: tuple[str, Store, list[str]]) -> tuple[str, subprocess.CompletedProcess]:
            return case[0], case[1].run(*case[2])

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for name, done in pool.map(attempt, [] if args.no_inputs else inputs):
                counts["tried"] += 1
                counts["clear_exit2"] += clear(done)
                counts["tracebacks"] += "Traceback" in done.stderr + done.stdout
                if not clear(done):
                    last = (done.stderr.strip().splitlines() or [""])[-1][:300]
                    print(f"FAIL bad input '{name}': exit {done.returncode}: {last}", flush=True)
        # Counted at the end: commands running side by side see each other's runs while they work.
        for key, store in stores.items():
            left = store.dirs() - existing[key]
            counts["left_dirs"] += len(left)
            for path in sorted(left):
                print(f"FAIL left behind: {path}", flush=True)
        trials = identical = 0
        if not args.no_kill:
            for number, point in enumerate(points):
                killed, same, note = kill_trial(base, pipeline, work, number, point)
                trials += killed
                identical += killed and same
                if not killed or not same:
                    print(f"FAIL kill point {point[2]}: killed={killed} {note}", flush=True)
        changed = sum(before.get(k) != v for k, v in fingerprint(base).items() if k in before)
        changed += len(before.keys() - fingerprint(base).keys())
        print(
            f"RESULT reliability tried={counts['tried']} clear_exit2={counts['clear_exit2']} "
            f"left_dirs={counts['left_dirs']} tracebacks={counts['tracebacks']} changed_finished={changed} "
            f"kill_trials={trials} kill_identical={identical}",
            flush=True,
        )
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
