"""``synth info`` and ``synth verify``: what a store holds and whether it is sound."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synth import problems
from synth import store as zstore

_AREA_BINS = (0.0, 0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 0.7, 1.0)


def store_info(url: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Counts by edit kind, mask-area histogram, sizes, provenance and problems of a store."""
    reader = zstore.StoreReader(url, storage_options=storage_options)
    attrs, layout = reader.attrs, reader.layout
    records = reader.completed_shards()
    meta = reader.meta()
    present = np.zeros(layout.n, bool)
    for r in records.values():
        present[r["start"] : r["stop"]] = True
    kinds = Counter(reader.kinds[k] for k in meta["kind"][present])
    frac = meta["mask_area"][present] / float(layout.height * layout.width)
    hist, _ = np.histogram(frac, bins=_AREA_BINS)
    fs, root = zstore.filesystem(url, storage_options)
    sizes = {}
    for name in zstore.pixel_arrays(reader.format_version):
        try:
            sizes[name] = int(fs.du(f"{root.rstrip('/')}/{name}"))
        except FileNotFoundError:
            sizes[name] = 0
    raw = layout.n * layout.height * layout.width * 7
    ordered = [records[s] for s in sorted(records)]
    return {
        "url": url,
        "format_version": reader.format_version,
        "layout": layout.to_dict(),
        "shards_complete": len(records),
        "n_shards": layout.n_shards,
        "samples_present": int(present.sum()),
        "kinds": dict(sorted(kinds.items())),
        "mask_area_hist": {
            f"{lo:.3g}-{hi:.3g}": int(c)
            for lo, hi, c in zip(_AREA_BINS[:-1], _AREA_BINS[1:], hist, strict=True)
        },
        "empty_masks": int((meta["mask_area"][present] == 0).sum()),
        "bytes": sizes,
        "compression_ratio": round(raw / max(1, sum(sizes.values())), 2),
        "codec": f"{layout.codec.name}-{layout.codec.level}",
        "manifest_name": attrs.get("config", {}).get("name"),
        "manifest_hash": attrs.get("manifest_hash"),
        "seed": attrs.get("config", {}).get("seed"),
        "versions": attrs.get("versions", {}),
        "fingerprints": attrs.get("fingerprints", {}),
        "generator_code": attrs.get("generator", {}).get("code"),
        "indexes": attrs.get("indexes", {}),
        "skipped_uses": problems.skipped_uses(ordered),
        "skipped": [
            {"input": k, "uses": c, "reason": r} for k, c, r in problems.skipped_inputs(ordered)
        ],
        "source_problems": zstore.read_source_problems(url, storage_options=storage_options),
        "retries": sum(r["retries"] for r in records.values()),
        "reader_backend": reader.backend,
    }


def render_info(info: Mapping[str, Any], *, every_problem: bool = False) -> str:
    """The report ``synth info`` prints; ``every_problem`` lists every rejected or skipped input."""
    lay = info["layout"]
    lines = [
        f"store      {info['url']}  (format {info['format_version']}, "
        f"read via {info['reader_backend']})",
        f"manifest   {info['manifest_name']}  hash {info['manifest_hash']}  seed {info['seed']}",
        f"samples    {info['samples_present']} / {lay['n']} at {lay['height']}x{lay['width']}, "
        f"shards {info['shards_complete']} / {info['n_shards']} of {lay['shard_size']}",
        "kinds      " + ", ".join(f"{k}={v}" for k, v in info["kinds"].items()),
        "sizes      "
        + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in info["bytes"].items())
        + f"  (lossless {info['codec']}, ratio {info['compression_ratio']}x)",
        "mask area (fraction of image):",
    ]
    total = max(1, sum(info["mask_area_hist"].values()))
    for b, c in info["mask_area_hist"].items():
        lines.append(f"  {b:>11}  {c:6d}  " + "#" * round(40 * c / total))
    lines.append(f"  empty masks: {info['empty_masks']}")
    lines.append("versions   " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    lines.append("sources    " + ", ".join(f"{k}:{v}" for k, v in info["fingerprints"].items()))
    for name, rec in info.get("indexes", {}).items():
        lines.append(
            f"indexes    {name}: {len(rec['tars'])} per-tar index(es) in {rec['cache_dir']} "
            f"(summary {rec['summary'].rsplit('/', 1)[-1]})"
        )
    lines.append(f"generator  synth code {info['generator_code'] or 'not recorded'}")
    lines.append(f"retries    {info['retries']}")
    pointer = f"synth info {info['url']} --problems"
    limit = None if every_problem else problems.LISTED
    skipped = [(s["input"], s["uses"], s["reason"]) for s in info["skipped"]]
    lines += problems.render_skipped(skipped, info["skipped_uses"], pointer, limit)
    lines += problems.render_source_problems(info["source_problems"], pointer, limit)
    return "\n".join(lines)


@dataclass
class VerifyReport:
    """Problems found by ``verify_store``; empty ``problems`` means the store is sound."""

    shards_checked: int = 0
    samples_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_store(
    url: str,
    *,
    spot_checks: int = 4,
    seed: int = 0,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> VerifyReport:
    """Read every shard, check counts against the plan and spot-check the mask invariant.

    For ``spot_checks`` random samples per shard: the mask equals the set of pixels where
    prompt and query differ, and ``meta/mask_area`` equals the mask's sum.
    """
    from tqdm.auto import tqdm

    from synth.edits.base import changed_pixels

    reader = zstore.StoreReader(url, storage_options=storage_options)
    layout = reader.layout
    records = reader.completed_shards()
    rep = VerifyReport()
    missing = sorted(set(range(layout.n_shards)) - set(records))
    if missing:
        rep.problems.append(f"{len(missing)} shard(s) missing: {missing[:10]}; rerun synth build")
    rng = np.random.default_rng(seed)
    for s in tqdm(sorted(records), desc="verify", unit="shard", disable=not progress):
        start, stop = layout.shard_range(s)
        rec = records[s]
        try:
            data = reader.read_range(start, stop, ("prompt", "query", "mask", "kind", "mask_area"))
        except Exception as e:  # a corrupt shard must be reported, not crash the check
            rep.problems.append(f"shard {s}: unreadable ({e.__class__.__name__}: {e})")
            continue
        rep.shards_checked += 1
        counts = Counter(reader.kinds[k] if k >= 0 else "<unset>" for k in data["kind"])
        if dict(counts) != rec["kinds"]:
            rep.problems.append(f"shard {s}: kinds {dict(counts)} != record {rec['kinds']}")
        if (rec["start"], rec["stop"]) != (start, stop):
            rep.problems.append(f"shard {s}: record range {rec['start']}:{rec['stop']} != plan")
        areas = data["mask"].reshape(stop - start, -1).sum(1, dtype=np.int64)
        bad = np.flatnonzero(areas != data["mask_area"])
        if bad.size:
            rep.problems.append(
                f"shard {s}: mask_area wrong for samples {(bad + start)[:5].tolist()}"
            )
        picks = rng.choice(stop - start, size=min(spot_checks, stop - start), replace=False)
        for j in picks:
            rep.samples_checked += 1
            diff = changed_pixels(data["prompt"][j], data["query"][j])
            if not np.array_equal(diff, data["mask"][j].astype(bool)):
                n_bad = int((diff != data["mask"][j].astype(bool)).sum())
                rep.problems.append(
                    f"sample {start + j}: mask differs from prompt/query change at {n_bad} px"
                )
    return rep
