"""Scale benchmark: each curation stage's time and peak memory at growing row counts, and their growth.

Writes a synthetic ``features.h5`` (d = 384, float16 and float32, planted clusters with Zipf-distributed
sizes) and a synthetic merged index laid over LoTSS DR2's geometry (841 pointings on a grid like DR2's, each
mosaic with the size and WCS of a real DR2 header from ``--headers``), then runs every stage × size in a
fresh subprocess with ``--threads`` threads under an address-space cap (``RLIMIT_AS``, ``--mem-cap-gb``) and
a time cap (``--time-cap-s``); a stage that hits a cap is recorded as such (``cap=memory`` / ``cap=time``)
instead of being left to swap.

Stages (``--stages``; names end in the features' dtype where both are run)::

    merge                     cross-mosaic deduplication of the merged index (KD-tree on the sphere)
    checksum                  sha256 of features.h5
    load_f16, load_f32        features.h5 into memory (kept in the stored dtype)
    center_l2_f16/_f32        load + centring + L2 normalisation (conditioning=center_l2)
    pca_whiten_f16            load + streamed PCA whitening to 64 dimensions (conditioning=pca_whiten)
    lloyd_faiss, lloyd_torch  one Lloyd iteration at fixed k (FIXED_K), float16 points
    lloyd_faiss_kn, lloyd_torch_kn   one Lloyd iteration at k = n / ROWS_PER_CLUSTER
    init_kmeanspp             greedy k-means++ at k = INIT_K (its time per step extrapolates to larger k)
    init_random               random rows at k = n / ROWS_PER_CLUSTER
    init_kmeans_parallel      k-means‖ at k = n / ROWS_PER_CLUSTER (init=auto's choice at DR2-like k)
    hierarchical              the whole hierarchical k-means, DR2's [60000, 4000, 300] scaled to the rows
    semdedup, prototypicality, balanced   the samplers on the planted clusters (largest cluster logged)
    report                    eval=curation_report's figures, exemplars and enrichment (a quarter of the rows
                              as the subsample), the eval config's defaults
    neighbours                eval=neighbours: adjacent pairs sampled to eval.max_pairs, their distance test
                              and the galleries, the eval config's defaults
    probes                    eval=knn and eval=linear_probe on a features run's windows (planted clusters as
                              PROBE_CLASSES classes, WINDOWS_PER_SOURCE windows per source), the defaults
                              (eval.max_images); each probe's seconds logged

Usage::

    python benchmarks/bench_scale.py --quick                 # 25 k and 100 k rows, smaller eval samples
    python benchmarks/bench_scale.py --sizes 100000 1000000  # the development tiers
    nice python benchmarks/bench_scale.py --sizes 10000000 --stages load_f16 center_l2_f16
    python benchmarks/bench_scale.py --device cuda --sizes 10000000 --stages lloyd_torch_kn hierarchical

Prints per stage and size ``RESULT scale stage=<s> rows=<n> wall_s=<t> cpu_s=<t> peak_rss_gb=<m>
data_gb=<m>`` (the stage's own wall and CPU seconds, excluding imports; the process's peak RSS; the bytes
the stage must hold: the matrix as stored, or a block of it when it streams; the ``#`` line after it gives
``own_gb``, the peak memory the stage added to the process after its imports) and per stage ``RESULT growth
stage=<s> alpha_time=<a> alpha_rss=<a> at_16M_gb=<m> at_100M_gb=<m>`` (log-log slopes of the wall time
and of the memory the stage adds to the process between the two largest uncapped sizes; the peak RSS on
the line through their peaks).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DIM = 384
#: k of the fixed-k Lloyd stages (k-means costs n·k: growth in n is measured at fixed k).
FIXED_K = 256
#: Rows per cluster of the k ∝ n stages (DR2: 16 M rows, 60,000 level-1 clusters, ~267 per cluster).
ROWS_PER_CLUSTER = 267
#: DR2's hierarchy [60000, 4000, 300] as rows per cluster at each level.
HIERARCHY_ROWS_PER_CLUSTER = (267, 4000, 53333)
INIT_K = 32
N_MOSAICS = 841
WINDOW, STRIDE = 128, 64
#: Degrees between neighbouring pointings.
SPACING = 1.7
#: Planted clusters per row, and their Zipf exponent.
ROWS_PER_PLANTED = 500
ZIPF = 1.1
DEFAULT_STAGES = (
    "merge checksum load_f16 load_f32 center_l2_f16 center_l2_f32 pca_whiten_f16 lloyd_faiss lloyd_torch "
    "lloyd_faiss_kn lloyd_torch_kn init_kmeanspp init_random init_kmeans_parallel hierarchical semdedup "
    "prototypicality balanced report neighbours probes"
).split()
#: Window labels of the report and probe stages: planted cluster c is class c mod 8 (the catalogue's few
#: classes, "empty" among them).
PROBE_CLASSES = np.array(["empty", *(f"class{c}" for c in range(1, 8))])
#: Windows labelled by one catalogue source (the probes' folds keep them together).
WINDOWS_PER_SOURCE = 4
EVAL_CONFIGS = ROOT / "configs" / "eval"
EVAL_STAGES = ("report", "neighbours", "probes")
#: ``--eval-max`` of ``--quick`` (the linear probe's 140 fits on 50,000 windows take minutes).
QUICK_EVAL_MAX = 2000
DEFAULT_HEADERS = ROOT.parent / "shared" / "data" / "lotss_dr2_headers"


# ----------------------------------------------------------------------------------------------- data


def planted_centres(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Centres (unit rows) and Zipf probabilities of the planted clusters of an ``n``-row file."""
    rng = np.random.default_rng(seed)
    k = max(8, n // ROWS_PER_PLANTED)
    centres = rng.standard_normal((k, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = 1.0 / np.arange(1, k + 1) ** ZIPF
    return centres, weights / weights.sum()


def write_features(path: Path, n: int, dtype: str, seed: int = 0, chunk: int = 65536) -> None:
    """``features.h5`` of ``n`` rows (planted clusters, noise at 0.4 of the centre norm) and ``labels.npy``
    beside it (each row's planted cluster), written chunk by chunk."""
    centres, p = planted_centres(n, seed)
    rng = np.random.default_rng(seed + 1)
    labels = np.empty(n, dtype=np.int32)
    with h5py.File(path, "w") as f:
        data = f.create_dataset("features", (n, DIM), dtype=dtype, chunks=(min(n, 1024), DIM))
        f.create_dataset("cutout_id", data=np.arange(n, dtype=np.int64))
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            lab = rng.choice(len(p), size=m, p=p)
            labels[start : start + m] = lab
            noise = rng.standard_normal((m, DIM), dtype=np.float32) * (0.4 / math.sqrt(DIM))
            data[start : start + m] = centres[lab] + noise
    np.save(path.with_name("labels.npy"), labels)


def dr2_grid() -> list[tuple[float, float]]:
    """841 pointing centres (RA, Dec in degrees) on a grid like DR2's: 29 rows of constant Dec 1.7° apart
    from +20°, each with 29 pointings 1.7° / cos(Dec) apart in RA (3.7°-wide mosaics overlap their
    neighbours, as DR2's do)."""
    side = math.isqrt(N_MOSAICS)
    return [
        ((i * SPACING / math.cos(math.radians(20 + SPACING * j))) % 360, 20 + SPACING * j)
        for j in range(side)
        for i in range(side)
    ]


def write_index_file(path: Path, n: int, headers: Path, seed: int = 0) -> None:
    """A merged index of ``n`` windows spread evenly over 841 mosaics: each mosaic a real DR2 header's size
    and WCS moved to its grid pointing, its windows a random subset of its 128-px, 50 %-overlap grid."""
    from astropy.io import fits
    from astropy.wcs import WCS

    from radio_curation.cutouts.index import WindowIndex, write_index

    files = sorted(headers.glob("*/mosaic-blanked.fits.hdr"))
    if not files:
        raise SystemExit(f"no DR2 headers (*/mosaic-blanked.fits.hdr) under {headers}; pass --headers")
    base = [fits.Header.fromfile(f, sep="\n", endcard=False, padding=False) for f in files]
    per = -(-n // N_MOSAICS)
    rng = np.random.default_rng(seed)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in ("mosaic", "y0", "x0", "ra", "dec", "edge_distance")}
    names, scales = [], []
    for m, (ra, dec) in enumerate(dr2_grid()):
        header = base[m % len(base)].copy()
        header["CRVAL1"], header["CRVAL2"] = ra, dec
        for key in ("LATPOLE", "LONPOLE"):
            header.remove(key, ignore_missing=True)
        size = int(header["NAXIS1"])
        grid = np.arange(0, size - WINDOW + 1, STRIDE)
        # A random subset of the mosaic's sliding-window grid (all of it at DR2's 16.5 M rows).
        cells = np.sort(rng.choice(len(grid) ** 2, size=min(per, len(grid) ** 2), replace=False))
        y0, x0 = grid[cells // len(grid)], grid[cells % len(grid)]
        world = WCS(header).all_pix2world(x0 + WINDOW / 2, y0 + WINDOW / 2, 0)
        cols["mosaic"].append(np.full(len(y0), m, dtype=np.int32))
        cols["y0"].append(y0)
        cols["x0"].append(x0)
        cols["ra"].append(world[0])
        cols["dec"].append(world[1])
        cols["edge_distance"].append(np.minimum.reduce([y0, x0, size - WINDOW - y0, size - WINDOW - x0]))
        names.append(f"M{m:03d}")
        scales.append(abs(float(header["CDELT2"])) * 3600)
    columns = {k: np.concatenate(v)[:n] for k, v in cols.items()}
    columns["size"] = np.full(n, WINDOW, dtype=np.int32)
    columns["rms"] = rng.lognormal(-9.0, 0.3, n).astype(np.float32)
    columns["cutout_id"] = np.arange(n, dtype=np.int64)
    mosaics = {"name": names, "path": [""] * N_MOSAICS, "mask_path": [""] * N_MOSAICS, "pixel_scale": scales}
    write_index(path, WindowIndex(mosaics, columns, {"synthetic": "dr2 geometry"}))


# --------------------------------------------------------------------------------------- one stage


def _hierarchy(n: int, labels: np.ndarray, seed: int = 0):
    """Two levels over the planted clusters: level 1 the planted clusters (centroids: their centres),
    level 2 groups of 8 of them."""
    from radio_curation.curation.clusters import Hierarchy
    from radio_curation.curation.kmeans import ClusterLevel

    centres, _ = planted_centres(n, seed)
    k1 = len(centres)
    k2 = -(-k1 // 8)
    up = np.arange(k1) // 8
    levels = []
    for centroids, assignment in ((centres, labels.astype(np.int64)), (centres[::8].copy(), up)):
        sizes = np.bincount(assignment, minlength=len(centroids)).astype(np.int64)
        levels.append(
            ClusterLevel(centroids, assignment, np.zeros(len(assignment), np.float32), sizes,
                         np.zeros(1), np.zeros(1), len(assignment), 0.0)
        )  # fmt: skip
    levels[1].sizes = np.bincount(up, weights=levels[0].sizes, minlength=k2).astype(np.int64)
    return Hierarchy(np.arange(n, dtype=np.int64), levels, "cosine")


def _rss(field: str = "VmRSS") -> int:
    """This process's resident bytes now (``VmRSS``) or at most since the last reset (``VmHWM``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise KeyError(field)


def _eval_defaults(name: str, eval_max: int | None):
    """The ``eval=<name>`` config's settings (those that interpolate the root config left unresolved),
    ``max_images`` and ``max_queries`` replaced by ``eval_max`` when given."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(EVAL_CONFIGS / f"{name}.yaml")
    for key in ("max_images", "max_queries"):
        if eval_max and key in cfg:
            cfg[key] = eval_max
    return cfg


def run_stage(
    stage: str, work: Path, n: int, threads: int, eval_max: int | None = None, device: str = "cpu"
) -> dict:
    """Do ``stage`` on the ``n``-row files in ``work``; returns the bytes it must hold and details.
    ``eval_max`` replaces the eval configs' ``max_images`` and ``max_queries``; on a ``device`` other than
    the CPU the torch Lloyd stages, k-means‖ and the hierarchical run use the torch backend there."""
    import torch

    from radio_curation.curation.backends import FaissBackend, TorchBackend
    from radio_curation.curation.conditioning import FeatureConditioning
    from radio_curation.curation.kmeans import HierarchicalKMeans, init_centroids
    from radio_curation.curation.loading import load_features
    from radio_curation.evaluation.similarity import BLOCK_BYTES, SIMILARITY_BLOCK
    from radio_curation.features.matrix import FeatureFile

    torch.set_num_threads(threads)
    dtype = "float32" if stage.endswith("_f32") else "float16"
    path = work / dtype / "features.h5"
    itemsize = np.dtype(dtype).itemsize
    matrix = n * DIM * itemsize

    def load() -> np.ndarray:
        with FeatureFile(path) as source:
            return load_features(source).x

    def conditioned(whiten_dim: int | None = None) -> np.ndarray:
        x = load()
        fit = FeatureConditioning(whiten_dim=whiten_dim).fit(x)
        return fit.transform(x, inplace=True)

    faiss = FaissBackend("cpu", threads=threads)
    searcher = faiss if device == "cpu" else TorchBackend(device)
    if stage in EVAL_STAGES:  # their libraries (scikit-learn, SciPy's statistics) are no part of their memory
        import radio_curation.evaluation.evals.probe
        import radio_curation.evaluation.neighbours  # noqa: F401
    base_rss = _rss()
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM from here on: the stage's own peak
    start = time.perf_counter(), time.process_time()
    details: dict = {}
    if stage == "merge":
        from radio_curation.cutouts.index import read_index
        from radio_curation.cutouts.merge import cross_mosaic_duplicates

        index = read_index(work / "merged.h5")
        start = time.perf_counter(), time.process_time()
        candidates = np.arange(n)
        removed = cross_mosaic_duplicates(index, candidates, 0.75, "lowest_rms")
        details["removed"] = len(removed)
        data = sum(v.nbytes for v in index.columns.values()) + candidates.nbytes  # its inputs
    elif stage == "checksum":
        from radio_curation.runs.manifest import sha256sum

        sha256sum(path)
        data = 1 << 22
    elif stage.startswith("load"):
        load()
        data = matrix
    elif stage.startswith("center_l2"):
        conditioned()
        data = matrix
    elif stage.startswith("pca_whiten"):
        conditioned(64)
        data = matrix + n * 64 * itemsize
    elif stage.startswith("lloyd") or stage.startswith("init") or stage == "hierarchical":
        x = conditioned()
        start = time.perf_counter(), time.process_time()
        data = matrix + n * 12
        k = FIXED_K if stage in ("lloyd_faiss", "lloyd_torch") else max(2, n // ROWS_PER_CLUSTER)
        if stage.startswith("lloyd"):
            backend = TorchBackend(device) if "torch" in stage else faiss
            centroids = init_centroids(x, k, "random", 0)
            backend.fit(x, centroids, 1, spherical=True)
            details["k"] = k
        elif stage == "init_kmeanspp":
            init_centroids(x, INIT_K, "kmeans++", 0)
            details["k"] = INIT_K
            data = matrix + n * DIM * 4 + n * 12  # and k-means++'s float32 copy
        elif stage == "init_random":
            init_centroids(x, k, "random", 0)
            details["k"] = k
        elif stage == "init_kmeans_parallel":
            init_centroids(x, k, "kmeans_parallel", 0, searcher)
            details["k"] = k
        else:
            ks = [max(2, n // r) for r in HIERARCHY_ROWS_PER_CLUSTER]
            algo = HierarchicalKMeans(
                n_clusters=ks, n_resampling_steps=[1, 10, 10], sample_size=[1, 7, 6], n_iters=5,
                init="auto", metric="cosine", max_points_per_centroid=256, backend=searcher,
            )  # fmt: skip
            algo.fit(x, seed=0)
            details["n_clusters"] = ks
            details["init"] = [algo.level_init(level, n) for level in range(1, len(ks) + 1)]
    elif stage in ("semdedup", "prototypicality", "balanced"):
        from radio_curation.curation.samplers import (
            BalancedSampler,
            ClusteredPool,
            Compose,
            PrototypicalitySampler,
            SemDedupSampler,
        )

        labels = np.load(work / "float16" / "labels.npy")
        hierarchy = _hierarchy(n, labels)
        details["largest_cluster"] = int(hierarchy.levels[0].sizes.max())
        pool = ClusteredPool(hierarchy, load)
        sampler = {
            "semdedup": SemDedupSampler(eps=0.05, max_cluster_size=65536),
            "prototypicality": PrototypicalitySampler(),
            "balanced": BalancedSampler(),
        }[stage]
        Compose([sampler])(pool, n // 4, 0)
        data = n * 8 * len(hierarchy.levels) if stage == "balanced" else matrix  # balanced: cluster paths
    elif stage == "report":
        from radio_curation.evaluation.curation_report import curation_figures, top_level_exemplars
        from radio_curation.evaluation.enrichment import enrichment, rare_classes

        cfg = _eval_defaults("curation_report", eval_max)
        planted = np.load(work / "float16" / "labels.npy")
        hierarchy = _hierarchy(n, planted)
        labels = PROBE_CLASSES[planted % len(PROBE_CLASSES)]
        rng = np.random.default_rng(0)
        sets = {"pool": np.arange(n)}
        sets.update({name: np.sort(rng.choice(n, n // 4, replace=False)) for name in ("subsample", "random")})
        with FeatureFile(path) as pool:
            start = time.perf_counter(), time.process_time()
            paths = hierarchy.paths()
            figures = curation_figures(
                pool, sets, paths=paths, labels=labels, duplicate_threshold=cfg.duplicate_threshold,
                max_queries=cfg.max_queries, seed=0,
            )  # fmt: skip
            top_level_exemplars(
                hierarchy.conditioning.source(pool), paths, hierarchy.levels[-1].centroids, cfg.exemplars,
                metric=hierarchy.metric,
            )  # fmt: skip
            rare = rare_classes(labels, exclude=("empty",))
            ratio = enrichment(labels, sets["subsample"], sets["random"], rare, "empty").ratio
        redundancy = figures.redundancy["pool"]
        details.update({k: v for k, v in redundancy.items() if k.startswith(("nn_", "near_"))})
        details["rare_classes"] = len(rare)
        details["enrichment_ratio"] = ratio
        # The hierarchy's per-row arrays, the paths, the labels (and their planted codes), the three sets.
        clustering = hierarchy.cutout_id.nbytes + hierarchy.levels[0].assignment.nbytes
        clustering += hierarchy.levels[0].distance.nbytes
        per_row = paths.itemsize * paths.shape[1] + labels.itemsize + planted.itemsize + 8 * 1.5
        data = n * per_row + clustering
        # And the redundancy's queries, a block of rows and a block of their similarities, in float32.
        data += cfg.max_queries * DIM * 4 + BLOCK_BYTES + SIMILARITY_BLOCK * 4
    elif stage == "neighbours":
        from radio_curation.cutouts.index import read_index
        from radio_curation.evaluation.neighbours import adjacent_pairs, distance_test, gallery_neighbours

        cfg = _eval_defaults("neighbours", eval_max)
        col = read_index(work / "merged.h5").columns
        with FeatureFile(path) as features:
            start = time.perf_counter(), time.process_time()
            pairs = adjacent_pairs(
                col["mosaic"], col["y0"], col["x0"], col["size"], cfg.max_offset, cfg.max_pairs, 0
            )
            test = distance_test(features, pairs, max_pairs=cfg.max_pairs, seed=0)
            queries = np.sort(np.random.default_rng(0).choice(n, min(cfg.n_queries, n), replace=False))
            gallery_neighbours(features, queries, cfg.k)
        details["pairs"] = len(pairs)
        details["prob_adjacent_closer"] = test.metrics()["neighbours/prob_adjacent_closer"]
        tested = min(len(pairs), cfg.max_pairs)
        # The index columns it read (as merge's data), the pairs kept, the float32 rows of the pairs tested
        # (each read once), a block.
        columns = sum(v.nbytes for v in col.values())
        data = columns + 2 * cfg.max_pairs * 16 + 2 * tested * DIM * 4 + BLOCK_BYTES
    elif stage == "probes":
        from radio_curation.evaluation.evals.probe import probe_rows
        from radio_curation.evaluation.probes import evaluate_probe, knn_classifier, logistic_classifier

        planted = np.load(work / "float16" / "labels.npy")
        labels = PROBE_CLASSES[planted % len(PROBE_CLASSES)]
        groups = np.arange(n) // WINDOWS_PER_SOURCE
        knn, linear = _eval_defaults("knn", eval_max), _eval_defaults("linear_probe", eval_max)
        probes = {
            "knn": (knn, knn_classifier(k=knn.k, temperature=knn.temperature)),
            "linear_probe": (
                linear,
                logistic_classifier(
                    cs=list(linear.cs), inner_folds=linear.inner_folds, max_iter=linear.max_iter
                ),
            ),
        }
        probed = 0
        with FeatureFile(path) as source:
            start = time.perf_counter(), time.process_time()
            for name, (cfg, classify) in probes.items():
                began = time.perf_counter()
                keep = probe_rows(labels, list(cfg.exclude_labels), cfg.max_images, 0)
                _, codes = np.unique(labels[keep], return_inverse=True)
                evaluate_probe(
                    source.read(keep), codes, classify, folds=cfg.folds, seed=0, groups=groups[keep]
                )
                details[f"{name}_s"] = time.perf_counter() - began
                details[f"{name}_images"] = len(keep)
                probed = max(probed, len(keep) * DIM * 4)  # the probed windows' features in float32
        data = labels.nbytes + groups.nbytes + probed  # and every window's label and source
    else:
        raise SystemExit(f"unknown stage {stage!r}; stages: {' '.join(DEFAULT_STAGES)}")
    if device.startswith("cuda"):
        details["gpu_peak_gb"] = torch.cuda.max_memory_allocated() / 1e9
    return {
        "wall_s": time.perf_counter() - start[0],
        "cpu_s": time.process_time() - start[1],
        "data_gb": data / 1e9,
        "base_rss_gb": base_rss / 1e9,
        "own_gb": (_rss("VmHWM") - base_rss) / 1e9,
        **details,
    }


def child(args: argparse.Namespace) -> None:
    """The subprocess side: one stage, then one JSON line with its figures."""
    result = run_stage(args.child, Path(args.work), args.rows, args.threads, args.eval_max, args.device)
    print(json.dumps(result), flush=True)


# ------------------------------------------------------------------------------------------ parent


def _limit(mem_cap_gb: float | None):
    cap = None if mem_cap_gb is None else int(mem_cap_gb * 1e9)

    def apply() -> None:
        if cap is not None:
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        os.setsid()

    return apply


def measure(stage: str, work: Path, n: int, args: argparse.Namespace) -> dict:
    """Run one stage in a fresh subprocess under the caps; its figures, or which cap it hit."""
    threads = str(args.threads)
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    command = [sys.executable, __file__, "--child", stage, "--work", str(work), "--rows", str(n)]
    command += ["--threads", threads, "--device", args.device]
    command += ["--eval-max", str(args.eval_max)] if args.eval_max else []
    # CUDA reserves far more address space than it uses: on a GPU only the peak RSS is measured, uncapped.
    mem_cap_gb = None if args.device.startswith("cuda") else args.mem_cap_gb
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, preexec_fn=_limit(mem_cap_gb))
        deadline = time.monotonic() + args.time_cap_s
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                timed_out = True
            time.sleep(0.2)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        lines = out.read().strip().splitlines()
        tail = err.read()[-2000:]
    figures = {"peak_rss_gb": usage.ru_maxrss * 1024 / 1e9}
    if proc.returncode == 0 and lines:
        return {**figures, **json.loads(lines[-1])}
    out_of_memory = any(s in tail for s in ("MemoryError", "bad_alloc", "Cannot allocate memory"))
    cap = "time" if timed_out else "memory" if out_of_memory else None
    if cap is None:
        print(tail, file=sys.stderr)
        cap = f"error{proc.returncode}"
    return {**figures, "cap": cap, "wall_s": float("nan"), "cpu_s": usage.ru_utime + usage.ru_stime}


def growth(rows: list[int], figures: list[dict]) -> dict[str, float]:
    """Growth between the two largest uncapped sizes: log-log slopes of the wall time and of the memory the
    stage added to the process (peak RSS less the RSS after the imports), and the peak RSS at 16 M and
    100 M rows on the line through the two sizes' peaks."""
    done = [(n, f) for n, f in zip(rows, figures, strict=True) if "cap" not in f]
    if len(done) < 2:
        return dict.fromkeys(("alpha_time", "alpha_rss", "at_16M_gb", "at_100M_gb"), float("nan"))
    (n1, a), (n2, b) = done[-2], done[-1]
    scale = math.log(n2 / n1)
    added = [max(f["peak_rss_gb"] - f["base_rss_gb"], 1e-4) for f in (a, b)]
    per_row = max(b["peak_rss_gb"] - a["peak_rss_gb"], 0.0) / (n2 - n1)
    return {
        "alpha_time": math.log(max(b["wall_s"], 1e-2) / max(a["wall_s"], 1e-2)) / scale,
        "alpha_rss": math.log(added[1] / added[0]) / scale,
        "at_16M_gb": b["peak_rss_gb"] + per_row * (16e6 - n2),
        "at_100M_gb": b["peak_rss_gb"] + per_row * (100e6 - n2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument(
        "--quick", action="store_true", help=f"25 k and 100 k rows, --eval-max {QUICK_EVAL_MAX}"
    )
    parser.add_argument(
        "--eval-max", type=int, default=None,
        help="probe images and report queries at most (default: the eval configs' max_images, max_queries)",
    )  # fmt: skip
    parser.add_argument("--stages", nargs="+", default=DEFAULT_STAGES)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--device",
        default="cpu",
        help="torch device of the torch Lloyd stages, k-means‖ and hierarchical (e.g. cuda)",
    )
    parser.add_argument("--mem-cap-gb", type=float, default=20.0)
    parser.add_argument("--time-cap-s", type=float, default=1800.0)
    parser.add_argument("--headers", type=Path, default=DEFAULT_HEADERS, help="DR2 headers (one folder each)")
    parser.add_argument("--scratch", type=Path, default=None, help="where the synthetic files go (deleted)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    sizes = [25_000, 100_000] if args.quick else sorted(args.sizes)
    if args.quick:
        args.eval_max = args.eval_max or QUICK_EVAL_MAX
    scratch = Path(tempfile.mkdtemp(prefix="bench_scale_", dir=args.scratch))
    results: dict[str, list[dict]] = {stage: [] for stage in args.stages}
    try:
        for n in sizes:
            work = scratch / str(n)
            work.mkdir()
            dtypes = {"float32" if s.endswith("_f32") else "float16" for s in args.stages if s != "merge"}
            for dtype in sorted(dtypes):
                (work / dtype).mkdir(parents=True)
                write_features(work / dtype / "features.h5", n, dtype)
            if {"merge", "neighbours"} & set(args.stages):
                write_index_file(work / "merged.h5", n, args.headers)
            for stage in args.stages:
                f = measure(stage, work, n, args)
                results[stage].append(f)
                extra = {
                    k: v
                    for k, v in f.items()
                    if k not in ("wall_s", "cpu_s", "peak_rss_gb", "data_gb", "cap")
                }
                print(
                    f"RESULT scale stage={stage} rows={n} wall_s={f['wall_s']:.2f} cpu_s={f['cpu_s']:.2f} "
                    f"peak_rss_gb={f['peak_rss_gb']:.3f} data_gb={f.get('data_gb', float('nan')):.3f}"
                    + (f" cap={f['cap']}" if "cap" in f else ""),
                    flush=True,
                )
                if extra:
                    print(f"# {stage} rows={n} {json.dumps(extra)}", flush=True)
            shutil.rmtree(work)
        for stage, figures in results.items():
            g = growth(sizes, figures)
            print(
                f"RESULT growth stage={stage} alpha_time={g['alpha_time']:.2f} alpha_rss={g['alpha_rss']:.2f} "
                f"at_16M_gb={g['at_16M_gb']:.2f} at_100M_gb={g['at_100M_gb']:.2f}",
                flush=True,
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
