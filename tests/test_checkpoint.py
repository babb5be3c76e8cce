import pickle

import pytest
import torch

from rosette_bmz.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from rosette_bmz.model import AttentionUNet


@pytest.mark.parametrize("wrap", ["bare", "state_dict", "model_state_dict", "module"])
def test_accepted_layouts(tmp_path, tiny_state, wrap):
    state = dict(tiny_state)
    if wrap == "module":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif wrap == "bare":
        obj = state
    else:
        obj = {wrap: state, "epoch": 3, "optimizer": {"lr": torch.tensor(1e-4)}}
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path)
    loaded = load_checkpoint(path)
    assert loaded.kwargs == {"in_channels": 2, "out_channels": 1, "base_channels": 4}
    assert not loaded.model.training
    for k, v in loaded.model.state_dict().items():
        assert torch.equal(v, tiny_state[k])


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_MARKER",))


def test_pickle_payload_is_refused_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with open(path, "wb") as f:
        pickle.dump({"state_dict": _Evil()}, f)
    with pytest.raises(CheckpointError, match="weights only"):
        load_checkpoint(path)
    assert not (tmp_path / "PWNED_MARKER").exists()


def test_mismatch_reported_in_one_message(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["att1.psi.0.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["dec1.0.bias"] = torch.zeros(5)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert "1 missing key(s): att1.psi.0.weight" in msg
    assert "1 unexpected key(s): extra.weight" in msg
    assert "dec1.0.bias: checkpoint (5,) vs model (4,)" in msg


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a torch file")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "missing.pt")
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="not an Attention U-Net"):
        load_checkpoint(path)


def test_save_roundtrip_with_sidecar(tmp_path):
    model = AttentionUNet(base_channels=6)
    path = save_checkpoint(model, tmp_path / "sub" / "m.pt", metadata={"epoch": 2})
    loaded = load_checkpoint(path)
    assert loaded.kwargs["base_channels"] == 6 and loaded.metadata == {"epoch": 2}
    assert [p.name for p in (tmp_path / "sub").iterdir()] and not list((tmp_path / "sub").glob(".m.pt*"))


@pytest.mark.full_width
def test_published_layout_loads(tmp_path):
    from reference import recipe_state_dict

    path = tmp_path / "published.pth"
    torch.save(recipe_state_dict(), path)
    loaded = load_checkpoint(path)
    assert loaded.kwargs == {"in_channels": 2, "out_channels": 1, "base_channels": 64}
    assert isinstance(loaded.model, AttentionUNet)


def test_saved_files_have_usual_permissions(tmp_path):
    import os
    import stat

    path = save_checkpoint(AttentionUNet(base_channels=4), tmp_path / "m.pt", metadata={})
    umask = os.umask(0)
    os.umask(umask)
    for p in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask


def test_widen_model_computes_the_same_function_and_then_learns(tiny_state):
    from rosette_bmz.checkpoint import build_model, widen_model

    narrow = build_model(tiny_state)
    torch.manual_seed(1)
    wide = widen_model(narrow, 8)
    assert wide.base_channels == 8
    assert sum(p.numel() for p in wide.parameters()) > 3 * sum(p.numel() for p in narrow.parameters())
    x = (torch.rand(2, 2, 64, 64, generator=torch.Generator().manual_seed(2)) > 0.7).float()
    with torch.no_grad():
        before, after = narrow(x), wide(x)
    assert torch.allclose(before, after, atol=1e-6), float((before - after).abs().max())
    # the new channels are not dead: a gradient reaches the zero weights from them into the old ones
    wide.train()
    wide(x).mean().backward()
    g = wide.dec1[0].weight.grad
    assert g[:4, 4:8].abs().sum() > 0 and g[:4, 12:16].abs().sum() > 0   # new halves of the concatenation
    assert (wide.dec1[0].weight.detach()[:4, 4:8] == 0).all()
    for bad in (2, 7, True, "8"):
        with pytest.raises(CheckpointError, match="cannot widen a base-4 model"):
            widen_model(narrow, bad)
