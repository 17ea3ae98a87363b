"""Training throughput: our data path against the way of the per-cutout .npy scripts this project replaces,
same BYOL ResNet-18, same batch, same trainer.

On a synthetic sky cut into 128 px windows (cutouts + merge stages in a temporary run store):

- ours: the train stage's DataModule (one batched ``WindowReader`` gather per batch, or the HDF5 pixel
  cache with ``--cache``) and the radio augmentation making both views for the whole batch, on the GPU
  (``--device cuda``) or, on CPUs, in the DataLoader workers (``data.augment_on=auto``);
- naive: the way of those scripts: one ``.npy`` file per window, ``np.load`` and per-sample torchvision
  transforms (the same normalisation, random resized crop, flips, rotation, blur, contrast jitter, noise)
  for two views in DataLoader workers, default collate.

Both feed the same BYOL module as ``train.py ssl=byol backbone=resnet18`` (torchvision ResNet-18, one channel) in the
same Lightning trainer; images/s are timed over ``--steps`` optimizer steps after ``--warmup`` steps, the
best of ``--repeats`` interleaved runs of each.
With ``--device cuda`` the GPU utilisation (``nvidia-smi``) during the timed steps is printed too.

Usage::

    python benchmarks/bench_train.py                                   # CPU, batch 32
    python benchmarks/bench_train.py --device cuda --batch-size 256 --steps 30 --num-workers 8 --overlap 0.875

Prints ``RESULT train ours=<r> naive=<r> ratio=<x>`` (training images/s), and before it
``RESULT train_data ...``: the rate at which each data path alone delivers view pairs (no model), which is
what decides training throughput once the model is fast (on a GPU), and
``RESULT datapath windows_per_s=<r> gb_per_s=<r> memcpy_gb_per_s=<r> fraction=<f> workers=<n>
cpu_us_per_pair=<t>``: our data path's view pairs per second (both views on the training device: the GPU,
or the main process on CPUs) over ``--datapath-batches`` batches, for 1 … cores loader workers and then
the train stage's default count, against a plain one-core ``memcpy`` of the same bytes (two float32 views
of ``--window``² per window) in the same run, and the CPU time all its processes spend per pair (which
other work on the machine inflates far less than the rate: ``cores / cpu_us_per_pair`` is about the rate
on idle cores); then ``RESULT datapath_before ...`` likewise for the data path before resident windows
(``data.resident_gb=0``), and ``RESULT datapath_views_before ...`` for the views as they were made before
(:class:`GroupedConvViews`). First ``RESULT views ours_us=<t> before_us=<t> ratio=<x>``: CPU time of one
thread per view pair of the augmentation alone, ours against :class:`GroupedConvViews`, on one batch.

With ``--only-resident`` (no training): ``RESULT resident ranks=<R> windows=<n> data_gb=<g> node_gb=<g>
per_rank_copies_node_gb=<g> ratio=<x> setup_s=<t> per_rank_copies_setup_s=<t>``: the memory the resident
windows take on a node of ``--resident-ranks`` gloo ranks (the sum over the ranks of the growth of their
proportional set size, every window read by every rank), held once per node through
``data.resident_shared_dir`` against the named baseline ``per_rank_copies`` (``resident_shared_dir=null``:
each rank reads its own copy, as before), and the wall time of the datamodule's setup.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytorch_lightning as pl
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
import torchvision.transforms as T
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.bench_distributed import free_port
from radio_curation.backbones import build_backbone, instantiate_user
from radio_curation.cutouts.reader import WindowReader
from radio_curation.data.augmentation import (
    RadioAugmentation,
    robust_rms,
    sample_crop_params,
    views_generator,
)
from radio_curation.data.datamodule import TrainingWindows
from radio_curation.runs.store import RunStore
from radio_curation.tasks import cutouts as cutouts_task
from radio_curation.tasks import merge as merge_task

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def config(root: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(str(CONFIGS), version_base="1.3"):
        return compose(root, overrides=overrides)


class NpyViews(Dataset):
    """The old way: one ``.npy`` per window, two views made one sample at a time in the worker."""

    def __init__(self, files: list[Path], normalization: nn.Module, view: T.Compose) -> None:
        self.files = files
        self.normalization = normalization
        self.view = view

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Tensor:
        image = torch.from_numpy(np.load(self.files[index]).astype(np.float32))[None, None]
        image = self.normalization(image)[0]
        return torch.stack([self.view(image), self.view(image)])


def add_noise(image: Tensor, level: float = 0.05) -> Tensor:
    """Gaussian noise, half of the time (per-sample transform of the old way)."""
    return image + torch.randn_like(image) * level if torch.rand(()) < 0.5 else image


def naive_view(size: int) -> T.Compose:
    """Per-sample torchvision views with the same ingredients as ``augmentation=radio``."""
    return T.Compose(
        [
            T.RandomResizedCrop(size, scale=(0.65, 1.0), ratio=(1.0, 1.0), antialias=True),
            T.RandomHorizontalFlip(),
            T.RandomVerticalFlip(),
            T.RandomRotation(180),
            T.RandomApply([T.GaussianBlur(9, sigma=(0.1, 1.5))], p=0.5),
            T.RandomApply([T.ColorJitter(contrast=0.4)], p=0.8),
            T.Lambda(add_noise),
        ]
    )


class SplitViews(nn.Module):
    """Stands in for the augmentation when the loader already made the views: ``[B, 2, C, H, W]``."""

    n_global = 2
    n_local = 0

    def forward(self, views: Tensor, generator: torch.Generator | None = None) -> list[Tensor]:
        # The views are already drawn: the training step's per-batch generator has nothing left to seed.
        return [views[:, 0], views[:, 1]]


class GroupedConvViews(RadioAugmentation):
    """The views as made before the CPU work on them, the named baseline of ``RESULT views``: the same
    draws and steps, with ``F.affine_grid``, blur as a reflection-padded grouped convolution (one group per
    image), and beam noise as white noise of the view's size blurred likewise (edges reflected), rescaled by
    ``torch.std``."""

    @staticmethod
    def blur(x: Tensor, sigma: Tensor, max_sigma: float) -> Tensor:
        b, c, h, w = x.shape
        radius = max(1, math.ceil(3 * max_sigma))
        offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
        kernel = torch.exp(-0.5 * (offsets[None, :] / sigma.to(x.dtype).clamp_min(1e-3)[:, None]) ** 2)
        kernel = (kernel / kernel.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)
        flat = F.pad(x.reshape(1, b * c, h, w), (radius, radius, radius, radius), mode="reflect")
        flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * c)
        return F.conv2d(flat, kernel[:, None, :, None], groups=b * c).reshape(b, c, h, w)

    def view(self, x: Tensor, size: int, scale, generator: torch.Generator | None = None) -> Tensor:
        b, device, g = x.shape[0], x.device, generator
        p = sample_crop_params(b, scale, self.rotate, self.flip, device, g)
        cos, sin = p.angle.cos(), p.angle.sin()
        theta = torch.stack(
            [
                torch.stack([p.side * cos * p.flip, -p.side * sin, p.cx], dim=-1),
                torch.stack([p.side * sin * p.flip, p.side * cos, p.cy], dim=-1),
            ],
            dim=1,
        )
        grid = F.affine_grid(theta, [b, 1, size, size], align_corners=False)
        v = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
        sigma = torch.rand(b, device=device, generator=g) * (self.blur_sigma[1] - self.blur_sigma[0])
        sigma = (sigma + self.blur_sigma[0]) * (torch.rand(b, device=device, generator=g) < self.blur_prob)
        rows = torch.nonzero(sigma > 0).flatten()
        if len(rows):
            v[rows] = self.blur(v[rows], sigma[rows], self.blur_sigma[1])
        level = torch.rand(b, device=device, generator=g) * (self.noise_level[1] - self.noise_level[0])
        level = (level + self.noise_level[0]) * (torch.rand(b, device=device, generator=g) < self.noise_prob)
        beam = self.noise_correlation * size / (p.side * x.shape[-1])
        rows = torch.nonzero(level > 0).flatten()
        white = torch.randn(b, 1, size, size, device=device, generator=g)[rows]
        if len(rows):
            noise = self.blur(white, beam[rows], float(beam.max()))
            noise = noise / noise.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-12)
            v[rows] = v[rows] + noise * (level[rows] * robust_rms(v[rows]))[:, None, None, None]
        v = self.normalization(v)
        factor = torch.rand(b, device=device, generator=g) * 2 * self.contrast + 1 - self.contrast
        factor = torch.where(torch.rand(b, device=device, generator=g) < self.contrast_prob, factor, 1.0)
        mean = v.mean(dim=(1, 2, 3), keepdim=True)
        return (v - mean) * factor[:, None, None, None] + mean


def views_cpu_time(augmentation: nn.Module, windows: Tensor, repeats: int) -> float:
    """Seconds of CPU time per view pair of ``augmentation`` on one thread (best of ``repeats``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    augmentation(windows, generator=views_generator(0))  # warm-up
    best = math.inf
    for i in range(repeats):
        start = time.process_time()
        augmentation(windows, generator=views_generator(i + 1))
        best = min(best, time.process_time() - start)
    torch.set_num_threads(threads)
    return best / len(windows)


class StepTimer(pl.Callback):
    """Images/s over the optimizer steps after ``warmup`` (and GPU utilisation while they run)."""

    def __init__(self, warmup: int, batch_size: int) -> None:
        self.warmup = warmup
        self.batch_size = batch_size
        self.start = 0.0
        self.rate = 0.0
        self.gpu = GpuSampler()

    def _sync(self, trainer: pl.Trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            self._sync(trainer)
            self.start = time.perf_counter()
            self.gpu.start()

    def on_train_end(self, trainer, pl_module):
        self._sync(trainer)
        self.gpu.stop()
        steps = trainer.global_step - self.warmup
        self.rate = steps * self.batch_size / (time.perf_counter() - self.start)


class GpuSampler:
    """Mean GPU utilisation from ``nvidia-smi`` polled in a thread (nothing when there is no nvidia-smi)."""

    def __init__(self, period: float = 0.2) -> None:
        self.period = period
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _poll(self) -> None:
        while not self._stop.is_set():
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                check=False,
            )
            if out.returncode == 0 and out.stdout.strip():
                self.samples.append(float(out.stdout.split()[0]))
            self._stop.wait(self.period)

    def start(self) -> None:
        if torch.cuda.is_available() and shutil.which("nvidia-smi"):
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return float(np.mean(self.samples)) if self.samples else None


def write_npy(reader: WindowReader, ids: np.ndarray, out: Path) -> list[Path]:
    """Each window as its own ``.npy`` file (float64, as the old cutouts were saved)."""
    out.mkdir(parents=True, exist_ok=True)
    files = []
    for start in range(0, len(ids), 512):
        chunk = ids[start : start + 512]
        for cid, window in zip(chunk, reader.read(chunk), strict=True):
            path = out / f"patch_{cid}.npy"
            np.save(path, window[0].astype(np.float64))
            files.append(path)
    return files


def train_rate(
    args: argparse.Namespace, cfg: DictConfig, augmentation: nn.Module, data
) -> tuple[float, float | None]:
    """Images/s of BYOL ResNet-18 fed by ``data`` (a DataModule or a DataLoader)."""
    pl.seed_everything(0, verbose=False)
    method = instantiate(cfg.ssl, _convert_="all")  # BYOL as train.py builds it (ssl=byol)
    # Same learning rate for both (no batch scaling: only ours comes with a DataModule to scale by).
    model = method(
        backbone=build_backbone(cfg.backbone), augmentation=augmentation, warmup_epochs=0, lr_batch_size=None
    )
    timer = StepTimer(args.warmup, args.batch_size)
    gpu = args.device.startswith("cuda")
    trainer = pl.Trainer(
        accelerator="gpu" if gpu else "cpu",
        devices=1,
        precision="bf16-mixed" if gpu else "32-true",
        max_steps=args.warmup + args.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[timer],
    )
    if isinstance(data, pl.LightningDataModule):
        trainer.fit(model, datamodule=data)
    else:
        trainer.fit(model, train_dataloaders=data)
    return timer.rate, timer.gpu.mean


def cpu_seconds() -> dict[int, float]:
    """CPU time (user + system) so far of this process and each of its children (loader workers), by pid."""
    times = {}
    for process in [psutil.Process(), *psutil.Process().children(recursive=True)]:
        try:
            cpu = process.cpu_times()
        except psutil.NoSuchProcess:
            continue
        times[process.pid] = cpu.user + cpu.system
    return times


def data_rate(loader: DataLoader, augmentation: nn.Module, device: torch.device) -> tuple[float, float]:
    """View pairs/s a loader delivers on ``device`` (views made there if not in workers), and the CPU time
    all its processes spend per pair (seconds; what the other work on a loaded machine inflates far less)."""
    augmentation.to(device)

    def views(batch: Tensor | dict[str, list[Tensor]]) -> list[Tensor]:
        if isinstance(batch, dict):
            return [v.to(device, non_blocking=True) for v in batch["views"]]
        return augmentation(batch.to(device, non_blocking=True))

    batches = iter(loader)
    views(next(batches))  # warm-up: workers started, first batch made
    cpu_start = cpu_seconds()
    start, images = time.perf_counter(), 0
    for batch in batches:
        images += views(batch)[0].shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    cpu = sum(t - cpu_start.get(pid, 0.0) for pid, t in cpu_seconds().items())
    return images / elapsed, cpu / images


def memcpy_rate(nbytes: int) -> float:
    """Bytes/s of a plain one-core copy of ``nbytes`` (best of five)."""
    source = np.ones(nbytes // 4, np.float32)
    target = np.empty_like(source)
    best = math.inf
    for _ in range(6):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return nbytes / best


def datapath_figures(
    args: argparse.Namespace,
    data: TrainingWindows,
    before: TrainingWindows,
    augmentation: nn.Module,
    views_before: nn.Module,
) -> None:
    """``RESULT datapath`` lines: view pairs/s of our data path for each worker count, against memcpy.

    ``RESULT datapath_before`` lines: the same for the data path before resident windows (``before``: one
    reader gather per batch in the workers); ``RESULT datapath_views_before``: ours with the views made as
    before (``views_before``, on CPUs).
    """
    pair_bytes = 2 * args.window * args.window * 4
    memcpy = memcpy_rate(args.batch_size * pair_bytes)
    device = torch.device(args.device)
    runs = [("datapath", data, augmentation), ("datapath_before", before, augmentation)]
    if data.augmentation is not None:
        runs.append(("datapath_views_before", data, views_before))
    for name, windows, views in runs:
        in_workers, windows.augmentation = windows.augmentation, views if windows.augmentation else None
        for workers in [*args.datapath_workers, int(config("train", []).data.num_workers)]:
            windows.num_workers = workers
            passes = [data_rate(windows.train_dataloader(), views, device) for _ in range(args.repeats)]
            rate, cpu = max(r for r, _ in passes), min(c for _, c in passes)
            print(
                f"RESULT {name} windows_per_s={rate:.1f} gb_per_s={rate * pair_bytes / 1e9:.3f} "
                f"memcpy_gb_per_s={memcpy / 1e9:.3f} fraction={rate * pair_bytes / memcpy:.3f} "
                f"workers={workers} cpu_us_per_pair={cpu * 1e6:.0f}",
                flush=True,
            )
        windows.num_workers, windows.augmentation = args.num_workers, in_workers


def pss_bytes() -> int:
    """This process's proportional set size (shared pages split among the processes mapping them)."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no Pss in /proc/self/smaps_rollup")


def resident_rank(
    rank: int, world: int, port: int, merged: Path, ids: np.ndarray, shared: str | None, out
) -> None:
    """One rank of ``RESULT resident``: its datamodule's setup time and PSS growth, every window read."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    before = pss_bytes()
    datamodule = TrainingWindows(merged, ids, batch_size=32, resident_gb=1e3, shared_dir=shared)
    began = time.perf_counter()
    datamodule.setup("fit")
    setup_s = time.perf_counter() - began
    float(datamodule._pixels.sum())  # every page of the windows read by this rank
    dist.barrier()
    out.put((rank, setup_s, pss_bytes() - before))
    dist.barrier()
    dist.destroy_process_group()


def resident_figures(merged: Path, n_windows: int, ranks: int) -> None:
    """``RESULT resident``: the node's memory for the resident windows, one copy per node vs per rank."""
    ids = np.resize(WindowReader(merged).cutout_ids, n_windows)
    figures = {}
    for name, shared in (("per_rank_copies", None), ("shared", "/dev/shm")):
        queue = mp.get_context("spawn").SimpleQueue()
        mp.spawn(resident_rank, args=(ranks, free_port(), merged, ids, shared, queue), nprocs=ranks)
        got = [queue.get() for _ in range(ranks)]
        figures[name] = (max(g[1] for g in got), sum(g[2] for g in got) / 1e9)
    side = WindowReader(merged).positions(ids[:1])["size"][0]
    data_gb = n_windows * side * side * 4 / 1e9
    (setup_s, node_gb), (base_setup_s, base_gb) = figures["shared"], figures["per_rank_copies"]
    print(
        f"RESULT resident ranks={ranks} windows={n_windows} data_gb={data_gb:.3f} node_gb={node_gb:.3f} "
        f"per_rank_copies_node_gb={base_gb:.3f} ratio={base_gb / node_gb:.2f} setup_s={setup_s:.2f} "
        f"per_rank_copies_setup_s={base_setup_s:.2f} baseline=per_rank_copies",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mosaics", type=int, default=2, help="synthetic mosaics")
    parser.add_argument("--size", type=int, default=2048, help="synthetic mosaic side in pixels")
    parser.add_argument("--window", type=int, default=128, help="window and view side in pixels")
    parser.add_argument("--overlap", type=float, default=0.5, help="more overlap = more windows from one sky")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps first")
    parser.add_argument("--num-workers", type=int, default=2)
    parser.add_argument(
        "--repeats", type=int, default=2, help="interleaved repeats; the best of each is kept"
    )
    parser.add_argument("--cache", action="store_true", help="ours reads the HDF5 pixel cache")
    parser.add_argument("--only-resident", action="store_true", help="only RESULT resident (no training)")
    parser.add_argument("--resident-windows", type=int, default=8192, help="windows held in RESULT resident")
    parser.add_argument(
        "--resident-ranks", type=int, default=2, help="gloo ranks of one node in RESULT resident"
    )
    parser.add_argument(
        "--datapath-workers",
        type=int,
        nargs="+",
        default=list(range(1, len(os.sched_getaffinity(0)) + 1)),
        help="loader worker counts of the data path figures (default: 1 … cores)",
    )
    parser.add_argument(
        "--datapath-batches", type=int, default=64, help="batches per data path figure (after one warm-up)"
    )
    parser.add_argument(
        "--only-datapath", action="store_true", help="only the data path figures, not the comparisons"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workdir", type=Path, default=None, help="run store and sky (default: a temp dir)")
    args = parser.parse_args()
    most = max([*args.datapath_workers, int(config("train", []).data.num_workers)])
    if args.datapath_batches < 16 * most:
        # Each worker has batches in flight when the clock starts: they must be a small part of the count.
        parser.error(
            f"--datapath-batches={args.datapath_batches} is too few to time {most} loader workers: "
            f"give at least {16 * most}."
        )

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        common = [f"paths.runs_dir={work / 'runs'}", f"paths.data_dir={work / 'data'}", "logger=none"]
        sky = [f"survey.mosaics={args.mosaics}", f"survey.size={args.size}"]
        windows = [f"cutouts.window_size={args.window}", f"cutouts.overlap={args.overlap}"]
        cut = cutouts_task.run(config("extract", [*common, "stage=cutouts", *sky, *windows]))
        merge = merge_task.run(config("extract", [*common, "stage=merge", f"cutouts_ids=[{cut['run_id']}]"]))
        merged = RunStore(work / "runs").resolve(merge["run_id"], stage="merge").artifact("merged.h5")
        if args.only_resident:
            resident_figures(merged, args.resident_windows, args.resident_ranks)
            return
        reader = WindowReader(merged)
        needed = (args.warmup + args.steps) * args.batch_size
        if len(reader.cutout_ids) < needed:
            raise SystemExit(f"{len(reader.cutout_ids)} windows < {needed} needed: raise --overlap or --size")
        ids = np.sort(np.random.default_rng(0).choice(reader.cutout_ids, needed, replace=False))
        cfg = config("train", [*common, "ssl=byol", "backbone=resnet18", "normalization=minmax"])
        print(
            f"{len(reader.cutout_ids)} windows of {args.window} px; device {args.device}; batch {args.batch_size}"
        )

        normalization = instantiate_user(cfg.normalization)
        ours_aug = RadioAugmentation(normalization, 1, global_size=args.window)
        on_cpu = not args.device.startswith("cuda")
        views_before = GroupedConvViews(normalization, 1, global_size=args.window)
        sample = torch.from_numpy(reader.read(ids[: args.batch_size]))
        ours_us = views_cpu_time(ours_aug, sample, args.repeats) * 1e6
        before_us = views_cpu_time(views_before, sample, args.repeats) * 1e6
        print(f"RESULT views ours_us={ours_us:.1f} before_us={before_us:.1f} ratio={before_us / ours_us:.2f}")
        datapath_ids = np.sort(
            np.random.default_rng(1).choice(
                reader.cutout_ids, min(len(reader.cutout_ids), args.datapath_batches * args.batch_size), False
            )
        )
        datapath = [
            TrainingWindows(
                merged,
                datapath_ids,
                args.batch_size,
                num_workers=args.num_workers,
                augmentation=ours_aug if on_cpu else None,  # as train.py's data.augment_on=auto
                resident_gb=resident_gb,
            )
            for resident_gb in (cfg.data.resident_gb, 0)
        ]
        datapath[0].setup("fit")
        datapath_figures(args, *datapath, ours_aug, views_before)
        if args.only_datapath:
            return

        ours_data = TrainingWindows(
            merged,
            ids,
            args.batch_size,
            num_workers=args.num_workers,
            cache_path=work / "cache.h5" if args.cache else None,
            augmentation=ours_aug if on_cpu else None,  # as train.py's data.augment_on=auto
            resident_gb=cfg.data.resident_gb,
        )
        files = write_npy(reader, ids, work / "npy")
        naive_data = DataLoader(
            NpyViews(files, instantiate_user(cfg.normalization), naive_view(args.window)),
            batch_size=args.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=args.num_workers,
            persistent_workers=args.num_workers > 0,
            pin_memory=args.device.startswith("cuda"),
        )
        device = torch.device(args.device)
        # Interleaved repeats, best of each: other processes on the machine only ever slow a pass down.
        ours_views = naive_views = ours = naive = 0.0
        ours_gpu = naive_gpu = None
        for _ in range(args.repeats):
            ours_views = max(ours_views, data_rate(ours_data.train_dataloader(), ours_aug, device)[0])
            naive_views = max(naive_views, data_rate(naive_data, SplitViews(), device)[0])
        ratio = ours_views / naive_views
        print(f"RESULT train_data ours={ours_views:.1f} naive={naive_views:.1f} ratio={ratio:.2f}")
        for _ in range(args.repeats):
            rate, gpu = train_rate(args, cfg, ours_aug, ours_data)
            if rate > ours:
                ours, ours_gpu = rate, gpu
            rate, gpu = train_rate(args, cfg, SplitViews(), naive_data)
            if rate > naive:
                naive, naive_gpu = rate, gpu

        if ours_gpu is not None or naive_gpu is not None:
            print(f"gpu_utilisation ours={ours_gpu}% naive={naive_gpu}%")
        print(f"RESULT train ours={ours:.1f} naive={naive:.1f} ratio={ours / naive:.2f}", flush=True)


if __name__ == "__main__":
    main()
