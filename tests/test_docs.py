"""The documentation site: it builds with ``--strict``, its generated pages say what configs/ and the stages'
declarations say, and every config group, option and key has the comment the reference shows."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest
from mkdocs.commands.build import build
from mkdocs.config import load_config
from mkdocs.exceptions import Abort

from radio_curation.tasks.cutouts import CUTOUTS
from radio_curation.tasks.train import TRAIN

ROOT = Path(__file__).resolve().parents[1]


def _hook():
    spec = importlib.util.spec_from_file_location(
        "docs_reference_hook", ROOT / "docs" / "hooks" / "reference.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


reference = _hook()


def _build(config_file: Path, site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")  # Material's notice about its successor
    build(load_config(str(config_file), site_dir=str(site), strict=True))


def test_every_config_group_option_and_key_has_a_comment():
    assert reference.missing_comments() == []


def test_the_comment_reader_finds_what_is_missing_and_reads_both_comment_styles(tmp_path):
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs", configs)
    (configs / "sampler" / "odd.yaml").write_text(
        "# An option with a header.\n"
        "_target_: builtins.dict\n"
        "# Above a key, first line,\n"
        "# second line.\n"
        "documented: 1\n"
        "trailing: [1, 2]   # at the end of the line,\n"
        "                   # continued in the same column\n"
        "bare: null\n"
        "section:\n"
        "  inner: x\n"
    )
    (configs / "unselected").mkdir()
    (configs / "unselected" / "headless.yaml").write_text("key: 1  # documented\n")

    missing = reference.missing_comments(configs)

    assert missing == [
        "group unselected",
        "sampler/odd.yaml: key sampler.bare",
        "sampler/odd.yaml: key sampler.section.inner",
        "unselected/headless.yaml: the file's leading comment",
    ]
    (odd,) = [
        o
        for g in reference.read_configs(configs)[1]
        if g.name == "sampler"
        for o in g.options
        if o.name == "odd"
    ]
    docs = {k.path: (k.default, k.doc) for k in odd.keys}
    assert docs["sampler.documented"] == ("1", "Above a key, first line, second line.")
    assert docs["sampler.trailing"] == ("[1, 2]", "at the end of the line, continued in the same column")
    assert odd.doc == "An option with a header." and odd.target == "builtins.dict"


def test_the_reference_lists_every_group_option_and_key_with_its_default_and_comment():
    roots, groups = reference.read_configs()
    page = reference.configuration_reference()
    for group in groups:
        assert f"{{ #group-{group.name.replace('/', '-')} }}" in page
        for option in group.options:
            assert f"`{group.name}={option.name}`" in page
    synthetic = next(o for g in groups if g.name == "survey" for o in g.options if o.name == "synthetic")
    mosaics = next(k for k in synthetic.keys if k.path == "survey.mosaics")
    assert (mosaics.default, mosaics.doc) == ("4", "overlapping mosaics on a near-square grid")
    assert "| `survey.mosaics` | `4` | overlapping mosaics on a near-square grid |" in page
    assert {r.name for r in roots} == {"extract", "curate", "train", "evaluate"}


def test_the_site_builds_strictly_with_the_generated_pages(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _build(ROOT / "mkdocs.yml", site, monkeypatch)

    page = (site / "reference" / "configuration" / "index.html").read_text()
    assert "survey.mosaics" in page and "group-hydra-launcher-slurm_gpu" in page
    cutouts = (site / "pipeline" / "cutouts" / "index.html").read_text()
    assert f"<code>{CUTOUTS.headline}</code>" in cutouts
    train = (site / "pipeline" / "train" / "index.html").read_text()
    for key in (*TRAIN.settings, *TRAIN.execution, *TRAIN.parents):
        assert f"<code>{key}</code>" in train
    evaluate = (site / "pipeline" / "evaluate" / "index.html").read_text()
    assert "<code>metrics.knn/accuracy_mean</code>" in evaluate


def test_a_broken_link_fails_the_build(tmp_path, monkeypatch):
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    with (tmp_path / "docs" / "index.md").open("a") as f:
        f.write("\nSee [the missing page](missing.md).\n")
    with pytest.raises(Abort):
        _build(tmp_path / "mkdocs.yml", tmp_path / "site", monkeypatch)
