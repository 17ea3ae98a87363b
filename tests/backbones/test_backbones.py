"""Every backbone kind loads from a locally saved tiny model; taps equal a direct forward; clear errors."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import timm
import torch
import torchvision
from transformers import Dinov2Config, Dinov2Model, ViTConfig, ViTModel

from radio_curation.backbones import build_backbone
from radio_curation.backbones.export import load_backbone, save_backbone
from radio_curation.backbones.extractor import FeatureExtractor, pool
from radio_curation.backbones.factory import (
    hf_backbone,
    solo_learn_backbone,
    timm_backbone,
    torchvision_backbone,
)
from radio_curation.errors import RadioCurationError
from radio_curation.runs.manifest import SCHEME, sha256sum, write_manifest

TINY_VIT = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def images(chans: int = 1, size: int = 32, n: int = 3) -> torch.Tensor:
    return torch.randn(n, chans, size, size, generator=torch.Generator().manual_seed(7))


def features(extractor: FeatureExtractor, x: torch.Tensor) -> torch.Tensor:
    extractor.eval()
    with torch.no_grad():
        out = extractor(x)
    assert out.shape == (len(x), extractor.feature_dim)
    return out


def resnet_avgpool(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """A torchvision ResNet's avgpool output, computed layer by layer (no hooks)."""
    model.eval()
    with torch.no_grad():
        x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
        x = model.layer4(model.layer3(model.layer2(model.layer1(x))))
        return torch.flatten(model.avgpool(x), 1)


def test_timm_checkpoint_round_trip_and_pooled_output(tmp_path: Path):
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1).eval()
    torch.save(reference.state_dict(), tmp_path / "resnet18.pth")
    extractor = timm_backbone(
        "resnet18", in_chans=1, checkpoint=str(tmp_path / "resnet18.pth"), input_size=32
    )
    assert extractor.feature_dim == 512 and extractor.in_chans == 1 and extractor.tap == "output"
    x = images()
    with torch.no_grad():
        want = reference.forward_head(reference.forward_features(x), pre_logits=True)
    torch.testing.assert_close(features(extractor, x), want)


