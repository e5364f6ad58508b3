"""From an index to a triple: sample a spec (plain data), then make the triple from it.

``sample_spec(manifest, catalog, index, attempt)`` draws every choice (edit kind, source items,
edit seed) from ``derive(manifest.seed, index, attempt)``; ``make_triple(spec, catalog,
manifest)`` loads the inputs and runs the edit. Both are pure functions of their arguments, so
triple ``i`` is the same bytes whichever worker makes it, in whatever order.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from synth.edits import EDITS, EditInputs, EditResult, make_params
from synth.errors import SkipSample, SourceError, SynthError
from synth.manifest import Manifest
from synth.rng import derive, derive_seed
from synth.sources import create_source, create_texture_source
from synth.sources.base import ImageSource, SourceImage, TextureSource
from synth.sources.resize import resize_rgb, resize_source_image


@dataclass(frozen=True)
class SourceRef:
    """An item of a source: ``source`` is its position in the manifest's list."""

    source: int
    index: int


@dataclass(frozen=True)
class SampleSpec:
    """Everything needed to make one triple, as plain data (saved, replayed, debugged)."""

    index: int
    attempt: int
    kind: str
    seed: int
    base: SourceRef
    donor: SourceRef | None = None
    texture: SourceRef | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Skipped:
    """An input that could not be used for one attempt, and why."""

    index: int
    attempt: int
    input: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LRU:
    """A tiny bounded cache for decoded, resized source items (sources repeat within a task)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._d: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, make: Callable[[], Any]) -> Any:
        if key in self._d:
            self._d.move_to_end(key)
            return self._d[key]
        value = make()
        self._d[key] = value
        if len(self._d) > self.capacity:
            self._d.popitem(last=False)
        return value

    def clear(self) -> None:
        """Forget every cached item (benchmarks start each timed run cold)."""
        self._d.clear()


@dataclass
class Catalog:
    """The opened sources of a manifest plus what sampling needs to know about them."""

    images: list[ImageSource]
    textures: list[TextureSource]
    image_weights: np.ndarray
    texture_weights: np.ndarray
    eligible: list[np.ndarray | None]
    inpainter: Any
    cache: _LRU = field(default_factory=lambda: _LRU(64))

    @classmethod
    def open(cls, manifest: Manifest) -> Catalog:
        """Open every source of ``manifest`` (indices only; no image is decoded here)."""
        from synth.edits.inpaint import create_inpainter

        images = [_open(create_source, s, "sources.images") for s in manifest.images]
        textures = [_open(create_texture_source, s, "sources.textures") for s in manifest.textures]
        for spec, src in zip(manifest.images + manifest.textures, images + textures, strict=True):
            if len(src) == 0:
                raise SynthError(f"source {spec.name!r} ({spec.kind}) is empty; check its path")
        eligible = []
        for src in images:
            counts = src.instance_counts()
            eligible.append(None if counts is None else np.flatnonzero(np.asarray(counts) > 0))
        return cls(
            images=images,
            textures=textures,
            image_weights=_normalise([s.weight for s in manifest.images]),
            texture_weights=_normalise([s.weight for s in manifest.textures]),
            eligible=eligible,
            inpainter=create_inpainter(dict(manifest.inpainter)),
        )

    def fingerprints(self, manifest: Manifest) -> dict[str, str]:
        names = [s.name for s in manifest.images] + [s.name for s in manifest.textures]
        pairs = zip(names, self.images + self.textures, strict=True)
        return {n: s.fingerprint() for n, s in pairs}

    def key(self, ref: SourceRef, texture: bool = False) -> str:
        src = (self.textures if texture else self.images)[ref.source]
        return f"{src.name}[{ref.index}]"

    def load_image(self, ref: SourceRef, size: tuple[int, int]) -> SourceImage:
        """The item resized to ``size``; a SourceError carries the item's key.

        Sources that offer ``load_resized`` (COCO) resize while decoding, which skips their
        full-resolution masks; the others are loaded whole and resized here.
        """
        src = self.images[ref.source]
        return self.cache.get(
            ("img", ref, size), lambda: _load_resized(src, ref, self.key(ref), size)
        )

    def load_texture(self, ref: SourceRef, size: tuple[int, int]) -> np.ndarray:
        src = self.textures[ref.source]
        return self.cache.get(
            ("tex", ref, size),
            lambda: resize_rgb(_keyed(self.key(ref, texture=True), src.load, ref.index), size),
        )


def _keyed(key: str, load: Callable[..., Any], *args: Any) -> Any:
    """Call a source's loader; a SourceError gains the item's key as its ``input``."""
    try:
        return load(*args)
    except SourceError as e:
        raise SourceError(str(e), input=key) from e


def _load_resized(src: Any, ref: SourceRef, key: str, size: tuple[int, int]) -> SourceImage:
    load_resized = getattr(src, "load_resized", None)
    if load_resized is not None:
        return _keyed(key, load_resized, ref.index, size)
    return resize_source_image(_keyed(key, src.load, ref.index), size)


def _open(factory: Callable[..., Any], spec: Any, where: str) -> Any:
    try:
        return factory(spec.kind, name=spec.name, **dict(spec.options))
    except SourceError as e:
        raise SourceError(f"{where} {spec.name!r}: {e}") from e


def _normalise(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum() if w.size else w


def _pick_image(catalog: Catalog, rng: np.random.Generator, with_instances: bool) -> SourceRef:
    """A source item, preferring items known to hold instances when the edit needs them."""
    weights = catalog.image_weights.copy()
    if with_instances:
        for i, elig in enumerate(catalog.eligible):
            if elig is not None and elig.size == 0:
                weights[i] = 0.0
        if weights.sum() == 0:
            raise SynthError("no image source has a usable instance; object edits are impossible")
        weights /= weights.sum()
    s = int(rng.choice(len(weights), p=weights))
    elig = catalog.eligible[s]
    if with_instances and elig is not None:
        return SourceRef(s, int(elig[rng.integers(elig.size)]))
    return SourceRef(s, int(rng.integers(len(catalog.images[s]))))


def sample_spec(manifest: Manifest, catalog: Catalog, index: int, attempt: int = 0) -> SampleSpec:
    """Draw the spec of triple ``index`` (attempt ``attempt``) from the manifest's seed."""
    rng = derive(manifest.seed, "spec", index, attempt)
    kinds = list(manifest.mix)
    kind = kinds[int(rng.choice(len(kinds), p=np.array([manifest.mix[k] for k in kinds])))]
    edef = EDITS[kind]
    base = _pick_image(catalog, rng, edef.needs_instances)
    donor = _pick_image(catalog, rng, True) if edef.needs_donor else None
    texture = None
    if edef.needs_texture:
        t = int(rng.choice(len(catalog.textures), p=catalog.texture_weights))
        texture = SourceRef(t, int(rng.integers(len(catalog.textures[t]))))
    seed = derive_seed(manifest.seed, "edit", index, attempt)
    return SampleSpec(index, attempt, kind, seed, base, donor, texture)


