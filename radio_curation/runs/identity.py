"""Run identity: the same stage, semantic config and parents always give the same run ID."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from radio_curation.errors import RadioCurationError

DIGEST_LENGTH = 10


@dataclass(frozen=True)
class StageIdentity:
    """What defines one stage run: its stage, the config that changes results, and its parents."""

    stage: str
    config: dict[str, Any]
    parents: tuple[str, ...]

    @property
    def digest(self) -> str:
        payload = json.dumps(
            {"stage": self.stage, "config": self.config, "parents": list(self.parents)},
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:DIGEST_LENGTH]

    @property
    def base_id(self) -> str:
        """The run ID of the first run with this identity; ``force=true`` runs add ``-2``, ``-3`` ..."""
        return f"{self.stage}-{self.digest}"


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *head, last = dotted.split(".")
    for part in head:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def semantic_config(cfg: DictConfig, keys: list[str], execution_keys: list[str]) -> dict[str, Any]:
    """The values of ``keys`` (dotted paths) in ``cfg``, nested, without the execution-only keys."""
    tree: dict[str, Any] = {}
    for key in keys:
        if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise RadioCurationError(
                f"the stage spec names config key '{key}', which the config does not have"
            )
        node: dict[str, Any] = tree
        *head, last = key.split(".")
        for part in head:
            node = node.setdefault(part, {})
        node[last] = _plain(OmegaConf.select(cfg, key))
    for key in execution_keys:
        _drop(tree, key)
    return tree


def parent_ids(cfg: DictConfig, spec: DictConfig) -> list[str]:
    """Parent run IDs named by the spec's ``parents`` keys (a key may hold one ID or a list).

    A null key is skipped unless the spec's ``derive`` maps it to another stage spec of the same config,
    whose run ID it then is (``curate.py`` without ``clusters_id`` clusters first, then samples). An ID
    given twice counts once.
    """
    ids: list[str] = []
    derive = spec.get("derive") or {}
    for key in spec.parents:
        value = _plain(OmegaConf.select(cfg, key))
        if value is None and key in derive:
            value = stage_identity(cfg, cfg[derive[key]]).base_id
        if value is None:
            continue
        ids.extend(str(v) for v in (value if isinstance(value, list) else [value]))
    return list(dict.fromkeys(ids))


def stage_identity(cfg: DictConfig, spec: DictConfig, parents: list[str] | None = None) -> StageIdentity:
    """The identity of the run ``spec`` describes under ``cfg`` (parents from the config unless given)."""
    execution_keys = list(OmegaConf.select(cfg, "store.execution_keys", default=[]) or [])
    return StageIdentity(
        stage=spec.name,
        config=semantic_config(cfg, list(spec["keys"]), execution_keys),
        parents=tuple(parents if parents is not None else parent_ids(cfg, spec)),
    )
