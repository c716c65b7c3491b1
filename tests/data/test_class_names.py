import os
import subprocess
import sys

import pytest
from helpers import REPO

from tf_pacseg import constants
from tf_pacseg.data import class_names


def _write(tmp_path, text, name="names.txt"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_voc_has_its_21_names_in_class_order():
    assert len(constants.VOC_CLASS_NAMES) == constants.NUM_CLASSES
    assert constants.VOC_CLASS_NAMES[0] == "background"
    assert constants.VOC_CLASS_NAMES[15] == "person"
    assert constants.VOC_CLASS_NAMES[-1] == "tvmonitor"


def test_default_names_are_voc_for_21_classes_else_numbered():
    assert class_names.load_class_names(None, 21) == constants.VOC_CLASS_NAMES
    assert class_names.load_class_names(None, 3) == ("class_0", "class_1", "class_2")
    assert class_names.load_class_names("voc", 21) == constants.VOC_CLASS_NAMES


def test_voc_names_for_another_class_count_give_both_counts():
    with pytest.raises(ValueError, match=r"VOC's name list has 21 names, but there are 5 classes"):
        class_names.load_class_names("voc", 5)


def test_names_file_skips_blank_lines_and_strips_spaces(tmp_path):
    path = _write(tmp_path, "\n  road \nsky\t\n\ncar\n\n")
    assert class_names.load_class_names(path, 3) == ("road", "sky", "car")


def test_names_file_with_another_count_gives_file_and_both_counts(tmp_path):
    path = _write(tmp_path, "road\nsky\ncar\n")
    with pytest.raises(ValueError, match=r"names\.txt' has 3 names, but there are 4 classes"):
        class_names.load_class_names(path, 4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("road\nsky\nroad\n", r"names\.txt' names 'road' twice \(classes 0 and 2\)"),
        ("\n  \n", r"names\.txt' holds no name"),
        (b"\xff\xfe\x00bad", r"Cannot read the class names file .*names\.txt"),
    ],
)
def test_bad_names_files_are_named(tmp_path, text, message):
    path = tmp_path / "names.txt"
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    with pytest.raises(ValueError, match=message):
        class_names.load_class_names(str(path), 3)


def test_missing_names_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"Cannot read the class names file .*absent\.txt"):
        class_names.load_class_names(str(tmp_path / "absent.txt"), 3)


def test_bad_class_count_is_rejected():
    with pytest.raises(ValueError, match="num_classes=0"):
        class_names.load_class_names(None, 0)


def test_written_names_are_found_beside_the_records_and_read_back(tmp_path):
    assert class_names.find_class_names_file(str(tmp_path)) is None
    path = class_names.write_class_names(str(tmp_path), ("road", "sky"))
    assert path == os.path.join(tmp_path, class_names.CLASS_NAMES_FILE)
    assert class_names.find_class_names_file(str(tmp_path)) == path
    assert open(path, encoding="utf-8").read() == "road\nsky\n"
    assert os.listdir(tmp_path) == [class_names.CLASS_NAMES_FILE]  # No temporary file left.


def test_resolve_takes_the_names_beside_the_records_and_their_count(tmp_path):
    assert class_names.resolve_class_names(data_dir=str(tmp_path)) == constants.VOC_CLASS_NAMES
    class_names.write_class_names(str(tmp_path), ("road", "sky", "car"))
    assert class_names.resolve_class_names(data_dir=str(tmp_path)) == ("road", "sky", "car")
    # An explicit spec wins over the file beside the records.
    assert class_names.resolve_class_names("voc", data_dir=str(tmp_path))[1] == "aeroplane"
    with pytest.raises(ValueError, match="has 3 names, but there are 4 classes"):
        class_names.resolve_class_names(num_classes=4, data_dir=str(tmp_path))


def test_importing_the_module_loads_neither_tensorflow_nor_numpy():
    script = (
        "import sys; import tf_pacseg.data.class_names; "
        "print(sorted(m for m in ('tensorflow', 'keras', 'numpy') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
