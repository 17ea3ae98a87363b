"""``benchmarks/bench_scale.py --quick``: every stage at 25 k and 100 k rows, a RESULT line for each."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.bench_scale import DEFAULT_STAGES, growth

ROOT = Path(__file__).resolve().parents[2]
NUMBER = r"(-?[0-9.]+|nan)"


def test_growth_is_the_slope_between_the_two_largest_uncapped_sizes():
    figures = [
        {"wall_s": 1.0, "peak_rss_gb": 1.0, "base_rss_gb": 0.5},
        {"wall_s": 4.0, "peak_rss_gb": 1.5, "base_rss_gb": 0.5},
        {"wall_s": 8.0, "peak_rss_gb": 2.5, "base_rss_gb": 0.5},
        {"cap": "memory", "wall_s": float("nan"), "peak_rss_gb": 20.0},
    ]
    g = growth([1000, 2000, 4000, 8000], figures)
    assert g["alpha_time"] == pytest.approx(1.0)
    assert g["alpha_rss"] == pytest.approx(1.0)
    assert g["at_16M_gb"] == pytest.approx(2.5 + (16e6 - 4000) / 2000)


@pytest.mark.slow
def test_quick_scale_benchmark_prints_every_result_line(shared_data, tmp_path):
    done = subprocess.run(
        [sys.executable, "benchmarks/bench_scale.py", "--quick", "--scratch", str(tmp_path),
         "--headers", str(shared_data / "lotss_dr2_headers"), "--time-cap-s", "300"],
        cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    for stage in DEFAULT_STAGES:
        for rows in (25000, 100000):
            line = re.search(
                rf"^RESULT scale stage={stage} rows={rows} wall_s={NUMBER} cpu_s={NUMBER} "
                rf"peak_rss_gb={NUMBER} data_gb={NUMBER}$",
                out,
                re.M,
            )
            assert line, f"no uncapped RESULT scale line for {stage} at {rows} rows:\n{out}"
            assert 0 < float(line.group(3)) < 20
        assert re.search(
            rf"^RESULT growth stage={stage} alpha_time={NUMBER} alpha_rss={NUMBER} at_16M_gb={NUMBER} "
            rf"at_100M_gb={NUMBER}$",
            out,
            re.M,
        ), stage
    assert list(tmp_path.iterdir()) == []  # the synthetic files are deleted
