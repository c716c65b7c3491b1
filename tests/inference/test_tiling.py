"""Sliding-window inference: the tile grid, one tile = the whole image, band-by-band = full."""

import logging

import numpy as np
import pytest
from helpers import randomize_weights
from keras import ops

from tf_pacseg import build_model
from tf_pacseg.data import synthetic
from tf_pacseg.inference import forward, prediction, tiling
from tf_pacseg.inference.tiling import Tiling

NUM_CLASSES = 6
# Several tiles each way: 4 rows and 6 columns of 65x65 tiles, a third overlapping,
# in batches that straddle rows.
IMAGE_SIZE = (170, 280)
TILES = Tiling(mode="slide", tile_size=65, tile_batch_size=3)
# A random model's mIoU against the labels means nothing (it trained on
# nothing), so the tiled prediction is measured against the whole image's: with
# 129x129 tiles (3 rows, 4 columns) on 257x385, the argmaxes agree on 0.83 of
# the pixels and the probability vectors are 0.11 apart (mean L1) where another
# random model's are 0.60 apart and agree on 0.19. They differ near tile edges
# (less context) and wherever a tile's image pooling differs from the image's,
# which moves a random model's near-uniform scores a lot. The margins below
# leave room for other CPUs' numerics; a misplaced tile or a wrong average
# would fail them.
AGREEMENT_SIZE = (257, 385)
AGREEMENT_TILES = Tiling(mode="slide", tile_size=129)
MIN_AGREEMENT = 0.75
MAX_L1 = 0.2
MIN_UNRELATED_L1 = 0.4


def _tiny_model(seed):
    model = build_model(
        "resnet_v1_50", "pac", num_classes=NUM_CLASSES, units_per_block=(1, 1, 1, 1)
    )
    model(np.zeros((1, 33, 33, 3), np.float32))
    return randomize_weights(model, seed=seed, residual_scale=0.3)


@pytest.fixture(scope="module")
def model():
    return _tiny_model(seed=1)


@pytest.fixture(scope="module")
def image():
    """A synthetic VOC-like uint8 image several tiles wide."""
    image, _ = synthetic.make_sample(np.random.default_rng(4), *IMAGE_SIZE)
    return image


def _whole(model, image, eval_scales=(1.0,), add_flipped_images=False):
    """The whole image's probabilities [H, W, C], through the same `forward.probabilities`."""
    batch = image[None].astype(np.float32)
    return ops.convert_to_numpy(
        forward.probabilities(model, batch, eval_scales, add_flipped_images)
    )[0]


def _full_accumulator(model, image, tiles, eval_scales=(1.0,), add_flipped_images=False):
    """Reference: every tile summed into a whole-image array, then divided by the coverage."""
    height, width = image.shape[:2]
    total = np.zeros((height, width, NUM_CLASSES), np.float32)
    count = np.zeros((height, width, 1), np.float32)
    (tile_h, tile_w), _, _ = tiles.grid(height, width)
    for top, left, probabilities in tiling.tile_probabilities(
        model, image, tiles, eval_scales, add_flipped_images
    ):
        total[top : top + tile_h, left : left + tile_w] += probabilities
        count[top : top + tile_h, left : left + tile_w] += 1.0
    return total / count


def test_tiles_cover_each_side_with_the_last_flush_with_the_end():
    starts = tiling.tile_starts(6000, 513, 342)
    assert len(starts) == 18 and starts[-1] == 6000 - 513
    assert all(b - a == 342 for a, b in zip(starts[:-1], starts[1:-1], strict=False))
    assert 0 < starts[-1] - starts[-2] <= 342
    assert tiling.tile_starts(513, 513, 342) == [0]
    # The default stride: two thirds of the tile, a third of overlap.
    assert Tiling().tile_size == (513, 513) and Tiling().tile_stride == (342, 342)
    assert Tiling(tile_size=(65, 129)).tile_stride == (43, 86)
    assert tiling.tile_starts(514, 513, 342) == [0, 1]
    # An image smaller than a tile gets one tile of its own size.
    shape, tops, lefts = Tiling(tile_size=(65, 33), tile_stride=(40, 33)).grid(50, 100)
    assert shape == (50, 33) and tops == [0] and lefts == [0, 33, 66, 67]


def test_one_tile_covering_the_image_gives_the_whole_images_probabilities(model):
    image = np.random.default_rng(0).integers(0, 256, (45, 61, 3), np.uint8)
    for tiles in (Tiling(mode="slide"), Tiling(mode="slide", tile_size=(45, 61))):
        probabilities = tiling.tiled_probabilities(model, image, tiles)
        np.testing.assert_array_equal(probabilities, _whole(model, image))
        logits = ops.convert_to_numpy(forward.scores(model, image[None].astype(np.float32)))[0]
        np.testing.assert_allclose(probabilities, ops.convert_to_numpy(ops.softmax(logits)))
        labels = tiling.tiled_labels(model, image, tiles)
        assert labels.dtype == np.uint8
        np.testing.assert_array_equal(labels, probabilities.argmax(-1))


