import numpy as np
import pytest
import tifffile
from PIL import Image
from skimage.segmentation import find_boundaries

from rosette_bmz.inputs import (InputError, build_input, from_channels, from_labels, from_outlines, inner_outlines,
                                load_input, read_image)


def _grid_labels(h=48, w=64, cell=8):
    yy, xx = np.mgrid[:h, :w]
    return (yy // cell) * (w // cell) + xx // cell + 1


def _outlines(h=48, w=64):
    return inner_outlines(_grid_labels(h, w)).astype(np.uint8)


def test_from_outlines_published_order():
    o = _outlines()
    x = from_outlines(o)
    assert x.dtype == np.float32 and x.shape == (2,) + o.shape
    np.testing.assert_array_equal(x[0], find_boundaries(o > 0, mode="thick"))
    np.testing.assert_array_equal(x[1], o > 0)
    assert x[0].sum() > x[1].sum()  # the thick band is wider than the thin lines


@pytest.mark.parametrize("encode", [lambda o: o, lambda o: o * 255, lambda o: o.astype(bool),
                                    lambda o: o.astype(np.float32), lambda o: o.astype(np.uint16) * 65535,
                                    lambda o: o[None], lambda o: o[..., None]])
def test_any_binary_encoding(encode):
    o = _outlines()
    np.testing.assert_array_equal(from_outlines(encode(o)), from_outlines(o))


def test_inner_outlines_cellpose_style():
    lab = np.zeros((6, 8), int)
    lab[1:5, 1:4] = 1
    lab[1:5, 4:7] = 2
    expected = np.array([
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 1, 0, 1, 1, 0, 1, 0],
        [0, 1, 0, 1, 1, 0, 1, 0],
        [0, 1, 1, 1, 1, 1, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0]], bool)
    np.testing.assert_array_equal(inner_outlines(lab), expected)
    # a cell touching the image edge gets its edge pixels outlined (outside counts as not-the-cell)
    full = np.ones((4, 4), int)
    full[:, 2:] = 2
    assert inner_outlines(full)[0].all() and inner_outlines(full)[:, 0].all()


def test_from_labels_equals_from_inner_outlines():
    lab = _grid_labels()
    np.testing.assert_array_equal(from_labels(lab), from_outlines(inner_outlines(lab)))
    np.testing.assert_array_equal(from_labels(lab.astype(np.float32)), from_labels(lab))


def test_label_image_as_outlines_is_refused():
    with pytest.raises(InputError, match="looks like a label image"):
        from_outlines(_grid_labels(), name="cells.tif")


def test_filled_mask_as_outlines_is_refused():
    mask = (_grid_labels() > 0).astype(np.uint8)
    with pytest.raises(InputError, match=r"cells.tif: 100% of the pixels .*filled mask"):
        from_outlines(mask, name="cells.tif")


@pytest.mark.parametrize("arr,match", [
    (np.zeros((16, 16, 3), np.uint8), "RGB"),
    (np.zeros((5, 16, 16), np.uint8), "3D stack"),
    (np.zeros((0, 16)), "empty"),
    (np.array([[0, np.nan], [1, 0]]), "NaN"),
    (np.array([[1, 2], [2, 1]]), "0 as background"),
    (np.array([["a"]]), "numeric"),
])
def test_bad_outlines(arr, match):
    with pytest.raises(InputError, match=match):
        from_outlines(arr, name="x.tif")


def test_bad_labels():
    with pytest.raises(InputError, match="negative"):
        from_labels(np.array([[-1, 2], [3, 4]]))
    with pytest.raises(InputError, match="non-integer"):
        from_labels(np.array([[0.5, 2], [3, 4]]))
    with pytest.raises(InputError, match="binary outline"):
        from_labels(_outlines())
    with pytest.raises(InputError, match="boolean"):
        from_labels(_outlines().astype(bool))


def test_channels_validation():
    x = from_outlines(_outlines())
    np.testing.assert_array_equal(from_channels(x), x)
    np.testing.assert_array_equal(from_channels(np.moveaxis(x, 0, -1)), x)
    with pytest.raises(InputError, match=r"\(2, H, W\)"):
        from_channels(x[:1])
    with pytest.raises(InputError, match="binary 0/1"):
        from_channels(x * 0.5)
    with pytest.raises(InputError, match="unknown input kind"):
        build_input(x, "rgb")


def test_readers_roundtrip(tmp_path):
    o = _outlines() * 255
    tifffile.imwrite(tmp_path / "a.tif", o)
    np.save(tmp_path / "a.npy", o)
    Image.fromarray(o.astype(np.uint8)).save(tmp_path / "a.png")
    for name in ("a.tif", "a.npy", "a.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name), o)
        np.testing.assert_array_equal(load_input(tmp_path / name, "outlines"), from_outlines(o))


def test_reader_errors_name_the_file(tmp_path):
    (tmp_path / "broken.tif").write_bytes(b"garbage")
    with pytest.raises(InputError, match="broken.tif: cannot read as TIF"):
        read_image(tmp_path / "broken.tif")
    with pytest.raises(InputError, match="no such file"):
        read_image(tmp_path / "missing.tif")
    (tmp_path / "a.jpg").write_bytes(b"x")
    with pytest.raises(InputError, match="unsupported file type .jpg"):
        read_image(tmp_path / "a.jpg")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError, match="obj.npy"):
        read_image(tmp_path / "obj.npy")
