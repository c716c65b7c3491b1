"""The TFRecord file format, read in Python: where each record lies, and its checksums.

A TFRecord file is a run of records, each framed as: uint64 length, uint32
masked CRC-32C of the length, the data, uint32 masked CRC-32C of the data
(little-endian). `record_check` walks the framing here rather than leaving it
to `tf.data.TFRecordDataset`, because TensorFlow's reader stops at the first
corrupted record (nothing after it would be checked), gives no record
position, and reads a file cut inside a record header as if it ended cleanly
(the cut record vanishes without an error). The walk reads only the 12-byte
header of each record, so it is cheap.
"""

import os
import struct
import typing

# How the framing breaks (`FramingError.problem`).
TRUNCATED = "truncated"
CORRUPTED = "corrupted"

_HEADER_BYTES = 12
_FOOTER_BYTES = 4


class Frame(typing.NamedTuple):
    """Where a record's data lies: its header's byte offset and the data's length."""

    offset: int
    length: int


class FramingError(typing.NamedTuple):
    """Where the framing breaks: no record at or after `position` can be located."""

    position: int
    offset: int
    problem: str
    detail: str


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def masked_crc32c(data):
    """The TFRecord checksum of `data`: CRC-32C, rotated and offset ("masked").

    Pure Python, a few MB/s: fine for headers and for single records; whole
    files are better checked by TensorFlow's reader.
    """
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def read_frames(path):
    """The `Frame` of each record of a TFRecord file, and where the framing breaks.

    After a corrupted length nothing further can be located, so the walk
    stops there.

    Args:
        path: str. The file.

    Returns:
        (list of `Frame`, in file order; `FramingError` or None).
    """
    frames, size = [], os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            position = len(frames)
            header = f.read(_HEADER_BYTES)
            if len(header) < _HEADER_BYTES:
                detail = f"the file ends {size - offset} bytes into the record's 12-byte header"
                return frames, FramingError(position, offset, TRUNCATED, detail)
            length, length_crc = struct.unpack("<QI", header)
            if masked_crc32c(header[:8]) != length_crc:
                detail = (
                    "the CRC of its length header does not match, so this record and the "
                    f"{size - offset} bytes from it on cannot be split into records"
                )
                return frames, FramingError(position, offset, CORRUPTED, detail)
            end = offset + _HEADER_BYTES + length + _FOOTER_BYTES
            if end > size:
                detail = f"it needs {end - offset} bytes but the file ends after {size - offset}"
                return frames, FramingError(position, offset, TRUNCATED, detail)
            frames.append(Frame(offset, length))
            offset = end
            f.seek(offset)
    return frames, None


def read_record(f, frame):
    """(data, crc_ok) of the record at `frame` of the open binary file `f`."""
    f.seek(frame.offset + _HEADER_BYTES)
    data = f.read(frame.length)
    (data_crc,) = struct.unpack("<I", f.read(_FOOTER_BYTES))
    return data, masked_crc32c(data) == data_crc
