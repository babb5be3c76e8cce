import numpy as np
import pytest
import torch

from reference import REFERENCE_DIR, RECIPE_SHA256, manifest, recipe_arrays, recipe_sha256, recipe_state_dict
from rosette_bmz.model import AttentionUNet


def test_default_model_matches_published_manifest():
    state = AttentionUNet().state_dict()
    entries = manifest()
    assert list(state) == [e["key"] for e in entries]
    for e in entries:
        assert list(state[e["key"]].shape) == e["shape"], e["key"]
        assert str(state[e["key"]].dtype).replace("torch.", "") == e["dtype"], e["key"]
    assert sum(p.numel() for p in AttentionUNet().parameters()) == 31_394_477


def test_recipe_helper_matches_published_hash():
    assert recipe_sha256(recipe_arrays()) == RECIPE_SHA256


@pytest.mark.full_width
def test_reference_forward_pass():
    model = AttentionUNet()
    model.load_state_dict(recipe_state_dict(), strict=True)
    model.eval()
    x = torch.from_numpy(np.load(REFERENCE_DIR / "input_1x2x128x128.npy"))
    with torch.no_grad():
        y = model(x).numpy()
    expected = np.load(REFERENCE_DIR / "output_1x1x128x128.npy")
    assert y.shape == expected.shape
    assert np.abs(y - expected).max() < 1e-4


def test_sigmoid_is_last_registered_module():
    modules = list(AttentionUNet(base_channels=4).modules())
    assert isinstance(modules[-1], torch.nn.Sigmoid)
    assert isinstance(list(AttentionUNet(base_channels=4).children())[-1][-1], torch.nn.Sigmoid)


@pytest.mark.parametrize("shape", [(1, 2, 100, 128), (1, 2, 128, 72)])
def test_shape_not_multiple_of_16_is_clear_error(shape):
    model = AttentionUNet(base_channels=4).eval()
    with pytest.raises(ValueError, match=r"multiples of 16.*" + str(shape[2])):
        model(torch.zeros(shape))


def test_wrong_channels_is_clear_error():
    with pytest.raises(ValueError, match="2 input channel"):
        AttentionUNet(base_channels=4)(torch.zeros(1, 3, 32, 32))


def test_kwargs_are_json_safe_and_validated():
    m = AttentionUNet(in_channels=1, out_channels=2, base_channels=8).eval()
    assert m(torch.zeros(2, 1, 32, 48)).shape == (2, 2, 32, 48)
    with pytest.raises(ValueError, match="base_channels"):
        AttentionUNet(base_channels=0)
    with pytest.raises(ValueError, match="even"):
        AttentionUNet(base_channels=5)


def test_model_file_imports_torch_only():
    import ast
    from pathlib import Path

    import rosette_bmz.model as mod

    tree = ast.parse(Path(mod.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            roots.add((node.module or "").split(".")[0])
    assert roots <= {"torch", "__future__"}, roots
