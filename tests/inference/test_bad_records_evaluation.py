"""Evaluation on damaged records: a `BadRecordError` naming the record, or --skip_bad_records."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from damaged_records import FAULTS, FILE_DAMAGE, damage, rewrite
from helpers import REPO, TINY_ARCHITECTURE, make_records

from tf_pacseg import constants
from tf_pacseg.data import bad_records, records
from tf_pacseg.inference import evaluation
from tf_pacseg.model import segmenter
from tf_pacseg.weights import saving

CROP = (65, 65)
BAD_POSITION = 1
# The val records of the first shard that each fault at BAD_POSITION leaves readable.
KEPT = {fault: [0] if fault in FILE_DAMAGE else [0, 2] for fault in FAULTS}


@pytest.fixture(scope="module")
def model():
    model = segmenter.build_model(**TINY_ARCHITECTURE)
    model(np.zeros((1, *CROP, 3), np.float32))
    return model


@pytest.fixture(scope="module")
def clean_records(tmp_path_factory):
    # 6 val images of 40..60 px in 2 shards of 3.
    return make_records(str(tmp_path_factory.mktemp("data")), num_train=2, num_val=6)


@pytest.fixture(scope="module")
def clean_confusions(model, clean_records):
    """Each clean val image's confusion matrix, by index in record order."""
    confusions = {}
    evaluation.evaluate(
        model,
        data_dir=clean_records,
        batch_size=1,
        crop_size=CROP,
        on_image=confusions.__setitem__,
        verbose=0,
    )
    return confusions


def _damaged_copy(clean_records, directory, fault):
    """A copy of the records with `fault` at BAD_POSITION of the first val shard; (dir, shard)."""
    data_dir = str(directory / "records")
    shutil.copytree(clean_records, data_dir)
    shard = records.find_record_files(data_dir, "val")[0]
    return data_dir, damage(shard, BAD_POSITION, fault)


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_bad_record_stops_the_evaluation_naming_it(model, clean_records, tmp_path, fault):
    data_dir, shard = _damaged_copy(clean_records, tmp_path, fault)
    with pytest.raises(bad_records.BadRecordError) as raised:
        evaluation.evaluate(model, data_dir=data_dir, crop_size=CROP, verbose=0)
    message = str(raised.value)
    assert message.startswith(f"Cannot read example {BAD_POSITION} of record file {shard} (byte ")
    assert f": {FAULTS[fault]}: " in message and "\n" not in message
    assert message.endswith("--skip_bad_records evaluates without the records that cannot be read.")


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_skipped_records_leave_the_others_confusion_matrix(
    model, clean_records, clean_confusions, tmp_path, fault
):
    data_dir, _ = _damaged_copy(clean_records, tmp_path, fault)
    result = evaluation.evaluate(
        model, data_dir=data_dir, batch_size=1, crop_size=CROP, skip_bad_records=True, verbose=0
    )
    kept = KEPT[fault] + [3, 4, 5]  # The second shard is whole.
    assert result["skipped_records"] == 6 - len(kept) - (fault == "truncated")
    assert result["num_images"] == len(kept)
    expected = sum(clean_confusions[index] for index in kept)
    np.testing.assert_array_equal(result["confusion_matrix"], expected)


def test_later_errors_name_the_record_at_its_position_in_the_file(model, clean_records, tmp_path):
    data_dir, shard = _damaged_copy(clean_records, tmp_path, "bad_image")

    def out_of_range_label(features):
        label = tf.io.decode_png(features[constants.LABEL_ENCODED].bytes_list.value[0]).numpy()
        label[0, 0] = 30
        features[constants.LABEL_ENCODED].bytes_list.value[0] = tf.io.encode_png(label).numpy()

    rewrite(shard, 2, out_of_range_label)
    # The third record of the shard, the second read.
    with pytest.raises(ValueError, match=f"example 2 of record file {shard} has label values"):
        evaluation.evaluate(
            model, data_dir=data_dir, crop_size=CROP, skip_bad_records=True, verbose=0
        )


def test_skipping_applies_to_records_only(model, clean_records):
    folders = dict(image_data_dir="a", label_data_dir="b", evaluation_data_list="c")
    with pytest.raises(ValueError, match="skip_bad_records"):
        evaluation.evaluate(model, **folders, skip_bad_records=True, verbose=0)


def _evaluate_script(model_dir, data_dir, *flags):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    command = [
        sys.executable,
        os.path.join(REPO, "evaluate.py"),
        f"--model_dir={model_dir}",
        f"--data_dir={data_dir}",
        f"--input_height={CROP[0]}",
        f"--input_width={CROP[1]}",
        *flags,
    ]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_evaluate_script_prints_one_line_or_skips_and_counts(model, clean_records, tmp_path):
    model_dir = str(tmp_path / "model")
    saving.save_model_weights(model, os.path.join(model_dir, "model.weights.h5"))
    data_dir, shard = _damaged_copy(clean_records, tmp_path, "truncated")

    process = _evaluate_script(model_dir, data_dir)
    assert process.returncode == 1, process.stderr[-5000:]
    assert "Traceback" not in process.stderr
    (line,) = [line for line in process.stderr.splitlines() if line.startswith("evaluate.py: ")]
    assert line.startswith(f"evaluate.py: Cannot read example 1 of record file {shard} (byte ")

    output_json = str(tmp_path / "val.json")
    process = _evaluate_script(
        model_dir, data_dir, "--skip_bad_records", f"--output_json={output_json}"
    )
    assert process.returncode == 0, process.stderr[-5000:]
    assert process.stderr.count(f"Skipping example 1 of record file {shard} (byte ") == 1
    assert "1 unreadable records skipped (logged above)." in process.stdout
    with open(output_json) as f:
        result = json.load(f)
    assert (result["skipped_records"], result["num_images"]) == (1, 4)
