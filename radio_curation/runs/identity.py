"""Run identity: the same stage, result-defining settings and parents always give the same run ID."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import SCHEME

DIGEST_LENGTH = 10


@dataclass(frozen=True)
class StageIdentity:
    """What defines one stage run: its stage, the settings that change its result, and its parents.

    ``parents`` maps each parent key of the stage's declaration to the run IDs it names.
    """

    stage: str
    config: dict[str, Any]
    parents: Mapping[str, tuple[str, ...]]

    @property
    def parent_ids(self) -> list[str]:
        """Every parent run ID once, in the order of the declaration's parent keys."""
        return list(dict.fromkeys(i for ids in self.parents.values() for i in ids))

    @property
    def digest(self) -> str:
        payload = json.dumps(
            {
                "scheme": SCHEME,
                "stage": self.stage,
                "config": self.config,
                "parents": {k: list(v) for k, v in self.parents.items()},
            },
            sort_keys=True,
            default=str,
        )
        return hashlib.sha256(payload.encode()).hexdigest()[:DIGEST_LENGTH]

    @property
    def base_id(self) -> str:
        """The run ID of the first run with this identity; ``force=true`` runs add ``-2``, ``-3`` ..."""
        return f"{self.stage}-{self.digest}"


def plain(node: Any) -> Any:
    """A config node as plain Python containers, interpolations resolved."""
    if isinstance(node, DictConfig | ListConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` is in ``cfg`` (a null or ``???`` value counts as present)."""
    *head, last = key.split(".")
    node = OmegaConf.select(cfg, ".".join(head), default=None) if head else cfg
    return isinstance(node, DictConfig) and last in node.keys()


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *head, last = dotted.split(".")
    for part in head:
        tree = tree.setdefault(part, {})
    tree[last] = value


def _drop(tree: dict[str, Any], dotted: str) -> None:
    *head, last = dotted.split(".")
    for part in head:
        tree = tree.get(part)
        if not isinstance(tree, dict):
            return
    tree.pop(last, None)


def select_keys(cfg: DictConfig, keys: Iterable[str], optional: Iterable[str] = ()) -> dict[str, Any]:
    """The values of the dotted ``keys`` and of those ``optional`` keys ``cfg`` has, nested, resolved.

    Raises
    ------
    RadioCurationError
        A key of ``keys`` is not in ``cfg``.
    """
    tree: dict[str, Any] = {}
    for key in keys:
        if not has_key(cfg, key):
            raise RadioCurationError(f"the stage declares setting '{key}', which the config does not have")
        _put(tree, key, plain(OmegaConf.select(cfg, key)))
    for key in optional:
        if has_key(cfg, key):
            _put(tree, key, plain(OmegaConf.select(cfg, key)))
    return tree


def semantic_config(
    values: Mapping[str, Any], settings: Iterable[str], excluded: Iterable[str]
) -> dict[str, Any]:
    """The ``settings`` (dotted keys) of the nested ``values``, without the ``excluded`` keys under them."""
    tree: dict[str, Any] = {}
    for key in settings:
        node: Any = values
        for part in key.split("."):
            node = node[part]
        _put(tree, key, node)
    for key in excluded:
        _drop(tree, key)
    return tree
