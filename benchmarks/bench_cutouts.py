"""Cutout stage vs the loop of the per-cutout .npy scripts this project replaces, on one DR2-sized
synthetic mosaic.

On a synthetic 8938² float64 NaN-blanked mosaic (the size of the smallest DR2 mosaics), in one run:

(a) ours: the cutout stage's per-mosaic work (open memory-mapped, statistics of every 128-px window with
    50 % overlap, NaN policy, sky positions, write the index part), on one thread, and with the threads
    the stage uses when it runs one worker process (all cores this process may use);
(b) naive: the per-cutout .npy scripts this project replaces (loop over windows, skip any window with a
    NaN, ``np.save`` each window to its own file, list them in a JSON file), one thread;
(c) one plain read pass over the mosaic file (``readinto`` of every byte).

All run on a warm page cache (the read pass runs first, twice); (a) and (b) run ``--repeats`` times in
turn and the best of each counts (a shared machine's load only ever slows a run down). Rates are windows
per second. ``RESULT cutouts`` compares like with like, one thread each: ``ratio`` = ours / naive.
``RESULT cutouts_all_cores`` is the stage's own setting: its rate, the gain over one thread, and
``read_pass_ratio`` = time(ours) / time(read pass). Then the reader: random batches of 256 windows through
``WindowReader`` vs ``np.load`` of the naive per-window files.

Usage: ``python benchmarks/bench_cutouts.py [--size 8938] [--window 128] [--overlap 0.5] [--repeats 2]
[--workdir DIR] [--sky DIR]``
The last lines are ``RESULT cutouts ours=<r> naive=<r> ratio=<x> threads=1`` and
``RESULT cutouts_all_cores ours=<r> threads=<n> vs_one_thread=<x> read_pass_ratio=<y>``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from radio_curation.cutouts.cut import cut_mosaic
from radio_curation.cutouts.index import read_index, write_index
from radio_curation.cutouts.merge import Merger
from radio_curation.cutouts.reader import WindowReader
from radio_curation.cutouts.strategies import SlidingWindow
from radio_curation.sky.fitsio import MosaicFiles
from radio_curation.sky.synthetic import SkyParams, ensure_sky


def read_pass(path: Path) -> float:
    """Seconds to read every byte of ``path`` once."""
    buffer = bytearray(64 * 2**20)
    start = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.readinto(buffer):
            pass
    return time.perf_counter() - start


def naive(path: Path, out: Path, size: int, stride: int) -> tuple[float, int]:
    """The replaced scripts' cutouts: loop, skip windows with NaN, one .npy per window, a JSON list."""
    out.mkdir(parents=True)
    start = time.perf_counter()
    with fits.open(path) as hdul:
        data = hdul[0].data
        listing = []
        for y in range(0, data.shape[0] - size + 1, stride):
            for x in range(0, data.shape[1] - size + 1, stride):
                window = data[y : y + size, x : x + size]
                if np.isnan(window).any():
                    continue
                name = out / f"cutout_{y}_{x}.npy"
                np.save(name, window)
                listing.append({"file": str(name), "y": y, "x": x, "size": size})
    (out / "cutouts.json").write_text(json.dumps(listing))
    return time.perf_counter() - start, len(listing)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=8938, help="mosaic side in pixels (DR2: 8938-10210)")
    parser.add_argument("--window", type=int, default=128)
    parser.add_argument("--overlap", type=float, default=0.5)
    parser.add_argument("--batches", type=int, default=20, help="reader batches of 256 windows")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each; the best counts")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to write (default: a temporary dir)"
    )
    parser.add_argument("--sky", type=Path, default=None, help="keep the generated sky here and reuse it")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_cutouts_", dir=args.workdir))
    try:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores")
        start = time.perf_counter()
        sky = ensure_sky(args.sky or work / "sky", SkyParams(mosaics=1, size=args.size, seed=0))
        directory = next((sky / "mosaics").iterdir())
        files = MosaicFiles(
            directory.name, directory / "mosaic-blanked.fits", directory / "mosaic.pybdsmmask.fits"
        )
        image_bytes = files.image.stat().st_size
        print(
            f"synthetic mosaic {args.size}² float64 ({image_bytes / 2**20:.0f} MiB, "
            f"{np.isnan(fits.getdata(files.image)[::64, ::64]).mean():.0%} blanked) "
            f"ready in {time.perf_counter() - start:.1f} s"
        )

        read_pass(files.image)
        t_read = min(read_pass(files.image) for _ in range(2))

        strategy = SlidingWindow(args.window, args.overlap)
        # As the stage does with one worker process: the cores this process may use.
        threads = len(os.sched_getaffinity(0))
        t_all, t_one, t_naive = [], [], []
        for attempt in range(args.repeats):
            start = time.perf_counter()
            counts = cut_mosaic(files, strategy, work / f"ours{attempt}.h5", threads)
            t_all.append(time.perf_counter() - start)
            start = time.perf_counter()
            cut_mosaic(files, strategy, work / f"ours_1thread{attempt}.h5", 1)
            t_one.append(time.perf_counter() - start)
            # Each naive run writes its own files; the previous run's are removed first (not timed).
            shutil.rmtree(work / "naive", ignore_errors=True)
            seconds, saved = naive(files.image, work / "naive", args.window, strategy.stride)
            t_naive.append(seconds)
        windows = counts["windows"]
        if saved != windows:
            raise SystemExit(f"naive loop kept {saved} windows, ours {windows}: the two disagree")
        t_all_best, t_one_best, t_naive_best = min(t_all), min(t_one), min(t_naive)

        r_all, r_one, r_naive = windows / t_all_best, windows / t_one_best, windows / t_naive_best
        print(f"(c) plain read pass : {t_read:7.2f} s  -> {windows / t_read:10.0f} cutouts/s equivalent")
        print(
            f"(a) ours ({threads} threads): {t_all_best:7.2f} s  -> {r_all:10.0f} cutouts/s ({windows} windows, "
            f"{counts['dropped_nan']} dropped for NaN)"
        )
        print(f"(a) ours, 1 thread  : {t_one_best:7.2f} s  -> {r_one:10.0f} cutouts/s")
        print(f"(b) naive loop      : {t_naive_best:7.2f} s  -> {r_naive:10.0f} cutouts/s (1 thread)")
        print(f"    best of {args.repeats} runs each")

        index = read_index(work / "ours0.h5")
        merged, _ = Merger(dedup=False).merge([index])
        write_index(work / "merged.h5", merged)
        reader = WindowReader(work / "merged.h5")
        table = reader.table()
        rng = np.random.default_rng(0)
        batches = [rng.choice(len(table["cutout_id"]), 256, replace=False) for _ in range(args.batches)]
        reader.read(table["cutout_id"][batches[0]])
        start = time.perf_counter()
        for rows in batches:
            reader.read(table["cutout_id"][rows])
        t_reader = time.perf_counter() - start
        start = time.perf_counter()
        for rows in batches:
            np.stack(
                [np.load(work / "naive" / f"cutout_{table['y0'][r]}_{table['x0'][r]}.npy") for r in rows]
            ).astype(np.float32)
        t_load = time.perf_counter() - start
        n = 256 * args.batches
        print(
            f"reader: WindowReader {n / t_reader:.0f} windows/s, np.load per-window files {n / t_load:.0f} windows/s"
        )
        print(f"RESULT reader ours={n / t_reader:.0f} naive={n / t_load:.0f} ratio={t_load / t_reader:.2f}")
        print(f"RESULT cutouts ours={r_one:.0f} naive={r_naive:.0f} ratio={r_one / r_naive:.1f} threads=1")
        print(
            f"RESULT cutouts_all_cores ours={r_all:.0f} threads={threads} vs_one_thread={r_all / r_one:.2f} "
            f"read_pass_ratio={t_all_best / t_read:.2f}"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