def test_timm_rgb_checkpoint_adapted_to_one_channel(tmp_path: Path):
    rgb = timm.create_model("resnet18", pretrained=False, num_classes=0, in_chans=3).eval()
    torch.save({"state_dict": {f"module.{k}": v for k, v in rgb.state_dict().items()}}, tmp_path / "rgb.ckpt")
    extractor = timm_backbone(
        "resnet18", in_chans=1, checkpoint=str(tmp_path / "rgb.ckpt"), prefix="module.", input_size=32
    )
    x = images()
    # Summed RGB kernels on one channel == the RGB model on the channel repeated three times.
    with torch.no_grad():
        want = rgb(x.repeat(1, 3, 1, 1))
    torch.testing.assert_close(features(extractor, x), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pooling", ["cls", "mean", "cls_mean"])
def test_timm_vit_block_tap_equals_direct_forward(pooling: str):
    extractor = timm_backbone(
        "vit_tiny_patch16_224", model_kwargs=TINY_VIT, module_name="blocks.0", pooling=pooling
    )
    model = extractor.model.eval()
    x = images()
    with torch.no_grad():
        tokens = model.blocks[0](model.norm_pre(model.patch_drop(model._pos_embed(model.patch_embed(x)))))
    cls, mean = tokens[:, 0], tokens[:, 1:].mean(1)
    want = {"cls": cls, "mean": mean, "cls_mean": torch.cat([cls, mean], 1)}[pooling]
    torch.testing.assert_close(features(extractor, x), want)
    assert extractor.feature_dim == (96 if pooling == "cls_mean" else 48)


def test_torchvision_avgpool_tap_equals_direct_forward():
    extractor = torchvision_backbone("resnet18", in_chans=1, module_name="avgpool", input_size=32)
    x = images()
    torch.testing.assert_close(features(extractor, x), resnet_avgpool(extractor.model, x))
    assert extractor.feature_dim == 512


def test_feature_map_tap_mean_and_flatten():
    x = images()
    flat = torchvision_backbone("resnet18", module_name="layer3", input_size=32)
    mean = torchvision_backbone("resnet18", module_name="layer3", pooling="mean", input_size=32)
    mean.load_state_dict(flat.state_dict())
    assert flat.feature_dim == 256 * 2 * 2 and mean.feature_dim == 256
    torch.testing.assert_close(features(flat, x).reshape(3, 256, 4).mean(2), features(mean, x))


def test_tap_skips_the_rest_of_the_network():
    extractor = torchvision_backbone("resnet18", module_name="layer1", pooling="mean", input_size=32)
    ran = []
    extractor.model.layer2.register_forward_hook(lambda *_: ran.append("layer2"))
    features(extractor, images())
    assert ran == []


def test_hf_dinov2_layernorm_cls_is_the_old_pipeline_feature(tmp_path: Path):
    config = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    reference = Dinov2Model(config).eval()
    reference.save_pretrained(tmp_path / "dinov2")
    extractor = hf_backbone(str(tmp_path / "dinov2"), in_chans=3, module_name="layernorm", pooling="cls")
    x = images(chans=3, size=48)
    with torch.no_grad():
        want = reference(pixel_values=x).last_hidden_state[:, 0]
    torch.testing.assert_close(features(extractor, x), want)
    # Default tap: last_hidden_state, CLS token; the same vector.
    torch.testing.assert_close(features(hf_backbone(str(tmp_path / "dinov2"), in_chans=3), x), want)


def test_hf_one_channel_adaptation_of_an_rgb_checkpoint(tmp_path: Path):
    config = ViTConfig(
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        image_size=32,
        patch_size=8,
    )
    reference = ViTModel(config).eval()
    reference.save_pretrained(tmp_path / "vit")
    extractor = hf_backbone(str(tmp_path / "vit"), in_chans=1, pooling="mean")
    assert extractor.in_chans == 1 and extractor.spec["config"]["num_channels"] == 1
    x = images(chans=1, size=32)
    with torch.no_grad():
        want = reference(pixel_values=x.repeat(1, 3, 1, 1)).last_hidden_state[:, 1:].mean(1)
    torch.testing.assert_close(features(extractor, x), want, atol=1e-4, rtol=1e-4)


def _solo_learn_checkpoint(directory: Path, arch: str = "resnet18", in_chans: int = 3) -> torch.nn.Module:
    model = torchvision_backbone(arch, in_chans=in_chans, input_size=32).model.eval()
    state = {f"backbone.{k}": v for k, v in model.state_dict().items()}
    state["projector.0.weight"] = torch.zeros(4, 512)
    state["momentum_backbone.conv1.weight"] = torch.zeros(1)
    directory.mkdir(parents=True, exist_ok=True)
    # hyper_parameters hold arbitrary objects, as Lightning checkpoints do.
    torch.save(
        {"state_dict": state, "hyper_parameters": {"cfg": argparse.Namespace(lr=0.1)}, "epoch": 3},
        directory / "last.ckpt",
    )
    return model


def test_solo_learn_checkpoint_with_args_json(tmp_path: Path):
    run_dir = tmp_path / "byol" / "dnqos6hx"
    model = _solo_learn_checkpoint(run_dir)
    (run_dir / "args.json").write_text(
        json.dumps({"backbone": {"name": "resnet18"}, "data": {"dataset": "custom"}})
    )
    extractor = solo_learn_backbone(str(run_dir / "last.ckpt"), module_name="avgpool", input_size=32)
    assert extractor.in_chans == 3 and extractor.feature_dim == 512
    x = images(chans=3)
    torch.testing.assert_close(features(extractor, x), resnet_avgpool(model, x))


def test_solo_learn_needs_an_arch_without_args_json(tmp_path: Path):
    _solo_learn_checkpoint(tmp_path)
    with pytest.raises(RadioCurationError, match=r"set backbone.arch"):
        solo_learn_backbone(str(tmp_path / "last.ckpt"))
    extractor = solo_learn_backbone(str(tmp_path / "last.ckpt"), arch="resnet18", in_chans=1, input_size=32)
    assert extractor.in_chans == 1


def test_export_round_trip_keeps_weights_and_tap(tmp_path: Path):
    extractor = timm_backbone(
        "vit_tiny_patch16_224", model_kwargs=TINY_VIT, module_name="blocks.1", pooling="mean"
    )
    path = save_backbone(extractor, {"_target_": "x", "name": "vit"}, tmp_path / "backbone.pt")
    loaded = load_backbone(path)
    assert (loaded.module_name, loaded.pooling, loaded.feature_dim) == ("blocks.1", "mean", 48)
    x = images()
    torch.testing.assert_close(features(loaded, x), features(extractor, x))
    retapped = load_backbone(path, module_name="blocks.0", pooling="cls")
    assert retapped.tap == "blocks.0"
    assert not torch.allclose(features(retapped, x), features(extractor, x))


def _train_run(runs_dir: Path, extractor: FeatureExtractor, run_id: str = "train-0123456789") -> str:
    run_dir = runs_dir / "train" / run_id
    save_backbone(extractor, {"name": "resnet18"}, run_dir / "backbone.pt")
    artifacts = {"backbone.pt": {"sha256": sha256sum(run_dir / "backbone.pt")}}
    write_manifest(
        run_dir,
        {"run_id": run_id, "stage": "train", "status": "complete", "scheme": SCHEME, "artifacts": artifacts},
    )
    return run_id


def test_run_backbone_from_the_store_via_config(compose, runs_dir: Path):
    trained = torchvision_backbone("resnet18", module_name="avgpool", input_size=32)
    run_id = _train_run(runs_dir, trained)
    cfg = compose("extract", ["stage=features", "backbone=run", f"backbone.model_id={run_id}"])
    loaded = build_backbone(cfg.backbone)
    x = images()
    torch.testing.assert_close(features(loaded, x), features(trained, x))


def test_run_backbone_with_an_id_of_another_stage(compose, runs_dir: Path):
    (runs_dir / "merge" / "merge-abc").mkdir(parents=True)
    write_manifest(
        runs_dir / "merge" / "merge-abc", {"run_id": "merge-abc", "stage": "merge", "status": "complete"}
    )
    cfg = compose("extract", ["stage=features", "backbone=run", "backbone.model_id=merge-abc"])
    with pytest.raises(RadioCurationError, match="'merge' run, but a 'train' run"):
        build_backbone(cfg.backbone)


@pytest.mark.parametrize(
    ("option", "overrides", "dim"),
    [
        ("timm", ["backbone.input_size=32"], 512),
        ("torchvision", ["backbone.input_size=32"], 512),
        ("resnet18", ["backbone.input_size=32"], 512),
        ("vit_small_dinov2", ["+backbone.model_kwargs.depth=1", "backbone.input_size=28"], 384),
    ],
)
def test_configs_without_files_instantiate(compose, option, overrides, dim):
    cfg = compose("extract", ["stage=features", f"backbone={option}", *overrides])
    extractor = build_backbone(cfg.backbone)
    assert isinstance(extractor, FeatureExtractor) and extractor.feature_dim == dim


def test_wrong_module_name_lists_the_closest(tmp_path: Path):
    with pytest.raises(RadioCurationError, match=r"'avgpol' is not a module.*Closest names: avgpool"):
        torchvision_backbone("resnet18", module_name="avgpol", input_size=32)


def test_unknown_architectures_suggest_names():
    with pytest.raises(RadioCurationError, match=r"not a timm model\. Closest: resnet18"):
        timm_backbone("resnet-18")
    with pytest.raises(RadioCurationError, match=r"not a torchvision model\. Closest: resnet18"):
        torchvision_backbone("resnet_18")


def test_checkpoint_that_does_not_fit_reports_counts_and_examples(tmp_path: Path):
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    with pytest.raises(RadioCurationError) as info:
        torchvision_backbone("resnet18", checkpoint=str(tmp_path / "r50.pth"), input_size=32)
    message = str(info.value)
    assert "missing keys (e.g. " in message or "unexpected keys (e.g. " in message
    assert (
        "keys with another shape (e.g. layer1.0.conv1.weight (checkpoint [64, 64, 1, 1], model [64, 64, 3, 3])"
        in message
    )


def test_unreadable_missing_and_prefixless_checkpoints(tmp_path: Path):
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(RadioCurationError, match="cannot read checkpoint"):
        torchvision_backbone("resnet18", checkpoint=str(tmp_path / "garbage.ckpt"))
    with pytest.raises(RadioCurationError, match="does not exist"):
        solo_learn_backbone(str(tmp_path / "nowhere.ckpt"), arch="resnet18")
    torch.save({"state_dict": {"encoder.conv1.weight": torch.zeros(1)}}, tmp_path / "other.ckpt")
    with pytest.raises(RadioCurationError, match=r"no weights under the prefix 'backbone\.'.*encoder\."):
        solo_learn_backbone(str(tmp_path / "other.ckpt"), arch="resnet18")
    torch.save({"epoch": 1}, tmp_path / "nostate.ckpt")
    with pytest.raises(RadioCurationError, match="no state dict"):
        timm_backbone("resnet18", checkpoint=str(tmp_path / "nostate.ckpt"))


def test_hf_path_must_be_a_checkpoint_directory(tmp_path: Path):
    with pytest.raises(RadioCurationError, match=r"no config\.json"):
        hf_backbone(str(tmp_path))


def test_pooling_checks():
    with pytest.raises(RadioCurationError, match=r"backbone\.pooling must be one of"):
        torchvision_backbone("resnet18", pooling="max", input_size=32)
    with pytest.raises(RadioCurationError, match="needs a token output"):
        torchvision_backbone("resnet18", module_name="layer4", pooling="cls", input_size=32)
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    torch.testing.assert_close(pool(tokens, "mean", num_prefix_tokens=2), tokens[:, 2:].mean(1))
