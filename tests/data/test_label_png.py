import io
import pickle

import numpy as np
import pytest
from PIL import Image

from tf_pacseg import constants
from tf_pacseg.data import label_png, samples


def test_decode_label_png_maps_rgb_colours_and_rejects_unknown_ones():
    label = np.array([[0, 1, 20], [255, 15, 7]], np.uint8)
    rgb = np.array(constants.VOC_PALETTE, np.uint8)[label]
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    np.testing.assert_array_equal(label_png.decode_label_png(buffer.getvalue()), label)

    rgb[0, 0] = (1, 2, 3)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    with pytest.raises(samples.InvalidSampleError, match=r"not in the VOC palette: \(1, 2, 3\)"):
        label_png.decode_label_png(buffer.getvalue(), "x.png")


def test_check_label_values_allows_the_ignore_label_and_lists_the_others():
    label = np.array([[0, 20, 255], [3, 4, 5]], np.uint8)
    label_png.check_label_values(label, 21, "x.png")
    label[1] = (21, 30, 254)
    with pytest.raises(
        samples.InvalidSampleError, match=r"x\.png has label values \[21, 30, 254\]"
    ):
        label_png.check_label_values(label, 21, "x.png")


def test_encode_label_png_round_trips_through_decode():
    label = np.random.default_rng(0).integers(0, 21, (7, 9)).astype(np.uint8)
    label[0] = 255
    encoded = label_png.encode_label_png(label)
    assert encoded.startswith(label_png.PNG_MAGIC)
    np.testing.assert_array_equal(label_png.decode_label_png(encoded), label)


# A 5-class colour table: class i is _COLOURS[i]; white is left out.
_COLOURS = ((0, 0, 0), (200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0))
_IGNORE_COLOUR = (255, 255, 255)


def _colours_file(tmp_path, text=None):
    path = tmp_path / "colors.txt"
    if text is None:
        text = "# r, g, b per class\n" + "".join(f"{r}, {g} {b}\n" for r, g, b in _COLOURS)
        text += "\nignore: 255,255,255  # void\n"
    path.write_text(text)
    return str(path)


def _png(array):
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _render(label):
    """RGB colour mask of class indices, 255 drawn in the ignore colour."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(_COLOURS)] = _COLOURS
    table[255] = _IGNORE_COLOUR
    return table[label]


def _blocks(seed=0, shape=(24, 32)):
    """Class indices in 4x4 blocks, with a band of ignore."""
    rng = np.random.default_rng(seed)
    label = np.kron(rng.integers(0, len(_COLOURS), (shape[0] // 4, shape[1] // 4)), np.ones((4, 4)))
    label = label.astype(np.uint8)
    label[:, -3:] = 255
    return label


def test_colours_file_gives_class_and_ignore_colours(tmp_path):
    colours = label_png.load_label_colors(_colours_file(tmp_path), 5, ignore_label=250)
    assert colours.colors == _COLOURS
    assert colours.ignore_colors == (_IGNORE_COLOUR,)
    assert colours.ignore_label == 250
    assert "colors.txt" in colours.source


def test_voc_colours_are_the_palette_and_its_void_colour():
    colours = label_png.load_label_colors("voc", 5)
    assert colours.colors == constants.VOC_PALETTE[:5]
    assert colours.ignore_colors == ((224, 224, 192),)


@pytest.mark.parametrize(
    "text, message",
    [
        ("0,0,0\n1,2\n", r"colors\.txt', line 2: expected `r,g,b`.*Received: '1,2'"),
        ("0,0,0\n1,2,256\n", r"line 2: expected `r,g,b` \(three ints in \[0, 255\]\)"),
        ("0,0,0\nignore: 0,0,0\n", r"gives the colour \(0, 0, 0\) to class 0 \(line 1\) and, on "),
        ("# nothing\n\n", r"colors\.txt' holds no class colour"),
        ("0,0,0\n1,1,1\n2,2,2\n", r"colors\.txt' has 3 class colours, but there are 5 classes"),
    ],
)
def test_bad_colours_files_are_named_with_the_line(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        label_png.load_label_colors(_colours_file(tmp_path, text), 5)


def test_missing_colours_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"Cannot read the label colours file .*nope\.txt"):
        label_png.load_label_colors(str(tmp_path / "nope.txt"), 5)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P"])
def test_colour_masks_map_to_indices_and_ignore(tmp_path, mode):
    colours = label_png.load_label_colors(_colours_file(tmp_path), 5)
    label = _blocks()
    image = Image.fromarray(_render(label))
    if mode == "RGBA":
        image.putalpha(128)
    elif mode == "P":
        image = image.quantize(colors=8, method=Image.Quantize.FASTOCTREE, dither=0)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    decoded = label_png.decode_label_png(buffer.getvalue(), "m.png", colours)
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, label)


def test_unknown_colour_is_named_with_its_count_and_first_position(tmp_path):
    colours = label_png.load_label_colors(_colours_file(tmp_path), 5)
    rgb = _render(_blocks())
    rgb[5, 7:10] = (10, 20, 30)
    rgb[9, 2] = (10, 20, 30)
    rgb[0, 0] = (1, 1, 1)
    with pytest.raises(samples.InvalidSampleError) as info:
        label_png.decode_label_png(_png(rgb), "m.png", colours)
    assert info.value.reason == samples.UNKNOWN_LABEL_COLORS
    message = str(info.value)
    assert "label file m.png has colours in no entry of the label colours file" in message
    assert "(10, 20, 30) on 4 pixels, first at (row 5, col 7)" in message
    assert "(1, 1, 1) on 1 pixels, first at (row 0, col 0)" in message


def test_jpeg_compressed_mask_is_named_as_such(tmp_path):
    colours = label_png.load_label_colors(_colours_file(tmp_path), 5)
    buffer = io.BytesIO()
    Image.fromarray(_render(_blocks())).save(buffer, format="JPEG", quality=75)
    jpeg = buffer.getvalue()
    lossy_rgb = np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))
    distinct = len(np.unique(lossy_rgb.reshape(-1, 3), axis=0))
    assert distinct > 16  # The test's premise: compression blends the edges.

    with pytest.raises(samples.InvalidSampleError, match="it is a JPEG") as info:
        label_png.decode_label_png(jpeg, "m.jpg", colours)
    assert info.value.reason == samples.LOSSY_LABEL
    with pytest.raises(
        samples.InvalidSampleError,
        match=rf"m\.png looks JPEG-compressed: {distinct} distinct colours .*lossless PNG",
    ) as info:
        label_png.decode_label_png(_png(lossy_rgb), "m.png", colours)
    assert info.value.reason == samples.LOSSY_LABEL


def test_16_bit_png_is_not_read_as_colours(tmp_path):
    colours = label_png.load_label_colors(_colours_file(tmp_path), 5)
    with pytest.raises(samples.InvalidSampleError, match="'I;16'.*not colours") as info:
        label_png.decode_label_png(_png(np.zeros((4, 4), np.uint16)), "m.png", colours)
    assert info.value.reason == samples.BAD_LABEL


def test_label_colours_cross_process_boundaries(tmp_path):
    colours = label_png.load_label_colors(_colours_file(tmp_path), 5)
    assert pickle.loads(pickle.dumps(colours)) == colours
