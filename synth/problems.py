"""Inputs a build could not use, counted and listed alike by the build summary and ``synth info``.

Two kinds, both recorded in the store so that nothing is dropped silently:

- *source problems*: images and annotations a source rejected while it was indexed (a COCO
  polygon with an odd coordinate count, an RLE of the wrong size...). They never reach a
  triple; the store holds the whole list once (``build/source_problems``).
- *skipped inputs*: items that failed when a triple drew them (a corrupt or missing image).
  Each shard record lists them grouped by input with every use (sample, attempt), so a bad
  image drawn by five triples counts five times but is read once per shard.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

#: How many entries a summary lists before pointing at the full list.
LISTED = 5


def source_problems(sources: Iterable[tuple[str, Any]]) -> list[dict[str, str]]:
    """Every index-time rejection of ``sources`` ((name, source) pairs), in source order.

    A source reports them as ``problems``: (where, reason) pairs; sources without the attribute
    reject nothing while indexing.
    """
    return [
        {"source": name, "where": where, "reason": reason}
        for name, src in sources
        for where, reason in getattr(src, "problems", ())
    ]


def problem_counts(problems: Iterable[Mapping[str, str]]) -> dict[str, int]:
    """Source problems per source name."""
    return dict(sorted(Counter(p["source"] for p in problems).items()))


def skipped_inputs(records: Iterable[Mapping[str, Any]]) -> list[tuple[str, int, str]]:
    """(input, uses, first reason) of every input skipped in ``records``, sorted by input."""
    seen: dict[str, list[Any]] = {}
    for rec in records:
        for s in rec.get("skipped", []):
            entry = seen.setdefault(s["input"], [0, s["reason"]])
            entry[0] += len(s["uses"])
    return [(k, v[0], v[1]) for k, v in sorted(seen.items())]


def skipped_uses(records: Iterable[Mapping[str, Any]]) -> int:
    """Uses of skipped inputs in ``records``, those a full record could not list included."""
    return sum(
        sum(len(s["uses"]) for s in rec.get("skipped", [])) + rec.get("omitted", {}).get("uses", 0)
        for rec in records
    )


def render_skipped(
    inputs: Sequence[tuple[str, int, str]], uses: int, pointer: str, limit: int | None = LISTED
) -> list[str]:
    """Summary lines: the count, the first ``limit`` inputs (None: all), where the rest are."""
    lines = [f"skipped      {uses} input uses, {len(inputs)} distinct (unreadable when drawn)"]
    lines += [f"  - {k} (x{c}): {r}" for k, c, r in inputs[:limit]]
    unlisted = uses - sum(c for _, c, _ in inputs)
    if unlisted:
        lines.append(f"  ({unlisted} uses of inputs a full shard record could not list)")
    return lines + _more(len(inputs), limit, pointer)


def render_source_problems(
    problems: Sequence[Mapping[str, str]] | None, pointer: str, limit: int | None = LISTED
) -> list[str]:
    """Summary lines: the count per source, the first ``limit`` problems (None: all), where the
    rest are."""
    if problems is None:
        return ["rejected     not recorded (format 2 stores and their conversions lack the list)"]
    counts = ", ".join(f"{k} {v}" for k, v in problem_counts(problems).items())
    lines = [
        f"rejected     {len(problems)} source item(s) while indexing"
        + (f" ({counts})" if problems else "")
    ]
    lines += [f"  - {p['source']}: {p['where']}: {p['reason']}" for p in problems[:limit]]
    return lines + _more(len(problems), limit, pointer)


def _more(total: int, limit: int | None, pointer: str) -> list[str]:
    return [] if limit is None or total <= limit else [f"  ... {total - limit} more: {pointer}"]
