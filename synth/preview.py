"""Look at triples before spending GPU hours: PNG grids and a small static HTML gallery.

Triples come either from a built store or are made on the fly from a manifest (or the built-in
defaults), through the same ``realize`` the builder uses, so what you see is what you get.
"""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

LABEL_H = 22
GAP = 4


@dataclass
class PreviewItem:
    """One triple to show, with a label and details for the gallery."""

    index: int
    kind: str
    prompt: np.ndarray
    query: np.ndarray
    mask: np.ndarray
    details: dict[str, Any] = field(default_factory=dict)


def overlay(image: np.ndarray, mask: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """``image`` with ``mask`` tinted red and outlined in yellow (RGB uint8 in and out)."""
    out = image.astype(np.float32)
    m = mask.astype(bool)
    out[m] = (1 - alpha) * out[m] + alpha * np.array([255, 0, 0], np.float32)
    out = out.astype(np.uint8)
    contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, (255, 230, 0), 1)
    return out


def _label(width: int, text: str) -> np.ndarray:
    bar = np.full((LABEL_H, width, 3), 32, np.uint8)
    scale = 0.45
    cv2.putText(
        bar,
        text,
        (4, LABEL_H - 7),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        1,
        cv2.LINE_AA,
    )
    return bar


def render_row(item: PreviewItem) -> np.ndarray:
    """prompt | query | mask overlay, with a label bar naming the index, kind and mask area."""
    h, w = item.mask.shape
    sep = np.full((h, GAP, 3), 255, np.uint8)
    cells = [item.prompt, sep, item.query, sep, overlay(item.query, item.mask)]
    body = np.concatenate(cells, axis=1)
    area = 100.0 * float(item.mask.mean())
    text = f"#{item.index} {item.kind}  mask {area:.1f}%   prompt | query | mask"
    return np.concatenate([_label(body.shape[1], text), body], axis=0)


def render_grid(items: Sequence[PreviewItem], cols: int = 2) -> np.ndarray:
    """Rows of ``render_row`` laid out ``cols`` per line on a white background."""
    if not items:
        raise ValueError("nothing to preview")
    rows = [render_row(it) for it in items]
    rh = max(r.shape[0] for r in rows)
    rw = max(r.shape[1] for r in rows)
    n_lines = -(-len(rows) // cols)
    canvas = np.full((n_lines * (rh + GAP), cols * (rw + GAP), 3), 255, np.uint8)
    for i, r in enumerate(rows):
        y, x = (i // cols) * (rh + GAP), (i % cols) * (rw + GAP)
        canvas[y : y + r.shape[0], x : x + r.shape[1]] = r
    return canvas


def save_png(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"{path}: could not write PNG")


def write_gallery(
    items: Sequence[PreviewItem], out_dir: str | Path, title: str = "synth preview"
) -> Path:
    """A static ``index.html`` with one row per triple (images + details) under ``out_dir``."""
    out = Path(out_dir)
    (out / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for it in items:
        names = {}
        for role, img in (
            ("prompt", it.prompt),
            ("query", it.query),
            ("overlay", overlay(it.query, it.mask)),
        ):
            names[role] = f"img/{it.index:07d}-{role}.png"
            save_png(out / names[role], img)
        details = html.escape(json.dumps(it.details, sort_keys=True, default=str))
        rows.append(
            f"<tr><td>#{it.index}<br><b>{html.escape(it.kind)}</b><br>"
            f"mask {100 * it.mask.mean():.1f}%</td>"
            + "".join(f'<td><img src="{names[r]}" loading="lazy"></td>' for r in names)
            + f"<td><code>{details}</code></td></tr>"
        )
    page = (
        "<!doctype html><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font-family:sans-serif}td{vertical-align:top;padding:4px}"
        "img{max-width:256px}code{font-size:11px;word-break:break-all}</style>"
        f"<h1>{html.escape(title)}</h1><table><tr><th></th><th>prompt</th><th>query</th>"
        "<th>mask overlay</th><th>details</th></tr>" + "".join(rows) + "</table>"
    )
    index = out / "index.html"
    index.write_text(page)
    return index


def items_from_store(
    url: str, indices: Iterable[int], storage_options: dict[str, Any] | None = None
) -> list[PreviewItem]:
    """Read triples ``indices`` from a built store."""
    from synth.store import StoreReader

    reader = StoreReader(url, storage_options=storage_options)
    idx = [int(i) for i in indices]
    fields = ("prompt", "query", "mask", "kind", "seed", "attempt", "base_index", "mask_area")
    data = reader.read_indices(idx, fields)
    kinds = reader.kinds
    out = []
    for j, i in enumerate(idx):
        k = int(data["kind"][j])
        out.append(
            PreviewItem(
                index=i,
                kind=kinds[k] if 0 <= k < len(kinds) else f"kind{k}",
                prompt=data["prompt"][j],
                query=data["query"][j],
                mask=data["mask"][j],
                details={
                    f: data[f][j].item() for f in ("seed", "attempt", "base_index", "mask_area")
                },
            )
        )
    return out


def items_on_the_fly(manifest: Any, indices: Iterable[int]) -> list[PreviewItem]:
    """Make triples ``indices`` of ``manifest`` in this process (no store, no Dask)."""
    from synth.sample import Catalog, realize

    catalog = Catalog.open(manifest)
    out = []
    for i in indices:
        spec, triple, skipped, _ = realize(manifest, catalog, int(i))
        details = {"spec": spec.to_dict(), "info": triple.info}
        if skipped:
            details["skipped"] = [s.to_dict() for s in skipped]
        out.append(
            PreviewItem(int(i), spec.kind, triple.prompt, triple.query, triple.mask, details)
        )
    return out


def pick_by_kind(kinds: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` indices taken round-robin over edit kinds, so every kind present is shown."""
    groups = [np.flatnonzero(kinds == k).tolist() for k in np.unique(kinds)]
    out: list[int] = []
    while len(out) < n and any(groups):
        for g in groups:
            if g and len(out) < n:
                out.append(g.pop(0))
    return sorted(out)


def pick_indices(n_total: int, n: int, seed: int | None) -> list[int]:
    """The first ``n`` indices, or ``n`` random ones when a seed is given."""
    n = min(n, n_total)
    if seed is None:
        return list(range(n))
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(n_total, size=n, replace=False).tolist())
