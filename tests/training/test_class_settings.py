"""Class names, class weights and the new loss and best-model settings of a training run."""

import json

import numpy as np
import pytest
from absl import flags

from tf_pacseg import constants
from tf_pacseg.cli import train_flags as training_flags
from tf_pacseg.data import class_names, label_png, records, statistics
from tf_pacseg.training import TrainConfig, components, summaries
from tf_pacseg.training.classes import resolve_classes

_NAMES = ("background", "road", "grass", "water", "sand")


def _records(root, names=_NAMES):
    """Training records of 5 classes (sand absent) with a class_names.txt beside them."""
    rng = np.random.default_rng(0)
    examples = []
    for height, width in ((12, 9), (7, 15), (10, 10)):
        label = rng.choice([0, 0, 0, 1, 2, 3], (height, width)).astype(np.uint8)
        label[rng.random(label.shape) < 0.1] = 255
        image = label_png.encode_label_png(np.zeros((height, width), np.uint8))
        examples.append(
            records.encode_example(image, label_png.encode_label_png(label), height, width)
        )
    records.write_shards(str(root), "train", examples, len(examples), num_shards=1)
    if names:
        class_names.write_class_names(str(root), names)
    return str(root)


def test_flags_reach_the_config_and_weights_become_numbers():
    values = flags.FlagValues()
    training_flags.define_flags(values)
    values(
        [
            "train.py",
            "--num_classes=5",
            "--class_names=voc5.txt",
            "--class_weights=1,0.5,2,0,3e-1",
            "--top_k_percent_pixels=0.25",
            "--keep_best=miou",
            "--export_from=best",
        ]
    )
    config = training_flags.config_from_flags(values)
    assert config.class_names == "voc5.txt"
    assert config.class_weights == (1.0, 0.5, 2.0, 0.0, 0.3)
    assert config.top_k_percent_pixels == 0.25
    assert (config.keep_best, config.export_from) == ("miou", "best")
    assert TrainConfig(class_weights="auto").class_weights == "auto"
    with pytest.raises(flags.IllegalFlagValueError):
        values(["train.py", "--keep_best=loss"])


def test_defaults_leave_every_option_off():
    config = TrainConfig()
    assert config.class_names is None and config.class_weights is None
    assert (config.top_k_percent_pixels, config.keep_best, config.export_from) == (
        1.0,
        "none",
        "last",
    )
    assert components.objective_arguments(config) == dict(
        loss="bal", ignore_label=255, class_weights=None, top_k_percent_pixels=1.0
    )


def test_invalid_settings_are_named():
    with pytest.raises(ValueError, match=r"5 finite numbers.*\(3 numbers\)"):
        TrainConfig(num_classes=5, class_weights="1,2,3")
    with pytest.raises(ValueError, match="'auto' or numbers separated by commas"):
        TrainConfig(num_classes=2, class_weights="1,heavy")
    with pytest.raises(ValueError, match="class_weights"):
        TrainConfig(num_classes=2, class_weights="0,0")
    with pytest.raises(ValueError, match=r"Expected one name per class: 5 names.*Received: 2"):
        TrainConfig(num_classes=5, class_names=("a", "b"))
    with pytest.raises(ValueError, match="distinct"):
        TrainConfig(num_classes=2, class_names=("a", "a"))
    with pytest.raises(ValueError, match="top_k_percent_pixels=0"):
        TrainConfig(top_k_percent_pixels=0.0)
    with pytest.raises(ValueError, match="export_from='best', keep_best='none'"):
        TrainConfig(export_from="best")
    with pytest.raises(ValueError, match="epochs_per_eval=0"):
        TrainConfig(export_from="best", keep_best="miou", epochs_per_eval=0)
    with pytest.raises(ValueError, match="must be resolved"):
        components.objective_arguments(TrainConfig(class_weights="auto"))


def test_names_come_from_the_records_folder_then_the_defaults(tmp_path):
    data_dir = _records(tmp_path / "named")
    config = resolve_classes(TrainConfig(num_classes=5, data_dir=data_dir))
    assert config.class_names == _NAMES
    plain = _records(tmp_path / "plain", names=None)
    assert resolve_classes(TrainConfig(data_dir=plain)).class_names == (constants.VOC_CLASS_NAMES)
    assert resolve_classes(TrainConfig(num_classes=3, data_dir=plain)).class_names == (
        "class_0",
        "class_1",
        "class_2",
    )


def test_a_names_file_of_another_count_is_an_error_naming_both_counts(tmp_path):
    data_dir = _records(tmp_path)
    with pytest.raises(ValueError, match="has 5 names, but there are 4 classes"):
        resolve_classes(TrainConfig(num_classes=4, data_dir=data_dir))
    names_file = tmp_path / "three.txt"
    names_file.write_text("a\nb\nc\n")
    with pytest.raises(ValueError, match="has 3 names, but there are 5 classes"):
        resolve_classes(TrainConfig(num_classes=5, data_dir=data_dir, class_names=str(names_file)))


def test_auto_weights_are_the_median_frequency_weights_of_the_training_records(tmp_path):
    data_dir = _records(tmp_path)
    config = resolve_classes(TrainConfig(num_classes=5, data_dir=data_dir, class_weights="auto"))
    counts = statistics.class_pixel_counts(data_dir, "train", num_classes=5)
    expected = statistics.median_frequency_weights(counts)
    assert config.class_weights == tuple(expected)
    assert config.class_weights[4] == 0.0  # Sand has no pixel.
    assert len(set(config.class_weights[:4])) > 1
    # Resolving again (a resume) gives the same weights.
    again = resolve_classes(TrainConfig(num_classes=5, data_dir=data_dir, class_weights="auto"))
    assert again.class_weights == config.class_weights
    kept = resolve_classes(TrainConfig(num_classes=5, data_dir=data_dir, class_weights="1,1,1,1,2"))
    assert kept.class_weights == (1.0, 1.0, 1.0, 1.0, 2.0)


def test_model_json_holds_names_unless_they_are_the_defaults():
    named = TrainConfig(num_classes=5, class_names=_NAMES)
    assert components.model_metadata(named, 7) == {"step": 7, "class_names": list(_NAMES)}
    default = TrainConfig(class_names=constants.VOC_CLASS_NAMES)
    assert components.model_metadata(default, 7) == {"step": 7}
    assert components.model_metadata(TrainConfig(), 7) == {"step": 7}
    with pytest.raises(ValueError, match="must be resolved"):
        components.model_metadata(TrainConfig(class_names="names.txt"), 7)
    json.dumps(components.model_metadata(named, np.int64(3)))  # JSON-able whatever the step.


def test_iou_scalars_are_tagged_with_the_class_names():
    cm = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])
    scalars = summaries.per_class_iou_scalars(cm, ("sky", "sea", "sand"))
    assert scalars == {"iou/sky": 0.75, "iou/sea": pytest.approx(2 / 3)}
    assert set(summaries.per_class_iou_scalars(cm)) == {"iou/class_0", "iou/class_1"}
