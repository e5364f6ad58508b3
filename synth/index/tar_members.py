"""A tar's members located by byte offset, so their bytes can be read without extraction.

Python's ``tarfile`` parses the headers (ustar, GNU and pax names); what it does not do is say
that an archive stops early: a header cut short or garbled ends its iteration silently, and a
member whose data runs past the end of the file is still listed. A tar copied halfway is common at a
thousand 10 GB files, so the listing here keeps every complete member and says where the
archive broke off.
"""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

#: A tar ends with zero blocks; anything else where the walk stopped is a cut or a bad header.
_ZERO_BLOCK = bytes(tarfile.BLOCKSIZE)


@dataclass(frozen=True)
class Member:
    """A regular file inside a tar: its path in the archive and where its bytes are."""

    name: str
    offset: int
    size: int


@dataclass(frozen=True)
class TarListing:
    """The complete members of a tar, in archive order.

    Attributes:
        members: every regular file whose bytes are all present.
        damage: why the listing stopped before a proper end of archive (``None``: it did not).
    """

    members: tuple[Member, ...]
    damage: str | None = None


def list_members(
    f: BinaryIO, size: int, on_member: Callable[[Member, BinaryIO], None] | None = None
) -> TarListing:
    """List the regular files of the tar open as ``f`` (``size`` bytes long).

    Args:
        f: a seekable binary file positioned anywhere.
        size: the file's length, to tell a complete member from a cut one.
        on_member: called with each complete member and a reader of its bytes while the
            archive is walked, so a caller reads small members (JSON) in the same pass.

    Raises:
        OSError: the file cannot be read (an I/O problem, not damage: the caller may retry).
    """
    try:
        tf = tarfile.open(fileobj=f, mode="r:")  # noqa: SIM115 (closed below; f stays open)
    except tarfile.ReadError as exc:
        return TarListing((), f"not a tar archive ({exc})")
    try:
        return _walk(tf, f, size, on_member)
    finally:
        tf.close()


def _walk(
    tf: tarfile.TarFile,
    f: BinaryIO,
    size: int,
    on_member: Callable[[Member, BinaryIO], None] | None,
) -> TarListing:
    members: list[Member] = []
    damage = None
    try:
        for info in tf:
            if not info.isfile():
                continue
            end = info.offset_data + info.size
            if end > size:
                damage = (
                    f"cut short in member {info.name} (its data ends at byte {end}, the file "
                    f"has {size})"
                )
                break
            member = Member(info.name, info.offset_data, info.size)
            members.append(member)
            if on_member is not None:
                reader = tf.extractfile(info)
                if reader is not None:
                    on_member(member, reader)
    except tarfile.ReadError as exc:
        damage = f"unreadable after member {members[-1].name if members else '(none)'} ({exc})"
    if damage is None:
        f.seek(tf.offset)
        block = f.read(tarfile.BLOCKSIZE)
        if len(block) < tarfile.BLOCKSIZE:
            damage = f"cut short at byte {tf.offset} of {size} (no end-of-archive marker)"
        elif block != _ZERO_BLOCK:
            damage = f"invalid header at byte {tf.offset}; the members after it are not read"
    return TarListing(tuple(members), damage)
