"""Every option of every config group composes under every root config that uses the group."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import get_method
from omegaconf import DictConfig, ListConfig, OmegaConf

from radio_curation.tasks import evaluate
from tests.conftest import CONFIG_DIR

ROOTS = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def _compose(root: str, overrides: list[str], hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(root, overrides=overrides, return_hydra_config=hydra_config)


def _groups(root: str) -> dict[str, list[str]]:
    choices = _compose(root, [], hydra_config=True).hydra.runtime.choices
    groups = {}
    for group in choices:
        # A group placed in another package (dataset@monitor.dataset) is overridden by that same key.
        directory = CONFIG_DIR / group.split("@")[0]
        if group.startswith("hydra/") or group == "hydra" or not directory.is_dir():
            continue
        groups[group] = sorted(p.stem for p in directory.glob("*.yaml"))
    return groups


def _cases() -> list[tuple[str, int, list[str]]]:
    """Per root, round ``i`` picks the i-th option of every group at once (the last when a group has fewer):
    a few compositions cover every option of every group, each in a realistic mix with the others."""
    cases = []
    for root in ROOTS:
        groups = _groups(root)
        for i in range(max(len(options) for options in groups.values())):
            cases.append(
                (
                    root,
                    i,
                    [f"{group}={options[min(i, len(options) - 1)]}" for group, options in groups.items()],
                )
            )
    return cases


def _targets(node, path: str = "") -> list[tuple[str, str]]:
    found = []
    if isinstance(node, DictConfig):
        for key in node.keys():
            value = node._get_node(key)
            if key == "_target_":
                found.append((path, node[key]))
            elif isinstance(value, DictConfig | ListConfig):
                found.extend(_targets(value, f"{path}.{key}"))
    elif isinstance(node, ListConfig):
        for i, item in enumerate(node):
            found.extend(_targets(item, f"{path}[{i}]"))
    return found


def test_every_root_uses_the_common_groups():
    for root in ROOTS:
        assert {"paths", "logger", "catalogue", "dataset@monitor.dataset"} <= set(_groups(root)), root


def test_the_monitor_reads_a_labelled_set_of_the_dataset_group():
    assert _compose("train", []).monitor.dataset is None
    cfg = _compose(
        "train", ["dataset@monitor.dataset=mirabest", "monitor.dataset.root=/data/mb", "dataset=synthetic"]
    )
    assert cfg.monitor.dataset._target_ == "radio_curation.data.datasets.MiraBest"
    assert cfg.monitor.dataset.root == "/data/mb" and cfg.dataset._target_.endswith("SyntheticWindows")


@pytest.mark.parametrize(
    "overrides",
    [[f"eval={p.stem}"] for p in sorted((CONFIG_DIR / "eval").glob("*.yaml"))]
    + [[f"experiment={p.stem}"] for p in sorted((CONFIG_DIR / "experiment").glob("*.yaml"))],
)
def test_the_chosen_evaluation_builds_from_its_config(overrides):
    cfg = _compose("evaluate", [*overrides, "seed=3"], hydra_config=True)
    built = evaluate.evaluation(cfg)
    assert built.name == cfg.hydra.runtime.choices["eval"] and built.seed == 3


def test_evaluations_read_the_catalogue_group():
    for name in ("linear_probe", "knn", "umap", "curation_report"):
        cfg = _compose("evaluate", [f"eval={name}", "catalogue=lotss_dr2", "catalogue.path=/data/dr2.fits"])
        assert cfg.eval.catalogue.label_column == "S_Code" and cfg.eval.catalogue.path == "/data/dr2.fits"
    assert OmegaConf.is_missing(_compose("evaluate", ["catalogue=lotss_dr2"]).catalogue, "path")
    assert _compose("evaluate", ["catalogue=none"]).eval.catalogue.path is None
    assert _compose("evaluate", ["experiment=bootstrap"]).eval.catalogue.min_flux == 5.0e-4


@pytest.mark.parametrize(("root", "round_", "overrides"), _cases())
def test_every_option_composes_and_points_at_real_code(root, round_, overrides):
    cfg = _compose(root, overrides)
    assert OmegaConf.is_struct(cfg)
    for path, target in _targets(cfg):
        assert callable(get_method(target)), f"{root} {overrides}: {path}._target_={target}"


def test_rounds_cover_every_option_of_every_group():
    covered = {(root, o) for root, _, overrides in _cases() for o in overrides}
    for root in ROOTS:
        for group, options in _groups(root).items():
            assert {(root, f"{group}={o}") for o in options} <= covered


@pytest.mark.parametrize("root", ROOTS)
def test_several_trackers_at_once(root):
    cfg = _compose(root, ["logger=[csv,wandb,mlflow]"])
    assert set(cfg.logger) == {"csv", "wandb", "mlflow"}


@pytest.mark.parametrize("root", ROOTS)
def test_mistyped_key_is_an_error(root):
    with pytest.raises(Exception, match="no_such_key"):
        _compose(root, ["no_such_key=1"])


def _stages(root: str, cfg: DictConfig) -> list:
    """The stages a root config runs: those of every ``stage`` option for extract.py."""
    from radio_curation.runs.stage import stage_of
    from radio_curation.tasks import curate, cutouts, features, merge

    return {
        "extract": [cutouts.CUTOUTS, merge.MERGE, features.FEATURES_STAGE],
        "curate": [curate.CLUSTER, curate.SAMPLE],
    }.get(root) or [stage_of(cfg)]


def _under_a_setting(key: str, settings: tuple[str, ...]) -> bool:
    return any(key.startswith(f"{s}.") for s in settings)


def test_every_stage_s_declared_keys_are_in_its_config_for_every_option():
    from radio_curation.runs.identity import has_key

    present_somewhere: dict[tuple[str, str], bool] = {}
    for root, _, overrides in _cases():
        cfg = _compose(root, overrides)
        for stage in _stages(root, cfg):
            for key in stage.settings:
                assert has_key(cfg, key), f"{root} {overrides}: {stage.name} setting {key}"
            for key in [*stage.execution, *stage.parents]:
                found = has_key(cfg, key)
                if not _under_a_setting(key, stage.settings):
                    assert found, f"{root} {overrides}: {stage.name} declares {key}"
                key_of = (stage.name, key)
                present_somewhere[key_of] = present_somewhere.get(key_of, False) or found
            assert OmegaConf.is_readonly(stage.view(cfg))
    # A key inside a setting may belong to some options only (backbone.model_id: backbone=run), not to none.
    assert [k for k, found in present_somewhere.items() if not found] == []