def test_several_tiles_agree_with_the_whole_image_within_the_margin(model):
    image, _ = synthetic.make_sample(np.random.default_rng(4), *AGREEMENT_SIZE)
    _, tops, lefts = AGREEMENT_TILES.grid(*AGREEMENT_SIZE)
    assert len(tops) == 3 and len(lefts) == 4
    whole = _whole(model, image)
    tiled = tiling.tiled_probabilities(model, image, AGREEMENT_TILES)
    assert np.mean(tiled.argmax(-1) == whole.argmax(-1)) >= MIN_AGREEMENT
    assert np.abs(tiled - whole).sum(-1).mean() <= MAX_L1
    unrelated = _whole(_tiny_model(seed=9), image)
    assert np.abs(unrelated - whole).sum(-1).mean() >= MIN_UNRELATED_L1


@pytest.mark.parametrize(
    "scales, flip", [((1.0,), False), ((0.75, 1.25), True)], ids=["plain", "multi_scale_flipped"]
)
def test_band_by_band_equals_a_full_accumulator(model, image, monkeypatch, scales, flip):
    monkeypatch.setattr(tiling, "_ROWS_PER_CHUNK", 7)  # Several chunks per band too.
    expected = _full_accumulator(model, image, TILES, scales, flip)
    probabilities = tiling.tiled_probabilities(model, image, TILES, scales, flip)
    np.testing.assert_array_equal(probabilities, expected)
    labels = tiling.tiled_labels(model, image, TILES, scales, flip)
    np.testing.assert_array_equal(labels, expected.argmax(-1))


def test_each_tile_runs_multi_scale_and_flips_on_its_own_pixels(model, image):
    (tile_h, tile_w), _, _ = TILES.grid(*IMAGE_SIZE)
    for top, left, probabilities in tiling.tile_probabilities(
        model, image, TILES, (0.75, 1.25), True
    ):
        crop = image[top : top + tile_h, left : left + tile_w]
        np.testing.assert_allclose(
            probabilities, _whole(model, crop, (0.75, 1.25), True), atol=1e-6
        )


def test_non_square_tiles_and_strides_touching_tiles_and_a_side_shorter_than_a_tile(model, image):
    tiles = Tiling(mode="slide", tile_size=(100, 50), tile_stride=(37, 50))
    band = tiling.tiled_probabilities(model, image, tiles)
    np.testing.assert_array_equal(band, _full_accumulator(model, image, tiles))
    tiles = Tiling(mode="slide", tile_size=(200, 50), tile_stride=(1, 30))
    band = tiling.tiled_probabilities(model, image, tiles)
    np.testing.assert_array_equal(band, _full_accumulator(model, image, tiles))


def test_auto_chooses_by_the_pixel_budget_and_logs_it(model, image, caplog):
    height, width = IMAGE_SIZE
    caplog.set_level(logging.INFO, logger="absl")  # Whatever verbosity earlier tests left.
    fits = Tiling(mode="auto", tile_size=65, max_whole_pixels=height * width)
    labels = prediction.predict_image(model, image, "index", fits)
    np.testing.assert_array_equal(labels, _whole(model, image).argmax(-1))
    assert "Tiles for" not in caplog.text
    above = Tiling(mode="auto", tile_size=65, max_whole_pixels=height * width - 1)
    labels = prediction.predict_image(model, image, "index", above)
    np.testing.assert_array_equal(labels, tiling.tiled_labels(model, image, TILES))
    assert (
        "Tiles for 280x170 image (47,600 pixels > max_whole_pixels=47,599): 24 tiles of "
        "65x65, stride 43x43" in caplog.text
    )
    assert not Tiling(mode="whole", max_whole_pixels=1).slides(10, 10)
    assert Tiling(mode="slide").slides(10, 10)


def test_argument_errors():
    with pytest.raises(ValueError, match=r"Expected at most tile_size=\(65, 65\).*tile_stride"):
        Tiling(tile_size=65, tile_stride=66)
    with pytest.raises(ValueError, match="Received: mode='tiles'"):
        Tiling(mode="tiles")
    with pytest.raises(ValueError, match=r"Received: tile_size=\(0, 0\)"):
        Tiling(tile_size=0)
    with pytest.raises(ValueError, match="Received: tile_batch_size=0"):
        Tiling(tile_batch_size=0)
    with pytest.raises(ValueError, match="Received: max_whole_pixels=0"):
        Tiling(max_whole_pixels=0)
