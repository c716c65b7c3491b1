"""`iterate`, `unpin_mmap_threshold`: undo the malloc setting of tf.data's generator op.

The first tf.data generator op of a process (`Dataset.from_generator`, the
per-device iterators of `tf.distribute`) fixes glibc's mmap threshold at
128 KiB, once per process (a TensorFlow patch for Python 3.11's memory use).
Left to itself, glibc raises that threshold as large blocks are freed, up to
32 MiB, so that a training step's tensors reuse freed heap memory. Pinned,
every tensor over 128 KiB is a fresh `mmap` whose pages the kernel zero-fills
on first touch, then a `munmap`: 9% of a float32 ResNet-101 training step on
2 CPU cores, all of it page faults (docs/design.md §6).
"""

import ctypes
import sys

# mallopt's parameters and glibc's own ceilings for them on 64-bit machines
# (DEFAULT_MMAP_THRESHOLD_MAX; the trim threshold follows at twice it).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 64 << 20


def unpin_mmap_threshold():
    """Sets glibc's mmap and trim thresholds to the ceilings of its own adaptation.

    Call it after the process's first tf.data iterator over a generator op
    is created (TensorFlow sets the threshold then, and only then). Blocks up
    to 32 MiB then come from the heap, and up to 64 MiB of free memory at
    the heap's top stays with the process, as glibc's adaptive thresholds
    would have it after the first step.

    Returns:
        bool: whether the C library took the settings (False off glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    mallopt = getattr(ctypes.CDLL(None), "mallopt", None)
    if mallopt is None:
        return False
    took_mmap = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
    took_trim = mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    return took_mmap and took_trim


def iterate(dataset):
    """`iter(dataset)`, then `unpin_mmap_threshold()`: for datasets over a generator op.

    Args:
        dataset: a `tf.data.Dataset` or `tf.distribute` distributed dataset.

    Returns:
        Its iterator.
    """
    iterator = iter(dataset)
    unpin_mmap_threshold()
    return iterator
