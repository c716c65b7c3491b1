import os

import numpy as np
import pytest
from PIL import Image

from tf_pacseg.data import samples, synthetic, voc


def _path(root, folder, sample_id, extension):
    return os.path.join(root, folder, sample_id + extension)


@pytest.fixture(scope="module")
def voc_dir(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("voc"))
    synthetic.make_synthetic_voc(root, num_train=1, num_val=1, seed=1)
    return root


def test_read_id_list_tolerates_common_formats(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text("a\n\n  b 1\n# comment\n/JPEGImages/c.jpg /SegmentationClass/c.png\nd.png\n")
    assert voc.read_id_list(str(path)) == ["a", "b", "c", "d"]


def test_load_sample_checks_16_bit_label_values(voc_dir, tmp_path):
    image_path = _path(voc_dir, "JPEGImages", "train_0000", ".jpg")
    label = np.asarray(Image.open(_path(voc_dir, "SegmentationClassAug", "train_0000", ".png")))
    wide = label.astype(np.uint16)
    wide[0, 0] = 300
    label_path = str(tmp_path / "wide.png")
    Image.fromarray(wide).save(label_path)
    with pytest.raises(
        samples.InvalidSampleError, match=r"values \[300\] outside \[0, 21\)"
    ) as info:
        voc.load_sample("train_0000", image_path, label_path)
    assert info.value.reason == samples.BAD_LABEL_VALUES
