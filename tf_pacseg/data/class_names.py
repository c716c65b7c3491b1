"""What a dataset's classes are called: VOC's names, a names file, or `class_0`, `class_1`, ...

A names file holds one name per line, in class order (line 1 names class 0);
blank lines are skipped and each name is stripped of surrounding spaces. The
converter copies the file given to `--class_names` beside the shards as
`class_names.txt` (`CLASS_NAMES_FILE`), where later steps find it with
`find_class_names_file`. Imports neither TensorFlow nor NumPy.

Example:

```python
names = load_class_names("classes.txt", num_classes=5)  # ("road", "car", ...)
names = load_class_names(None, num_classes=21)  # VOC's names
```
"""

import os

from tf_pacseg import checks, constants, files

# The names file the converter writes beside the shards.
CLASS_NAMES_FILE = "class_names.txt"
# `--class_names=voc`: VOC's 21 names.
VOC = "voc"


def default_class_names(num_classes):
    """VOC's names for 21 classes, else `class_0`, `class_1`, ..."""
    checks.positive_int("num_classes", num_classes)
    if num_classes == len(constants.VOC_CLASS_NAMES):
        return constants.VOC_CLASS_NAMES
    return tuple(f"class_{i}" for i in range(num_classes))


def read_class_names(path):
    """The names in a names file, in class order.

    Raises:
        ValueError: naming the file, if it cannot be read, holds no name, or
            holds a name twice.
    """
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"Cannot read the class names file {path!r}: {error}") from error
    names = tuple(name for name in (line.strip() for line in lines) if name)
    if not names:
        raise ValueError(
            f"The class names file {path!r} holds no name: expected one name per line."
        )
    first_line = {}
    for number, name in enumerate(names):
        if name in first_line:
            raise ValueError(
                f"The class names file {path!r} names {name!r} twice (classes "
                f"{first_line[name]} and {number}): every class needs its own name."
            )
        first_line[name] = number
    return names


def load_class_names(spec, num_classes):
    """The `num_classes` class names that `spec` asks for.

    Args:
        spec: str or None. `None` for the default (`default_class_names`),
            `"voc"` for VOC's 21 names, else the path of a names file (write
            `./voc` for a file named `voc`).
        num_classes: int. How many names there must be.

    Returns:
        A tuple of `num_classes` distinct names.

    Raises:
        ValueError: a file that `read_class_names` rejects, or a count of
            names other than `num_classes`.
    """
    checks.positive_int("num_classes", num_classes)
    if spec is None:
        return default_class_names(num_classes)
    if spec == VOC:
        names, source = constants.VOC_CLASS_NAMES, "VOC's name list"
    else:
        names, source = read_class_names(spec), f"The class names file {spec!r}"
    if len(names) != num_classes:
        raise ValueError(
            f"{source} has {len(names)} names, but there are {num_classes} classes "
            "(`num_classes`): pass one name per class."
        )
    return names


def resolve_class_names(spec=None, num_classes=None, data_dir=None):
    """The class names of a dataset, with the class count taken from them if not given.

    Args:
        spec: str or None. As in `load_class_names`; `None` uses the
            `class_names.txt` in `data_dir` if there is one, else the
            default names. Defaults to `None`.
        num_classes: int or None. `None`: as many as the names found (21
            for VOC's and for the default). Defaults to `None`.
        data_dir: str or None. The records folder. Defaults to `None`.

    Returns:
        A tuple of names, one per class.

    Raises:
        ValueError: as `load_class_names`.
    """
    if spec is None and data_dir is not None:
        spec = find_class_names_file(data_dir)
    if num_classes is None:
        if spec is None or spec == VOC:
            num_classes = constants.NUM_CLASSES
        else:
            num_classes = len(read_class_names(spec))
    return load_class_names(spec, num_classes)


def find_class_names_file(data_dir):
    """`<data_dir>/class_names.txt` if the converter wrote one there, else `None`."""
    path = os.path.join(data_dir, CLASS_NAMES_FILE)
    return path if os.path.isfile(path) else None


def write_class_names(data_dir, names):
    """Writes `names` to `<data_dir>/class_names.txt`, one a line, atomically; returns the path."""
    path = os.path.join(data_dir, CLASS_NAMES_FILE)
    with files.atomic_write(path, "w") as f:
        f.write("".join(f"{name}\n" for name in names))
    return path
