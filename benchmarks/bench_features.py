"""Feature extraction benchmarks: the batched loader vs the per-file loader of the per-cutout .npy scripts
this project replaces, and pipeline vs model.

On a synthetic sky cut into windows (cutouts + merge stages, in a temporary run store), in one run:

(a) loader: our DataLoader (one ``WindowReader.read`` gather per batch) + the batched ``Preprocess``
    (normalisation, resize of one channel, a 3-channel view) against the same work done the old way:
    one ``.npy`` file per window, ``np.load`` per sample, per-sample torchvision transforms (the same
    normalisation module, then ``T.Resize`` with the same kernel), default collate, the same 3-channel
    view; its first batch is checked equal to ours. Same windows, batch size and workers. The ratio is
    what batching gains. A decomposition line also times the old kernel (torchvision's antialiased
    resize) and the old 3 copied channels, to show how far those scripts as they were lie behind.
    One warm-up pass each, then ``--repeats`` timed passes taken in turn; the best of each counts (a
    shared machine's load only ever slows a pass down). Rates in windows/s.
(b) extraction: the features stage end to end (``extract.py stage=features``: Lightning predict, device
    preprocessing, block shards, final ``features.h5``; its ``windows_per_s``) against the same backbone's
    forward alone on inputs already on the device, same batch size, precision and channels-last; both
    ``--repeats`` times in turn (new forced runs), the best of each. On a CPU the model gets every core not
    taken by loader processes, in both measurements.

(c) data path: the rate at which the features stage's data path delivers model-ready batches (cut from the
    resident mosaics, normalised, resized; on the device with ``--device cuda``, else by ``gather_on=workers``
    loader processes into shared memory) with no model, against a plain one-core ``memcpy`` of the same
    bytes (one float32 channel of ``--resize``² per window), timed next to every pass and the best of the
    whole run taken, for 1 … cores loader workers; and the same for the data path before resident mosaics
    (``WindowReader.read`` per batch in the workers, normalisation and resizing in the main process).
    Each line also gives the CPU time per window of all the data path's processes (the main one and its
    loader workers; the least of a pass), which a machine loaded by other work inflates far less than
    the rate: ``c`` idle cores could deliver about ``c / cpu_us_per_window`` windows per µs.

(d) join (``--only-join``, no sky or model): ``--join-rows`` synthetic rows of ``--join-dim`` float16
    features in blocks of 2048 rows, as two ranks leave them, joined into ``features.h5``: the serial join
    this project had before (``serial_join``, the baseline: rank 0 reads every block file and copies its
    rows into one chunked dataset) against the join now (the ranks wrote their rows in place: the blocks'
    markers checked, the file renamed). Also the time the ranks took to write the blocks either way, and
    the bytes each join wrote (``write_chars`` of this process).

Usage::

    python benchmarks/bench_features.py                                   # CPU, ResNet-18 at 224 px
    python benchmarks/bench_features.py --device cuda --backbone resnet18 --overlap 0.875 --windows 40000
    python benchmarks/bench_features.py --device cuda --backbone vit_small_dinov2 --overlap 0.875 --windows 20000

Prints ``RESULT loader ours=<r> naive=<r> ratio=<x>`` (with the decomposition line after it),
``RESULT extraction pipeline=<r> model_only=<r> ratio=<x>``,
``RESULT datapath windows_per_s=<r> gb_per_s=<r> memcpy_gb_per_s=<r> fraction=<f> workers=<n>
cpu_us_per_window=<t>`` (one per worker count, then the stage's default count again; all printed after the
last pass, against the run's best memcpy) and ``RESULT datapath_before ...`` likewise;
``RESULT join rows=<n> serial_join_s=<t> join_s=<t> ratio=<x> serial_join_gb_written=<g>
join_gb_written=<g> write_s_before=<t> write_s=<t>`` with ``--only-join``.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import torch
import torchvision.transforms as T
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig
from torch.utils.data import DataLoader, Dataset

from radio_curation.atomic import atomic_path
from radio_curation.backbones import build_backbone, instantiate_user
from radio_curation.cutouts.reader import WindowReader
from radio_curation.cutouts.resident import ResidentMosaics
from radio_curation.data.preprocess import Preprocess
from radio_curation.features.extraction import LOADER_PREFETCH, WindowBatches, cpu_threads
from radio_curation.features.io import BlockShards, Plan, join
from radio_curation.runs.store import RunStore
from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import features as features_task
from radio_curation.tasks import merge as merge_task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose("extract", overrides=overrides)


class NpyWindows(Dataset):
    """The replaced scripts' dataset: one ``.npy`` file per window, transformed one sample at a time."""

    def __init__(self, files: list[Path], transform: T.Compose) -> None:
        self.files = files
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(np.load(self.files[index]).astype(np.float32))


