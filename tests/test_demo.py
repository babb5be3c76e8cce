import pytest

from rosette_bmz.demo import demo_checkpoint, run_demo


@pytest.mark.slow
def test_demo_end_to_end_on_shipped_weights(tmp_path):
    """The README's main job: export the shipped demo weights, predict the bundled sample with onnx."""
    assert demo_checkpoint().is_file()
    s = run_demo(tmp_path / "demo", run_test=False)
    for key in ("prob", "labels", "csv", "overlay"):
        assert (tmp_path / "demo" / s["outputs"][key].split("/")[-1]).is_file()
    assert (tmp_path / "demo" / "package" / "rdf.yaml").is_file()
    # the shipped weights really find the sample's rosettes and leave the 4-cell decoys alone. On the
    # sample (46 rosettes by the definition, 30 planted, 16 arisen by chance; 352 decoys) the shipped
    # world_wide weights find 41/46 with 39/53 proposals on a rosette and 11/352 decoys hit (the
    # issue-13 weights of training/world_run: 41/46, 39/44, 7/352; the pre-issue-13 ones: 37/46,
    # 34/36, 3/352). One image: on the 8 default-world test images their precision is 80 %.
    assert s["n_rosettes"] >= 20
    assert s["n_detected"] >= 0.8 * s["n_rosettes"]
    assert s["n_proposals_matched"] >= 0.7 * s["n_proposals"]
    assert s["n_decoys_hit"] <= 0.04 * s["n_decoys"]
