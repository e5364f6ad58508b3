"""``synth convert``: a format 1 or 2 store rewritten as format 3, sample for sample.

Format 3 keeps a sample's prompt and query in one chunk (``images``) and its shard records in
a Zarr array; samples, metadata and records carry over unchanged, so ``StoreReader`` returns the
same arrays from the new store as from the old one, in about half the bytes (``zstd``). What
format 2 never recorded (the sources' index-time rejects) stays unknown. A conversion that
stops is resumed by running it again: shards whose record exists are not rewritten.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from synth import store as zstore
from synth.errors import SynthError
from synth.manifest import config_fingerprint

#: Attributes a conversion recomputes (layout) or sets only once every shard is converted.
_RECOMPUTED = ("format_version", "layout", "complete", "counts", "skipped_inputs")


@dataclass
class ConvertSummary:
    """What a conversion did; printed by ``synth convert``."""

    source: str
    destination: str
    codec: str
    n_shards: int
    converted: int
    present: int
    missing_in_source: int
    seconds: float
    bytes_before: int
    bytes_after: int

    def render(self) -> str:
        lines = [
            f"converted    {self.source} -> {self.destination} (format {zstore.FORMAT_VERSION}, "
            f"{self.codec})",
            f"shards       {self.converted} converted now, {self.present} already present, "
            f"of {self.n_shards}",
            f"size         {self.bytes_before / 1e6:.1f} MB -> {self.bytes_after / 1e6:.1f} MB "
            f"({self.bytes_before / max(self.bytes_after, 1):.2f}x fewer bytes)",
            f"wall time    {self.seconds:.1f} s",
        ]
        if self.missing_in_source:
            lines.append(
                f"incomplete   {self.missing_in_source} shard(s) missing in the source; finish "
                "it with the synth that started it, then convert again"
            )
        return "\n".join(lines)


def converted_attrs(attrs: Mapping[str, Any], codec: zstore.Codec) -> dict[str, Any]:
    """The format 3 attributes of a converted store (before ``create_store`` adds its layout).

    The resolved config gets the new codec and its hash follows, as if the manifest had named
    that codec; ``converted_from`` keeps the old format, codec and hash.
    """
    out = {k: v for k, v in attrs.items() if k not in _RECOMPUTED}
    old = zstore.layout_of(attrs).codec
    out["converted_from"] = {
        "format_version": attrs["format_version"],
        "codec": old.to_dict(),
        "manifest_hash": attrs.get("manifest_hash"),
    }
    if "config" in out:
        out["config"] = {**out["config"], "codec": codec.to_dict()}
        out["manifest_hash"] = config_fingerprint(out["config"])
    return out


def convert_store(
    source: str,
    destination: str,
    *,
    codec: zstore.Codec | None = None,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> ConvertSummary:
    """Write every complete shard of the format 1/2 store ``source`` into a format 3 store.

    Args:
        codec: the new store's codec (default: format 3's default).
        overwrite: replace ``destination`` if it holds anything but this conversion.

    Raises:
        SynthError: ``source`` is not a format 1/2 store, or ``destination`` is taken.
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    reader = zstore.StoreReader(source, storage_options=storage_options)
    if reader.format_version >= zstore.FORMAT_VERSION:
        raise SynthError(f"{source}: already format {reader.format_version}; nothing to convert")
    if source.rstrip("/") == destination.rstrip("/"):
        raise SynthError(f"{destination}: is the source; write the conversion elsewhere")
    layout = dataclasses.replace(reader.layout, codec=codec or zstore.Codec())
    attrs = converted_attrs(reader.attrs, layout.codec)
    records = reader.completed_shards()
    done = _prepare(destination, layout, attrs, overwrite, storage_options)
    todo = [s for s in sorted(records) if s not in done]
    fields = (*zstore.PIXEL_FIELDS, *zstore.META_FIELDS)
    for shard in tqdm(todo, desc="convert", unit="shard", disable=not progress):
        start, stop = layout.shard_range(shard)
        data = reader.read_range(start, stop, fields)
        images = zstore.empty_images(stop - start, layout.height, layout.width)
        images[:, 0], images[:, 1] = data["prompt"], data["query"]
        arrays = {"images": images, **{f: data[f] for f in fields if f in zstore.META_FIELDS}}
        arrays["mask"] = data["mask"]
        zstore.write_shard(
            destination, shard, arrays, records[shard], storage_options=storage_options
        )
    if len(records) == layout.n_shards:
        final = {k: reader.attrs[k] for k in _RECOMPUTED[2:] if k in reader.attrs}
        zstore.update_attrs(destination, final, storage_options=storage_options)
    return ConvertSummary(
        source=source,
        destination=destination,
        codec=str(layout.codec),
        n_shards=layout.n_shards,
        converted=len(todo),
        present=len(done),
        missing_in_source=layout.n_shards - len(records),
        seconds=time.perf_counter() - t0,
        bytes_before=zstore.store_bytes(source, storage_options=storage_options),
        bytes_after=zstore.store_bytes(destination, storage_options=storage_options),
    )


def _prepare(
    url: str,
    layout: zstore.Layout,
    attrs: Mapping[str, Any],
    overwrite: bool,
    storage_options: Mapping[str, Any] | None,
) -> dict[int, dict[str, Any]]:
    """Create the destination, or return the shards an earlier run of this conversion wrote."""
    fs, root = zstore.filesystem(url, storage_options)
    if fs.exists(f"{root.rstrip('/')}/zarr.json") and not overwrite:
        there = zstore.read_attrs(url, storage_options=storage_options)
        same = (
            there.get("converted_from") == attrs["converted_from"]
            and zstore.layout_of(there) == layout
        )
        if not same:
            raise SynthError(
                f"{url}: holds another store; pass --overwrite to replace it or pick another path"
            )
        return zstore.shard_records(url, storage_options=storage_options)
    if fs.exists(root) and not overwrite and fs.ls(root):
        raise SynthError(f"{url}: exists; pass --overwrite to replace it or pick another path")
    zstore.create_store(url, layout, attrs, storage_options=storage_options)
    return {}
