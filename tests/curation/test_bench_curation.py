"""The curation benchmark's baselines and exactness checks (the timings themselves are not tested)."""

from __future__ import annotations

import re

import numpy as np

import radio_curation.curation.samplers as samplers
from benchmarks.bench_curation import (
    RESAMPLING_STEPS,
    SAMPLE_SIZE,
    bench_balanced,
    bench_init,
    gemm_gflops,
    plain_hierarchy,
)
from radio_curation.curation.backends import FaissBackend
from radio_curation.curation.kmeans import HierarchicalKMeans
from tests.curation.planted import planted


def test_cpu_gemm_rate_is_numpy_float32_only():
    rates = gemm_gflops(256, 32, 16, device="cpu", repeats=2)
    assert set(rates) == {"float32"} and rates["float32"] > 0


def test_plain_per_level_loop_is_the_hierarchy_ours_computes():
    x, _ = planted([600, 300, 150, 80, 40], dim=8, separation=10.0, seed=0)
    ours = HierarchicalKMeans(
        [30, 8, 3],
        n_resampling_steps=RESAMPLING_STEPS,
        sample_size=SAMPLE_SIZE,
        n_iters=5,
        init="random",
        metric="l2",
    ).fit(x, seed=0)
    plain = plain_hierarchy(x, [30, 8, 3], 5, FaissBackend("cpu"))
    for level, reference in zip(ours, plain, strict=True):
        np.testing.assert_array_equal(level.assignment, reference)


def test_balanced_benchmark_fails_when_the_sampler_is_not_exact(monkeypatch, capsys):
    assert bench_balanced(20_000, 1_000, [400, 40, 6])
    assert "exact=True" in capsys.readouterr().out
    real = samplers.water_fill

    def skewed(sizes, groups, quota, rng):
        take = real(sizes, groups, quota, rng)
        # Move two rows between the two largest members of the first group: totals kept, balance broken.
        first = np.flatnonzero(groups == 0)
        big = first[np.argsort(sizes[first])[-2:]]
        if len(big) == 2 and take[big[0]] >= 2 and take[big[1]] + 2 <= sizes[big[1]]:
            take[big[0]] -= 2
            take[big[1]] += 2
        return take

    monkeypatch.setattr(samplers, "water_fill", skewed)
    assert not bench_balanced(20_000, 1_000, [400, 40, 6])
    assert "exact=False" in capsys.readouterr().out


def test_init_benchmark_compares_kmeans_parallel_with_kmeanspp_at_each_k(capsys):
    x, _ = planted([600, 300, 150, 80, 40], dim=8, separation=10.0, seed=1)
    bench_init(x, [5, 20], FaissBackend("cpu"))
    out = capsys.readouterr().out
    for k in (5, 20):
        assert re.search(rf"RESULT init n=1170 k={k} kmeanspp_s=\S+ .* speedup=\S+ potential_ratio=\S+", out)
    assert "RESULT init_growth n=1170 k=5..20 alpha_kmeanspp=" in out
