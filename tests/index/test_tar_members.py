"""list_members: offsets that read back each member's bytes, and every way a tar breaks off."""

from __future__ import annotations

import io

from synth.index.tar_members import list_members
from tests.sa1b_fixture import write_tar

MEMBERS = [("a.json", b'{"x": 1}'), ("b.jpg", bytes(range(256)) * 5), ("dir/c.txt", b"c" * 700)]


def _listing(raw: bytes, read: bool = False):
    seen = {}
    f = io.BytesIO(raw)
    listing = list_members(
        f, len(raw), (lambda m, r: seen.update({m.name: r.read()})) if read else None
    )
    return listing, seen


def test_offsets_read_back_every_member_in_one_pass(tmp_path):
    raw = write_tar(tmp_path / "t.tar", MEMBERS).read_bytes()
    listing, seen = _listing(raw, read=True)
    assert listing.damage is None
    assert [m.name for m in listing.members] == [n for n, _ in MEMBERS]
    for m, (_, blob) in zip(listing.members, MEMBERS, strict=True):
        assert m.size == len(blob) and raw[m.offset : m.offset + m.size] == blob
    assert seen == dict(MEMBERS)


def test_cut_inside_a_member_keeps_the_complete_ones(tmp_path):
    raw = write_tar(tmp_path / "t.tar", MEMBERS).read_bytes()
    b = _listing(raw)[0].members[1]
    listing, _ = _listing(raw[: b.offset + 100])
    assert [m.name for m in listing.members] == ["a.json"]
    assert "cut short in member b.jpg" in listing.damage


def test_cut_between_members_is_damage_too(tmp_path):
    raw = write_tar(tmp_path / "t.tar", MEMBERS).read_bytes()
    c = _listing(raw)[0].members[2]
    listing, _ = _listing(raw[: c.offset - 512])  # ends right before c's header
    assert [m.name for m in listing.members] == ["a.json", "b.jpg"]
    assert "no end-of-archive marker" in listing.damage


def test_a_garbled_header_stops_the_listing_with_a_reason(tmp_path):
    raw = bytearray(write_tar(tmp_path / "t.tar", MEMBERS).read_bytes())
    c = _listing(bytes(raw))[0].members[2]
    raw[c.offset - 512 : c.offset - 512 + 100] = b"\x07" * 100  # c's header
    listing, _ = _listing(bytes(raw))
    assert [m.name for m in listing.members] == ["a.json", "b.jpg"]
    assert f"invalid header at byte {c.offset - 512}" in listing.damage


def test_not_a_tar_is_damage_not_an_exception():
    listing, _ = _listing(b"<html>not found</html>" + bytes(2000))
    assert listing.members == () and "not a tar archive" in listing.damage
    assert "not a tar archive" in _listing(b"")[0].damage