def write_npy(reader: WindowReader, out: Path, chunk: int = 512) -> list[Path]:
    """Each window as its own .npy file (float64, as the old cutouts were saved from the mosaics)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    ids = reader.cutout_ids
    for start in range(0, len(ids), chunk):
        batch = reader.read(ids[start : start + chunk])
        for cid, window in zip(ids[start : start + chunk], batch, strict=True):
            path = out / f"patch_{cid}.npy"
            np.save(path, window[0].astype(np.float64))
            files.append(path)
    return files


def timed_pass(loader: DataLoader, step) -> tuple[float, int]:
    start = time.perf_counter()
    n = 0
    for batch in loader:
        n += len(step(batch))
    return time.perf_counter() - start, n


def per_sample_transform(norm, resize: int, channels: int, antialias: bool) -> T.Compose:
    """The old per-sample transforms; ``channels=3`` copies the window before normalising and resizing."""
    steps = [T.ToTensor()]
    if channels == 3:
        steps.append(T.Lambda(lambda t: t.repeat(3, 1, 1)))
    steps += [T.Lambda(lambda t: norm(t[None])[0]), T.Resize(resize, antialias=antialias)]
    return T.Compose(steps)


def loader_benchmark(
    args: argparse.Namespace, merged: Path, cfg: DictConfig, workdir: Path
) -> dict[str, float]:
    """Windows/s of our loader and of the per-file, per-sample loader doing the same and the old work.

    ``naive`` does what ours does (one channel normalised and resized with the same kernel, then a
    3-channel view of it), one ``.npy`` file and one transform per sample: the ratio is what batching
    alone gains. ``naive_aa`` adds the old kernel (torchvision's antialiased resize, also on upsampling),
    ``old`` the old 3 copied channels as well: the replaced scripts as they were.
    """
    reader = WindowReader(merged)
    n = min(len(reader.cutout_ids), args.loader_windows)
    plan = Plan(n, n, "bench")
    ours_ds = WindowBatches(reader, plan, [0], reader.table()["size"], args.batch_size)
    norm = instantiate_user(cfg.normalization)
    preprocess = Preprocess(norm, 3, args.resize)
    # Preprocess antialiases only when it shrinks (the result of an upsampling is the same either way).
    ours_antialias = args.resize < args.window
    workers = {"num_workers": args.num_workers, "prefetch_factor": 4 if args.num_workers else None}
    ours = DataLoader(ours_ds, batch_size=None, **workers)

    files = write_npy(reader, workdir / "npy")[:n]

    def naive_loader(channels: int, antialias: bool) -> DataLoader:
        transform = per_sample_transform(norm, args.resize, channels, antialias)
        return DataLoader(NpyWindows(files, transform), batch_size=args.batch_size, shuffle=False, **workers)

    def ours_step(batch):
        return preprocess(batch["pixels"])

    def as_three_channels(batch):
        return batch.expand(-1, 3, -1, -1)

    def as_is(batch):
        return batch

    passes = {
        "ours": (ours, ours_step),
        "naive": (naive_loader(1, ours_antialias), as_three_channels),
        "naive_aa": (naive_loader(1, True), as_three_channels),
        "old": (naive_loader(3, True), as_is),
    }
    # Same work, same output: the first batch of the per-sample loader equals ours.
    first_ours = ours_step(next(iter(ours)))
    first_naive = as_three_channels(next(iter(passes["naive"][0])))
    torch.testing.assert_close(first_naive, first_ours, rtol=1e-5, atol=1e-5)
    for loader, step in passes.values():
        timed_pass(loader, step)
    rates = {name: 0.0 for name in passes}
    for _ in range(args.repeats):
        for name, (loader, step) in passes.items():
            seconds, count = timed_pass(loader, step)
            assert count == n, (name, count, n)
            rates[name] = max(rates[name], count / seconds)
    return rates


class ReaderBatches(Dataset):
    """The data path before resident mosaics: one ``WindowReader.read`` per batch in the loader workers."""

    def __init__(self, reader: WindowReader, items: list[tuple[int, np.ndarray]]) -> None:
        self.reader = reader
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.reader.read(self.items[index][1]))


class Memcpy:
    """A plain one-core copy of ``nbytes``: :meth:`measure` times it, :attr:`bytes_per_s` is the best seen.

    Timed next to every data-path pass, so the baseline of every line is the best of the whole run, not of
    one moment of a shared machine.
    """

    def __init__(self, nbytes: int) -> None:
        self.source = np.ones(nbytes // 4, np.float32)
        self.target = np.empty_like(self.source)
        np.copyto(self.target, self.source)
        self.bytes_per_s = 0.0

    def measure(self, repeats: int = 3) -> None:
        for _ in range(repeats):
            start = time.perf_counter()
            np.copyto(self.target, self.source)
            self.bytes_per_s = max(self.bytes_per_s, self.source.nbytes / (time.perf_counter() - start))


def cpu_seconds() -> float:
    """CPU time (user + system) of this process and its live children (the loader workers) so far."""
    processes = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system
    return total


def as_is(item: dict) -> dict:
    """DataLoader conversion that leaves items as the dataset made them (as the features stage does)."""
    return item


def loader_settings(workers: int, prefetch: int) -> dict:
    """Loader processes kept across passes: the figures are the steady state, mosaics already loaded."""
    if workers == 0:
        return {"num_workers": 0}
    return {"num_workers": workers, "prefetch_factor": prefetch, "persistent_workers": True}


def deliver_on_device(positions: WindowBatches, mosaics: ResidentMosaics, preprocess: Preprocess) -> int:
    """``gather_on=device``: windows cut from the device-resident mosaics and preprocessed there."""
    count = 0
    for item in positions:
        pixels = mosaics.gather(item["mosaic"], item["y0"], item["x0"], item["size"])
        count += len(preprocess(pixels))
    torch.cuda.synchronize()
    return count


def deliver_from_workers(loader: DataLoader) -> int:
    """``gather_on=workers``: model-ready batches made by the loader processes, as the features stage gets them."""
    return sum(len(loader.dataset.delivered(item)["inputs"]) for item in loader)


def deliver_before(loader: DataLoader, preprocess: Preprocess, device: torch.device) -> int:
    """Before: raw windows from ``WindowReader.read`` in the workers, preprocessed in the main process."""
    count = 0
    for pixels in loader:
        count += len(preprocess(pixels.to(device, non_blocking=True)))
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count


def datapath_benchmark(args: argparse.Namespace, merged: Path, cfg: DictConfig) -> None:
    """Model-ready batches per second with no model, ours and before, against memcpy of the same bytes."""
    reader = WindowReader(merged)
    n = min(len(reader.cutout_ids), args.datapath_windows)
    plan = Plan(n, n, "bench")
    sizes = reader.table()["size"]
    device = torch.device(args.device)
    preprocess = Preprocess(instantiate_user(cfg.normalization), 3, args.resize).to(device)
    window_bytes = args.resize * args.resize * 4
    memcpy = Memcpy(args.batch_size * window_bytes)
    # The worker counts asked for, then the features stage's default (configs/extract.yaml) again.
    counts = [*args.datapath_workers, int(config([]).num_workers)]
    lines: list[tuple[str, float, float, int]] = []

    def best_rate(deliver, *inputs) -> tuple[float, float]:
        """Best windows/s of ``--repeats`` passes and the least CPU time per window (µs) of a pass."""
        deliver(*inputs)  # warm-up: workers started, mosaics loaded, first batches made
        best, least_cpu = 0.0, math.inf
        for _ in range(args.repeats):
            memcpy.measure()
            cpu = cpu_seconds()
            start = time.perf_counter()
            count = deliver(*inputs)
            seconds = time.perf_counter() - start
            assert count == n, (count, n)
            best = max(best, count / seconds)
            least_cpu = min(least_cpu, (cpu_seconds() - cpu) / count * 1e6)
        return best, least_cpu

    def report(name: str, rate: float, cpu_us: float, workers: int) -> None:
        gb = rate * window_bytes / 1e9
        copy = memcpy.bytes_per_s
        print(
            f"RESULT {name} windows_per_s={rate:.1f} gb_per_s={gb:.3f} memcpy_gb_per_s={copy / 1e9:.3f} "
            f"fraction={rate * window_bytes / copy:.3f} workers={workers} cpu_us_per_window={cpu_us:.1f}",
            flush=True,
        )

    positions = WindowBatches(reader, plan, [0], sizes, args.batch_size, gather=False)
    ready = WindowBatches(reader, plan, [0], sizes, args.batch_size, preprocess=preprocess.cpu())
    for workers in counts:
        if device.type == "cuda":
            mosaics = ResidentMosaics(
                reader.mosaic_paths, reader.nan_fill, device, positions.mosaic_order(), ahead=workers
            )
            figures = best_rate(deliver_on_device, positions, mosaics, preprocess.to(device))
            mosaics.close()
        else:
            loader = DataLoader(
                ready, batch_size=None, collate_fn=as_is, **loader_settings(workers, LOADER_PREFETCH)
            )
            figures = best_rate(deliver_from_workers, loader)
        lines.append(("datapath", *figures, workers))

    preprocess.to(device)
    threads = torch.get_num_threads()
    for workers in counts:
        before = DataLoader(
            ReaderBatches(reader, positions.items),
            batch_size=None,
            pin_memory=device.type == "cuda",
            **loader_settings(workers, 4),  # as the features stage had it
        )
        # As the features stage did on CPUs: compute threads = cores not taken by loader processes.
        torch.set_num_threads(cpu_threads(workers) if device.type == "cpu" else threads)
        lines.append(("datapath_before", *best_rate(deliver_before, before, preprocess, device), workers))
    torch.set_num_threads(threads)
    # Every line against the best memcpy of the run.
    for line in lines:
        report(*line)


def model_only_rate(cfg: DictConfig, args: argparse.Namespace, n: int) -> float:
    extractor = build_backbone(cfg.backbone).eval()
    device = torch.device(args.device)
    extractor.to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        extractor.to(memory_format=torch.channels_last)
    precision = features_task.resolve_precision(cfg)
    dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(precision)
    x = torch.randn(args.batch_size, extractor.in_chans, args.resize, args.resize, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    steps = max(1, math.ceil(n / args.batch_size))

    def run(count: int) -> None:
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
            for _ in range(count):
                extractor(x)
        if device.type == "cuda":
            torch.cuda.synchronize()

    run(min(3, steps))
    start = time.perf_counter()
    run(steps)
    return steps * args.batch_size / (time.perf_counter() - start)


#: Rows per block in the join figures (8 batches of 256, the stage's default).
JOIN_BLOCK_ROWS = 2048


def join_rows(block: int, start: int, stop: int, dim: int) -> np.ndarray:
    """The synthetic float16 rows of one block (the same for both joins)."""
    return (
        np.random.default_rng(block).standard_normal((stop - start, dim), dtype=np.float32).astype(np.float16)
    )


def serial_join(directory: Path, plan: Plan, dim: int, path: Path) -> None:
    """The join before the ranks wrote in place (the baseline): rank 0 reads every block file, rows included,
    and copies them into one chunked dataset of about 1 MiB chunks."""
    chunk = max(1, min(plan.n_rows, (1 << 20) // (dim * 2)))
    with h5py.File(path, "w") as out:
        features = out.create_dataset(
            "features", shape=(plan.n_rows, dim), dtype=np.float16, chunks=(chunk, dim)
        )
        ids = out.create_dataset("cutout_id", shape=(plan.n_rows,), dtype=np.int64)
        for block in range(plan.n_blocks):
            start, stop = plan.block_range(block)
            with h5py.File(directory / f"block-{block:08d}.h5", "r") as f:
                features[start:stop] = f["features"][:]
                ids[start:stop] = f["cutout_id"][:]


def timed_written(work) -> tuple[float, float]:
    """Wall seconds of ``work()`` and the GB this process passed to write calls meanwhile."""
    written, began = psutil.Process().io_counters().write_chars, time.perf_counter()
    work()
    return time.perf_counter() - began, (psutil.Process().io_counters().write_chars - written) / 1e9


def join_benchmark(args: argparse.Namespace, work: Path) -> None:
    """(d): the serial join against the join of rows written in place, on the same synthetic blocks."""
    n, dim = args.join_rows, args.join_dim
    plan = Plan(n, JOIN_BLOCK_ROWS, "merge-synthetic")
    ids = np.arange(n, dtype=np.int64)
    before, now = work / "before", work / "now"
    before.mkdir(parents=True)

    def write_before() -> None:
        for block in range(plan.n_blocks):
            start, stop = plan.block_range(block)
            # As the blocks were written before: whole files, flushed, renamed.
            with atomic_path(before / f"block-{block:08d}.h5", fsync=True) as tmp, h5py.File(tmp, "w") as f:
                f.create_dataset("features", data=join_rows(block, start, stop, dim))
                f.create_dataset("cutout_id", data=ids[start:stop])

    shards = BlockShards(now)
    shards.load_or_create_plan(n, JOIN_BLOCK_ROWS, plan.source_id)
    shards.create_data(plan, ids, dim, np.float16, {})

    def write_now() -> None:
        for block in range(plan.n_blocks):
            start, stop = plan.block_range(block)
            shards.write(block, start, ids[start:stop], join_rows(block, start, stop, dim), rank=block % 2)

    write_s_before, _ = timed_written(write_before)
    write_s, _ = timed_written(write_now)
    serial_s, serial_gb = timed_written(lambda: serial_join(before, plan, dim, work / "serial.h5"))
    join_s, join_gb = timed_written(lambda: join(shards, plan, ids, work / "features.h5"))
    with h5py.File(work / "serial.h5", "r") as a, h5py.File(work / "features.h5", "r") as b:
        step = max(1, n // 1000)
        if not np.array_equal(a["features"][::step], b["features"][::step]):
            raise RuntimeError("the two joins disagree")
    print(
        f"RESULT join rows={n} dim={dim} dtype=float16 blocks={plan.n_blocks} serial_join_s={serial_s:.3f} "
        f"join_s={join_s:.3f} ratio={serial_s / join_s:.1f} serial_join_gb_written={serial_gb:.3f} "
        f"join_gb_written={join_gb:.3f} write_s_before={write_s_before:.2f} write_s={write_s:.2f} "
        "baseline=serial_join",
        flush=True,
    )
    for path in (before, now, work / "serial.h5", work / "features.h5"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mosaics", type=int, default=2, help="synthetic mosaics")
    parser.add_argument("--size", type=int, default=2048, help="synthetic mosaic side in pixels")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--overlap", type=float, default=0.5, help="more overlap = more windows from one sky")
    parser.add_argument("--normalization", default="minmax")
    parser.add_argument("--resize", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="loader processes (on a CPU the forward dominates: 0 leaves every core to it)",
    )
    parser.add_argument("--loader-windows", type=int, default=1024, help="windows in the loader comparison")
    parser.add_argument(
        "--loader-threads",
        type=int,
        default=None,
        help="CPU threads in the loader comparison (default: the stage's); on a busy machine many threads "
        "stall the per-sample path's small operations far more than our batched ones",
    )
    parser.add_argument(
        "--backbone", default="resnet18", help="a backbone config (resnet18, vit_small_dinov2 ...)"
    )
    parser.add_argument("--windows", type=int, default=1024, help="windows in the extraction comparison")
    parser.add_argument("--datapath-windows", type=int, default=4096, help="windows in the data path figures")
    parser.add_argument(
        "--datapath-workers",
        type=int,
        nargs="+",
        default=list(range(1, len(os.sched_getaffinity(0)) + 1)),
        help="loader worker counts of the data path figures (default: 1 … cores)",
    )
    parser.add_argument(
        "--only-datapath", action="store_true", help="only the data path figures (c), not (a) and (b)"
    )
    parser.add_argument("--only-join", action="store_true", help="only the join figures (d)")
    parser.add_argument("--join-rows", type=int, default=2_000_000, help="rows in the join figures")
    parser.add_argument("--join-dim", type=int, default=384, help="feature width in the join figures")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes of each; the best counts")
    parser.add_argument("--workdir", type=Path, default=None, help="run store and sky (default: a temp dir)")
    args = parser.parse_args()
    if not args.device.startswith("cuda"):
        # As the features stage does on a CPU: compute threads = cores not taken by loader processes.
        torch.set_num_threads(cpu_threads(args.num_workers))

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        if args.only_join:
            join_benchmark(args, work / "join")
            return
        common = [f"paths.runs_dir={work / 'runs'}", f"paths.data_dir={work / 'data'}", "logger=none"]
        sky = [f"survey.mosaics={args.mosaics}", f"survey.size={args.size}"]
        windows = [f"cutouts.window_size={args.window}", f"cutouts.overlap={args.overlap}"]
        cut = cutouts_task.run(config([*common, "stage=cutouts", *sky, *windows]))
        merge = merge_task.run(config([*common, "stage=merge", f"cutouts_ids=[{cut['run_id']}]"]))
        merged = RunStore(work / "runs").resolve(merge["run_id"], stage="merge").artifact("merged.h5")
        n_windows = len(WindowReader(merged).cutout_ids)
        accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
        cfg = config(
            [
                *common,
                "stage=features",
                f"source_id={merge['run_id']}",
                f"backbone={args.backbone}",
                f"normalization={args.normalization}",
                f"resize={args.resize}",
                f"batch_size={args.batch_size}",
                f"num_workers={args.num_workers}",
                f"accelerator={accelerator}",
                f"precision={args.precision}",
                f"limit_batches={math.ceil(min(args.windows, n_windows) / args.batch_size)}",
            ]
        )
        print(
            f"sky: {args.mosaics} x {args.size}^2 px, {n_windows} windows of {args.window} px; device {args.device}"
        )

        datapath_benchmark(args, merged, cfg)
        if args.only_datapath:
            return
        if not args.device.startswith("cuda"):
            torch.set_num_threads(args.loader_threads or cpu_threads(args.num_workers))
        rates = loader_benchmark(args, merged, cfg, work)
        if not args.device.startswith("cuda"):
            torch.set_num_threads(cpu_threads(args.num_workers))
        ours, naive = rates["ours"], rates["naive"]
        print(f"RESULT loader ours={ours:.1f} naive={naive:.1f} ratio={ours / naive:.2f}", flush=True)
        print(
            f"loader decomposition (windows/s): replaced .npy scripts {rates['old']:.1f} "
            f"-> one channel {rates['naive_aa']:.1f} (x{rates['naive_aa'] / rates['old']:.2f}) "
            f"-> our resize kernel {naive:.1f} (x{naive / rates['naive_aa']:.2f}) "
            f"-> batched {ours:.1f} (x{ours / naive:.2f}); replaced scripts to ours x{ours / rates['old']:.2f}",
            flush=True,
        )

        model_only = pipeline = 0.0
        for repeat in range(args.repeats):
            model_only = max(model_only, model_only_rate(cfg, args, min(args.windows, n_windows)))
            cfg.force = repeat > 0
            pipeline = max(pipeline, features_task.run(cfg)["metrics"]["windows_per_s"])
        print(
            f"RESULT extraction pipeline={pipeline:.1f} model_only={model_only:.1f} ratio={pipeline / model_only:.2f}"
            f" backbone={args.backbone} precision={features_task.resolve_precision(cfg)} batch={args.batch_size}",
            flush=True,
        )


if __name__ == "__main__":
    main()
