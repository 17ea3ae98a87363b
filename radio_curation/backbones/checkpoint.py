"""Reading local checkpoints and loading them into a model with clear errors when they don't fit."""

from __future__ import annotations

import logging
import pickle
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from timm.models import adapt_input_conv
from torch import Tensor, nn

from radio_curation.errors import RadioCurationError

log = logging.getLogger(__name__)

#: Nested keys under which checkpoints keep their weights (Lightning, timm training scripts, DDP wrappers).
STATE_KEYS = ("state_dict", "model", "module", "model_state_dict")
EXAMPLES = 5


def read_checkpoint(path: str | Path) -> dict[str, Tensor]:
    """The weights in a local checkpoint file (``.pt``/``.pth``/``.ckpt``/``.bin`` or ``.safetensors``).

    Lightning and solo-learn checkpoints keep the weights under ``state_dict``; those are returned. Files
    whose extra entries need full unpickling (Lightning hyper-parameters) are loaded that way: only point
    this at checkpoints you trust.

    Raises
    ------
    RadioCurationError
        The file is missing, unreadable, or holds no tensors.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise RadioCurationError(f"checkpoint {path} does not exist (weights must be a local file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: Any = load_file(str(path))
        else:
            try:
                obj = torch.load(path, map_location="cpu", weights_only=True)
            except pickle.UnpicklingError:
                obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise RadioCurationError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
    for key in STATE_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        keys = list(obj)[:EXAMPLES] if isinstance(obj, dict) else type(obj).__name__
        raise RadioCurationError(
            f"checkpoint {path} holds no state dict of tensors (found: {keys}); expected a state dict, "
            f"or one under {', '.join(STATE_KEYS)}"
        )
    return dict(obj)


def strip_prefix(state: dict[str, Tensor], prefix: str, source: str) -> dict[str, Tensor]:
    """The entries of ``state`` whose keys start with ``prefix``, with the prefix removed."""
    if not prefix:
        return state
    selected = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    if not selected:
        heads = sorted({k.split(".", 1)[0] + "." for k in state})
        raise RadioCurationError(
            f"{source} has no weights under the prefix '{prefix}'; its keys start with: "
            f"{', '.join(heads[:10])}. Set backbone.prefix to the right one ('' for none)."
        )
    return selected


def _examples(keys: Iterable[str]) -> str:
    keys = list(keys)
    more = f", ... ({len(keys) - EXAMPLES} more)" if len(keys) > EXAMPLES else ""
    return ", ".join(keys[:EXAMPLES]) + more


def _adapt_channels(weight: Tensor, in_chans: int) -> Tensor:
    if weight.shape[1] == 1 and in_chans == 3:
        return weight.repeat(1, 3, 1, 1) / 3.0
    return adapt_input_conv(in_chans, weight)


def load_weights(
    model: nn.Module,
    state: dict[str, Tensor],
    source: str,
    in_chans: int,
    ignore_unexpected: Iterable[str] = (),
) -> None:
    """Load ``state`` into ``model``, or raise a readable error if they don't fit.

    The input convolution is adapted when only its channel count differs (RGB weights summed for one
    channel, as timm does; one channel repeated and divided for three). Unexpected keys under the
    ``ignore_unexpected`` prefixes (a classifier head the backbone leaves out) are dropped.

    Raises
    ------
    RadioCurationError
        With the number of missing / unexpected / wrongly shaped keys and examples of each.
    """
    own = model.state_dict()
    state = dict(state)
    for key, value in state.items():
        target = own.get(key)
        if (
            target is not None
            and value.ndim == 4
            and target.ndim == 4
            and value.shape != target.shape
            and target.shape[1] == in_chans
            and value.shape[0] == target.shape[0]
            and value.shape[2:] == target.shape[2:]
        ):
            log.info("%s: adapting %s from %d to %d input channels", source, key, value.shape[1], in_chans)
            state[key] = _adapt_channels(value, in_chans).to(value.dtype)
    ignore = tuple(ignore_unexpected)
    unexpected = [k for k in state if k not in own and not (ignore and k.startswith(ignore))]
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    mismatched = [
        f"{k} (checkpoint {list(state[k].shape)}, model {list(own[k].shape)})"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {_examples(missing)})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {_examples(unexpected)})")
        if mismatched:
            parts.append(f"{len(mismatched)} keys with another shape (e.g. {_examples(mismatched)})")
        raise RadioCurationError(
            f"{source} does not fit the {type(model).__name__} backbone ({len(own)} tensors): "
            f"{'; '.join(parts)}. Check backbone.arch / backbone.name and backbone.prefix."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