def make_triple(spec: SampleSpec, catalog: Catalog, manifest: Manifest) -> EditResult:
    """Load the spec's inputs at the output size and apply its edit."""
    size = manifest.size
    inputs = EditInputs(
        base=catalog.load_image(spec.base, size),
        donor=catalog.load_image(spec.donor, size) if spec.donor else None,
        texture=catalog.load_texture(spec.texture, size) if spec.texture else None,
        inpainter=catalog.inpainter,
    )
    params = make_params(spec.kind, manifest.edits.get(spec.kind))
    rng = np.random.Generator(np.random.PCG64(spec.seed))
    return EDITS[spec.kind].fn(inputs, rng, params)


def realize(
    manifest: Manifest, catalog: Catalog, index: int, *, strict: bool = False
) -> tuple[SampleSpec, EditResult, list[Skipped], int]:
    """Make triple ``index``, retrying with the next attempt when an input is unusable.

    Returns the spec that succeeded, the triple, the inputs skipped on the way (corrupt image,
    bad annotation) and the number of retries caused by inputs that did not fit the edit (e.g.
    no placeable instance). With ``strict`` a skipped input raises instead.
    """
    skipped: list[Skipped] = []
    retries = 0
    reasons: list[str] = []
    for attempt in range(manifest.max_attempts):
        spec = sample_spec(manifest, catalog, index, attempt)
        try:
            return spec, make_triple(spec, catalog, manifest), skipped, retries
        except SourceError as e:
            if strict:
                raise SourceError(f"sample {index}: {e}") from e
            skipped.append(Skipped(index, attempt, e.input or catalog.key(spec.base), str(e)))
            reasons.append(str(e))
        except SkipSample as e:
            retries += 1
            reasons.append(f"{spec.kind}: {e}")
    raise SynthError(
        f"sample {index}: no usable inputs after {manifest.max_attempts} attempts "
        f"(last: {reasons[-1]}); check the sources or raise max_attempts"
    )
