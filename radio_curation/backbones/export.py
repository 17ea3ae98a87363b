"""``backbone.pt``: a trained backbone that ``backbone=run backbone.model_id=ID`` loads back.

The file is a plain ``torch.save`` dict (loadable with ``weights_only=True``): the architecture spec,
the tap, the config it was built from (for provenance), the state dict and the preprocessing the model
was trained with (input size, normalisation, channels), which features and probes use by default.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from radio_curation.atomic import atomic_path
from radio_curation.backbones.checkpoint import load_weights
from radio_curation.backbones.extractor import FeatureExtractor
from radio_curation.backbones.factory import build_architecture
from radio_curation.errors import RadioCurationError

#: Version of the backbone.pt layout.
EXPORT_FORMAT = "radio_curation.backbone/1"


def weights_digest(model: nn.Module) -> str:
    """A SHA-256 (16 hex digits) of ``model``'s state dict: names, dtypes, shapes and bytes.

    Two builds give the same digest only when they hold the same weights, e.g. the same checkpoint, or
    random weights drawn from the same seed.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{data.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(data.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def save_backbone(
    extractor: FeatureExtractor,
    backbone_cfg: dict[str, Any] | DictConfig,
    path: str | Path,
    preprocessing: dict[str, Any] | None = None,
) -> Path:
    """Write ``extractor`` (architecture, tap, weights) to ``path`` atomically.

    Parameters
    ----------
    extractor
        The (trained) feature extractor.
    backbone_cfg
        The ``backbone`` config it was built from; stored for provenance, not needed to load.
    path
        Destination, conventionally ``<train run dir>/backbone.pt``.
    preprocessing
        What the model was trained on: ``{"input_size": px, "normalization": <normalization config>,
        "in_chans": n}`` (see :func:`read_preprocessing`).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    config = (
        OmegaConf.to_container(backbone_cfg, resolve=True)
        if isinstance(backbone_cfg, DictConfig)
        else backbone_cfg
    )
    payload = {
        "format": EXPORT_FORMAT,
        "spec": extractor.spec,
        "in_chans": extractor.in_chans,
        "module_name": extractor.module_name,
        "pooling": extractor.pooling,
        "num_prefix_tokens": extractor.num_prefix_tokens,
        "input_size": extractor.input_size,
        "feature_dim": extractor.feature_dim,
        "config": dict(config or {}),
        "preprocessing": preprocessing,
        "state_dict": {k: v.detach().cpu().clone() for k, v in extractor.model.state_dict().items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def _payload(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise RadioCurationError(f"cannot read backbone file {path}: {type(err).__name__}: {err}") from err
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise RadioCurationError(
            f"{path} is not a backbone file written by save_backbone (format {found!r}, "
            f"expected {EXPORT_FORMAT!r})"
        )
    return payload


def read_preprocessing(path: str | Path) -> dict[str, Any] | None:
    """The preprocessing stored with a ``backbone.pt``: ``input_size``, ``normalization``, ``in_chans``.

    None for a file written without it (a model exported before it was recorded).
    """
    return _payload(Path(path)).get("preprocessing")


def load_backbone(
    path: str | Path, module_name: str | None = None, pooling: str | None = None
) -> FeatureExtractor:
    """Rebuild the extractor saved by :func:`save_backbone`.

    Parameters
    ----------
    path
        A ``backbone.pt``.
    module_name, pooling
        Override the saved tap; None keeps it.
    """
    path = Path(path)
    payload = _payload(path)
    model = build_architecture(payload["spec"])
    load_weights(model, payload["state_dict"], f"backbone file {path}", payload["in_chans"])
    return FeatureExtractor(
        model,
        payload["spec"],
        payload["in_chans"],
        module_name or payload["module_name"],
        pooling or payload["pooling"],
        num_prefix_tokens=payload["num_prefix_tokens"],
        input_size=payload["input_size"],
    )
