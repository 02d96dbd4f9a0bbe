"""The raw frame archive: every received minor frame, as it arrived, in append-only files.

The ingest appends each accepted message's frames here (rejected messages go to the
quarantine, never here). Recorded passes are catalogued, replayed and exported from these
files, so the format is built for three things besides appending: reading back after a
crash, seeking to a time without scanning a long recording, and summarising a recording
(passes, gaps, frame counts) from a small index.

- ``format``: the on-disk layout, names, file headers, record and index encoding
- ``reader``: ``ArchiveReader`` (streams, files, blocks, records, frames in time order)
- ``writer``: ``ArchiveWriter`` (append, index, rotate, fsync, recover after a crash)
- ``quarantine``: ``QuarantineWriter`` and ``QuarantineReader`` for rejected messages

The specification: ``docs/archive-format.md``.
"""

from groundstation.storage.archive.format import (
    DATA_SUFFIX,
    HOUR_NS,
    INDEX_SUFFIX,
    LIVE,
    QUARANTINE_SUFFIX,
    ArchiveError,
    ArchiveFile,
    ArchiveProblem,
    Block,
    FileHeader,
    FrameChunk,
    ReaderStats,
    Record,
    StreamKey,
    hash_definition,
    stream_dir,
)
from groundstation.storage.archive.quarantine import (
    QuarantinedMessage,
    QuarantineReader,
    QuarantineWriter,
)
from groundstation.storage.archive.reader import ArchiveReader
from groundstation.storage.archive.writer import ArchiveWriter

__all__ = [
    "DATA_SUFFIX",
    "HOUR_NS",
    "INDEX_SUFFIX",
    "LIVE",
    "QUARANTINE_SUFFIX",
    "ArchiveError",
    "ArchiveFile",
    "ArchiveProblem",
    "ArchiveReader",
    "ArchiveWriter",
    "Block",
    "FileHeader",
    "FrameChunk",
    "QuarantineReader",
    "QuarantineWriter",
    "QuarantinedMessage",
    "ReaderStats",
    "Record",
    "StreamKey",
    "hash_definition",
    "stream_dir",
]
