"""Backbone factories for the ``backbone`` config group; each returns a :class:`FeatureExtractor`.

Nothing here downloads anything: architectures are built without weights and weights come from local
files only. Every extractor carries a ``spec``, a plain dict from which :func:`build_architecture`
rebuilds the same network without weights (what ``save_backbone`` stores beside the state dict).
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import timm
import torch
import torchvision
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from radio_curation.backbones.checkpoint import load_weights, read_checkpoint, strip_prefix
from radio_curation.backbones.extractor import FeatureExtractor
from radio_curation.errors import RadioCurationError

log = logging.getLogger(__name__)

#: solo-learn's ViT backbones are timm ViTs with 16 px patches.
SOLO_LEARN_VITS = {
    "vit_tiny": "vit_tiny_patch16_224",
    "vit_small": "vit_small_patch16_224",
    "vit_base": "vit_base_patch16_224",
    "vit_large": "vit_large_patch16_224",
}


def _plain(node: Any) -> Any:
    if isinstance(node, DictConfig):
        return OmegaConf.to_container(node, resolve=True)
    return node


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=6, cutoff=0.5)
    return f" Closest: {', '.join(close)}." if close else ""


def _check_in_chans(in_chans: int) -> int:
    if int(in_chans) not in (1, 3):
        raise RadioCurationError(f"backbone.in_chans must be 1 or 3, got {in_chans}")
    return int(in_chans)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _build_timm(name: str, in_chans: int, model_kwargs: dict[str, Any]) -> nn.Module:
    try:
        return timm.create_model(name, pretrained=False, num_classes=0, in_chans=in_chans, **model_kwargs)
    except RuntimeError as err:
        if "Unknown model" not in str(err):
            raise
        raise RadioCurationError(
            f"backbone.name={name!r} is not a timm model.{_suggest(name, timm.list_models())}"
        ) from err


def _build_torchvision(arch: str, in_chans: int, cifar: bool) -> nn.Module:
    known = torchvision.models.list_models(module=torchvision.models)
    if arch not in known:
        raise RadioCurationError(f"backbone.arch={arch!r} is not a torchvision model.{_suggest(arch, known)}")
    model = torchvision.models.get_model(arch, weights=None)
    for head in ("fc", "classifier", "heads"):
        if isinstance(getattr(model, head, None), nn.Module):
            setattr(model, head, nn.Identity())
    if cifar:
        if not hasattr(model, "conv1") or not hasattr(model, "maxpool"):
            raise RadioCurationError(f"backbone.cifar=true needs a ResNet, not {arch}")
        # solo-learn's small-image ResNet stem: 3x3 stride-1 first convolution and no max-pool.
        model.conv1 = nn.Conv2d(in_chans, model.conv1.out_channels, 3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_chans != 3:
        name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
        _set_submodule(
            model,
            name,
            nn.Conv2d(
                in_chans,
                conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                groups=conv.groups,
                bias=conv.bias is not None,
            ),
        )
    return model


def _build_hf(config: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    hf_config = AutoConfig.for_model(config.pop("model_type"), **config)
    model = AutoModel.from_config(hf_config)
    return _drop_hf_pooler(model)


def _drop_hf_pooler(model: nn.Module) -> nn.Module:
    # Features come from the token output; an unused pooler head would also break DDP training.
    if isinstance(getattr(model, "pooler", None), nn.Module):
        model.pooler = None
    return model


def build_architecture(spec: dict[str, Any]) -> nn.Module:
    """The network ``spec`` describes, with freshly initialised weights.

    ``spec`` is ``{"kind": "timm", "name", "in_chans", "model_kwargs"}``,
    ``{"kind": "torchvision", "arch", "in_chans", "cifar"}`` or ``{"kind": "hf", "config"}``.
    """
    kind = spec.get("kind")
    if kind == "timm":
        return _build_timm(spec["name"], spec["in_chans"], dict(spec.get("model_kwargs") or {}))
    if kind == "torchvision":
        return _build_torchvision(spec["arch"], spec["in_chans"], bool(spec.get("cifar")))
    if kind == "hf":
        return _build_hf(spec["config"])
    raise RadioCurationError(f"unknown backbone spec kind {kind!r}")


def _timm_input_size(model: nn.Module) -> int:
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size:
        return int(img_size[-1])
    return int((getattr(model, "pretrained_cfg", None) or {}).get("input_size", (3, 224, 224))[-1])


def _timm_head_prefixes(model: nn.Module) -> tuple[str, ...]:
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (classifier,) if isinstance(classifier, str) else tuple(classifier)
    return tuple(f"{n}." for n in names)


def _timm_filter(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    filter_fn = getattr(sys.modules.get(type(model).__module__), "checkpoint_filter_fn", None)
    return filter_fn(state, model) if filter_fn is not None else state


def timm_backbone(
    name: str,
    in_chans: int = 1,
    checkpoint: str | None = None,
    prefix: str = "",
    model_kwargs: dict[str, Any] | None = None,
    module_name: str | None = None,
    pooling: str | None = None,
    input_size: int | None = None,
) -> FeatureExtractor:
    """A timm model by name (``resnet18``, ``vit_small_patch14_dinov2`` ...), weights from a local file.

    Parameters
    ----------
    name
        Any name ``timm.list_models()`` knows; built with ``pretrained=False, num_classes=0``.
    in_chans
        1 or 3; RGB weights are summed into one channel when the checkpoint has 3.
    checkpoint
        A local weights file (timm/ImageNet format, a Lightning checkpoint, safetensors), or None for
        random weights. The model's own ``checkpoint_filter_fn`` converts original-format weights.
    prefix
        Only keys under this prefix are loaded, with it removed (``backbone.``, ``module.``).
    model_kwargs
        Extra ``timm.create_model`` arguments (``img_size``, ``dynamic_img_size``, ``depth`` ...).
    module_name, pooling
        The feature tap (see :class:`FeatureExtractor`).
    input_size
        Image side used to probe the feature width; default the model's own input size.
    """
    in_chans = _check_in_chans(in_chans)
    model_kwargs = dict(_plain(model_kwargs) or {})
    spec = {"kind": "timm", "name": name, "in_chans": in_chans, "model_kwargs": model_kwargs}
    model = build_architecture(spec)
    if checkpoint:
        source = f"checkpoint {checkpoint}"
        state = _timm_filter(model, strip_prefix(read_checkpoint(checkpoint), prefix, source))
        load_weights(model, state, source, in_chans, ignore_unexpected=_timm_head_prefixes(model))
    return FeatureExtractor(
        model,
        spec,
        in_chans,
        module_name,
        pooling,
        num_prefix_tokens=getattr(model, "num_prefix_tokens", 1),
        input_size=input_size or _timm_input_size(model),
    )


def torchvision_backbone(
    arch: str = "resnet18",
    in_chans: int = 1,
    checkpoint: str | None = None,
    prefix: str = "",
    cifar: bool = False,
    module_name: str | None = None,
    pooling: str | None = None,
    input_size: int = 224,
) -> FeatureExtractor:
    """A torchvision model (``resnet18``, ``resnet50`` ...) without its classifier, weights from a local file.

    Parameters
    ----------
    arch
        A name from ``torchvision.models.list_models()``.
    in_chans
        1 or 3; the first convolution is rebuilt for one channel (RGB weights summed into it).
    checkpoint, prefix
        A local weights file and the key prefix to load from it (see :func:`timm_backbone`).
    cifar
        solo-learn's small-image ResNet stem (3x3 stride-1 convolution, no max-pool).
    module_name, pooling, input_size
        The feature tap and probe size (see :class:`FeatureExtractor`).
    """
    in_chans = _check_in_chans(in_chans)
    spec = {"kind": "torchvision", "arch": arch, "in_chans": in_chans, "cifar": bool(cifar)}
    model = build_architecture(spec)
    if checkpoint:
        source = f"checkpoint {checkpoint}"
        state = strip_prefix(read_checkpoint(checkpoint), prefix, source)
        load_weights(model, state, source, in_chans, ignore_unexpected=("fc.", "classifier.", "heads."))
    return FeatureExtractor(model, spec, in_chans, module_name, pooling, input_size=input_size)


def hf_backbone(
    path: str,
    in_chans: int | None = 1,
    module_name: str | None = None,
    pooling: str | None = None,
    input_size: int | None = None,
) -> FeatureExtractor:
    """A local transformers checkpoint directory (DINOv2, ViT ...) loaded with ``AutoModel``.

    Parameters
    ----------
    path
        A directory with ``config.json`` and the weights (``save_pretrained`` layout). Never downloads.
    in_chans
        Input channels wanted; when the checkpoint has another count the patch embedding is adapted
        (RGB weights summed for one channel). None keeps the checkpoint's.
    module_name
        E.g. ``layernorm`` (the final norm, as the per-cutout .npy scripts this project replaces tapped),
        ``encoder.layer.5``; None taps ``last_hidden_state``.
    pooling
        ``cls`` (default), ``mean``, ``cls_mean`` over the tokens.
    input_size
        Probe size; default the config's ``image_size`` (position embeddings are interpolated).
    """
    from transformers import AutoConfig, AutoModel

    directory = Path(path).expanduser()
    if not (directory / "config.json").is_file():
        raise RadioCurationError(
            f"backbone.path={path} is not a transformers checkpoint directory (no config.json there); "
            "point it at the folder written by save_pretrained"
        )
    try:
        config = AutoConfig.from_pretrained(directory, local_files_only=True)
        model = AutoModel.from_pretrained(directory, local_files_only=True, dtype=torch.float32)
    except (OSError, ValueError) as err:
        raise RadioCurationError(f"cannot load the transformers checkpoint in {directory}: {err}") from err
    _drop_hf_pooler(model)
    saved_chans = int(getattr(config, "num_channels", 3))
    in_chans = saved_chans if in_chans is None else _check_in_chans(in_chans)
    if in_chans != saved_chans:
        adapted = config.to_dict()
        adapted["num_channels"] = in_chans
        target = _build_hf(adapted)
        load_weights(target, model.state_dict(), f"transformers checkpoint {directory}", in_chans)
        model = target
    spec = {"kind": "hf", "config": model.config.to_dict()}
    return FeatureExtractor(
        model,
        spec,
        in_chans,
        module_name,
        pooling,
        num_prefix_tokens=1 + int(getattr(model.config, "num_register_tokens", 0) or 0),
        input_size=input_size or int(getattr(model.config, "image_size", 224)),
    )


def _solo_learn_args(checkpoint: Path) -> dict[str, Any]:
    args_file = checkpoint.parent / "args.json"
    if not args_file.is_file():
        return {}
    try:
        return json.loads(args_file.read_text())
    except json.JSONDecodeError as err:
        raise RadioCurationError(f"{args_file} is not valid JSON: {err}") from err


def _first_conv_channels(state: dict[str, Tensor]) -> int:
    return next(int(v.shape[1]) for v in state.values() if v.ndim == 4)


def solo_learn_backbone(
    checkpoint: str,
    arch: str | None = None,
    in_chans: int | None = None,
    prefix: str = "backbone.",
    cifar: bool | None = None,
    module_name: str | None = None,
    pooling: str | None = None,
    input_size: int = 224,
) -> FeatureExtractor:
    """The backbone of a solo-learn (or any Lightning) checkpoint whose keys carry a ``backbone.`` prefix.

    Parameters
    ----------
    checkpoint
        The ``.ckpt`` file. An ``args.json`` beside it (solo-learn writes one) supplies ``arch``
        (``backbone.name``) and ``cifar`` (``data.dataset`` is cifar10/100) when they are not given.
    arch
        ``resnet18``, ``resnet50`` or another torchvision ResNet, or ``vit_tiny|small|base|large``.
    in_chans
        Input channels; None takes the checkpoint's.
    prefix
        Key prefix of the backbone weights in the checkpoint.
    cifar
        The small-image ResNet stem; None reads it from ``args.json`` (false without one).
    module_name, pooling, input_size
        The feature tap and probe size (see :class:`FeatureExtractor`).
    """
    path = Path(checkpoint).expanduser()
    args = _solo_learn_args(path)
    args_backbone = args.get("backbone")
    arch = arch or (args_backbone.get("name") if isinstance(args_backbone, dict) else args_backbone)
    if not arch:
        raise RadioCurationError(
            f"no architecture for {path}: there is no args.json beside it naming one; set backbone.arch "
            "(resnet18, resnet50, vit_small ...)"
        )
    if cifar is None:
        cifar = str((args.get("data") or {}).get("dataset", "")).lower() in ("cifar10", "cifar100")
    source = f"solo-learn checkpoint {path}"
    state = strip_prefix(read_checkpoint(path), prefix, source)
    in_chans = _check_in_chans(in_chans if in_chans is not None else _first_conv_channels(state))
    if arch in SOLO_LEARN_VITS:
        pos_embed = state.get("pos_embed")
        model_kwargs: dict[str, Any] = {"dynamic_img_size": True}
        if pos_embed is not None:
            grid = math.isqrt(pos_embed.shape[1] - 1)
            model_kwargs["img_size"] = grid * 16
        spec = {
            "kind": "timm",
            "name": SOLO_LEARN_VITS[arch],
            "in_chans": in_chans,
            "model_kwargs": model_kwargs,
        }
    elif arch.startswith(("resnet", "wide_resnet", "resnext")):
        spec = {"kind": "torchvision", "arch": arch, "in_chans": in_chans, "cifar": bool(cifar)}
    else:
        raise RadioCurationError(
            f"solo-learn backbone {arch!r} is not supported here; use a torchvision ResNet "
            f"(resnet18, resnet50 ...) or one of {', '.join(SOLO_LEARN_VITS)}"
        )
    model = build_architecture(spec)
    load_weights(model, state, source, in_chans, ignore_unexpected=("fc.", "head."))
    return FeatureExtractor(
        model,
        spec,
        in_chans,
        module_name,
        pooling,
        num_prefix_tokens=getattr(model, "num_prefix_tokens", 1),
        input_size=input_size,
    )


def run_backbone(
    model_id: str | None, runs_dir: str, module_name: str | None = None, pooling: str | None = None
) -> FeatureExtractor:
    """The backbone exported by a ``train.py`` run (its ``backbone.pt``), found in the run store.

    Parameters
    ----------
    model_id
        The train run's ID.
    runs_dir
        The run store (``paths.runs_dir``).
    module_name, pooling
        Another tap than the one the model was trained with; None keeps the saved tap.
    """
    from radio_curation.backbones.export import load_backbone
    from radio_curation.runs.store import RunStore

    if not model_id:
        raise RadioCurationError("backbone=run needs backbone.model_id=<train run ID>")
    record = RunStore(runs_dir).resolve(str(model_id), stage="train")
    return load_backbone(record.artifact("backbone.pt"), module_name=module_name, pooling=pooling)
