"""From an index to a triple: sample a spec (plain data), then make the triple from it.

``sample_spec(manifest, catalog, index, attempt)`` draws every choice (edit kind, source items,
edit seed) from ``derive(manifest.seed, index, attempt)``; ``make_triple(spec, catalog,
manifest)`` loads the inputs and runs the edit. Both are pure functions of their arguments, so
triple ``i`` is the same bytes whichever worker makes it, in whatever order.

Pooled sampling (``sampling: {mode: pooled}``, the default) draws the source items of shard
``k`` from that shard's *pool*: the ``k``-th slice of a seeded walk over every item of the
source (one fresh permutation per pass). A pool holds as many items as the shard needs for each
item to be used about as often as the whole store uses it (``pool_size``), so every use of a
decoded image falls in the shard that decodes it, and every item is used before any is used
twice. A source stored in groups (tars: ``group_sizes``) is walked one group after another
(``_grouped_walk``), so a pool spans one or two tars and a shard loads only their indexes.
``independent`` mode draws every item uniformly for every triple instead: the same
distribution per triple, but about 1.7 decodes per triple and, at two triples per image, about
13% of the images never used as a base (e^-2).
"""

from __future__ import annotations

import math
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
from synth.sources.base import ImageSource, Instance, SourceImage, TextureSource
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
    #: per image source: sorted items with instances, a ``GroupedEligible``, or None (unknown)
    eligible: list[Any]
    inpainter: Any
    #: items per shard pool of each image / texture source; None for independent sampling
    image_pools: list[int] | None = None
    texture_pools: list[int] | None = None
    cache: _LRU = field(default_factory=lambda: _LRU(64))
    _pools: _LRU = field(default_factory=lambda: _LRU(16), repr=False)
    #: items that failed to load since ``forget_failures``: key -> the error they raised
    failed: dict[Any, SourceError] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, manifest: Manifest) -> Catalog:
        """Open every source of ``manifest`` (indices only; no image is decoded here)."""
        from synth.edits.inpaint import create_inpainter

        images = [_open(create_source, s, "sources.images") for s in manifest.images]
        textures = [_open(create_texture_source, s, "sources.textures") for s in manifest.textures]
        for spec, src in zip(manifest.images + manifest.textures, images + textures, strict=True):
            if len(src) == 0:
                raise SynthError(f"source {spec.name!r} ({spec.kind}) is empty; check its path")
        eligible: list[Any] = []
        for src in images:
            lazy = getattr(src, "eligible_items", None)
            if lazy is not None:  # known per group (tar), loaded as pools reach it
                eligible.append(lazy())
                continue
            counts = src.instance_counts()
            eligible.append(None if counts is None else np.flatnonzero(np.asarray(counts) > 0))
        image_weights = _normalise([s.weight for s in manifest.images])
        texture_weights = _normalise([s.weight for s in manifest.textures])
        image_pools = texture_pools = None
        if manifest.sampling == "pooled":
            S, n = manifest.shard_size, manifest.n
            tex = sum(p for k, p in manifest.mix.items() if EDITS[k].needs_texture)
            image_pools = [
                pool_size(len(src), S * w, n * w, MIN_IMAGE_POOL)
                for src, w in zip(images, image_weights, strict=True)
            ]
            texture_pools = [
                pool_size(len(src), S * tex * w, n * tex * w, MIN_TEXTURE_POOL)
                for src, w in zip(textures, texture_weights, strict=True)
            ]
        # Room for a whole shard's pools: a shard meets each pooled item many times.
        capacity = 64 + sum(image_pools or ()) + sum(texture_pools or ())
        return cls(
            images=images,
            textures=textures,
            image_weights=image_weights,
            texture_weights=texture_weights,
            eligible=eligible,
            inpainter=create_inpainter(dict(manifest.inpainter)),
            image_pools=image_pools,
            texture_pools=texture_pools,
            cache=_LRU(capacity),
        )

    def pool(self, seed: int, texture: bool, source: int, shard: int) -> np.ndarray:
        """The items of ``source`` that shard ``shard`` draws from (see the module docstring)."""
        src = (self.textures if texture else self.images)[source]
        size = (self.texture_pools if texture else self.image_pools)[source]
        groups = getattr(src, "group_sizes", None)
        if groups is not None:
            return self._pools.get(
                ("pool", seed, texture, source, shard),
                lambda: _grouped_walk(seed, texture, source, groups(), size, shard),
            )
        return self._pools.get(
            ("pool", seed, texture, source, shard),
            lambda: _walk(seed, texture, source, len(src), size, shard),
        )

    def eligible_pool(self, seed: int, source: int, shard: int) -> np.ndarray:
        """The pool's items known to hold instances (all of the pool when counts are unknown)."""

        def make() -> np.ndarray:
            items, elig = self.pool(seed, False, source, shard), self.eligible[source]
            return items if elig is None else items[_member(elig, items)]

        return self._pools.get(("eligible", seed, source, shard), make)

    def source_problems(self, manifest: Manifest) -> list[dict[str, str]]:
        """What the sources rejected while indexing (``synth.problems.source_problems``)."""
        from synth.problems import source_problems

        names = [s.name for s in manifest.images] + [s.name for s in manifest.textures]
        return source_problems(zip(names, self.images + self.textures, strict=True))

    def forget_failures(self) -> None:
        """Let items that failed be read again (a new task: a file may have been fixed)."""
        self.failed.clear()

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
        return self._once(
            ("img", ref),
            lambda: self.cache.get(
                ("img", ref, size), lambda: _frozen(_load_resized(src, ref, self.key(ref), size))
            ),
        )

    def load_texture(self, ref: SourceRef, size: tuple[int, int]) -> np.ndarray:
        src = self.textures[ref.source]
        return self._once(
            ("tex", ref),
            lambda: self.cache.get(
                ("tex", ref, size),
                lambda: _read_only(
                    resize_rgb(_keyed(self.key(ref, texture=True), src.load, ref.index), size)
                ),
            ),
        )

    def _once(self, key: Any, load: Callable[[], Any]) -> Any:
        """``load()``, unless item ``key`` failed before: then its error again, without a read."""
        err = self.failed.get(key)
        if err is not None:
            raise SourceError(str(err), input=err.input)
        try:
            return load()
        except SourceError as e:
            self.failed[key] = e
            raise


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False
    return a


def _frozen(item: SourceImage) -> SourceImage:
    """``item`` with read-only arrays: a cached item serves many triples, so an edit that wrote
    into its inputs would make a triple depend on which triples the worker made before it."""
    return SourceImage(
        key=item.key,
        image=_read_only(item.image),
        instances=tuple(
            Instance(mask=_read_only(i.mask), category=i.category, ann_id=i.ann_id)
            for i in item.instances
        ),
        ignore=None if item.ignore is None else _read_only(item.ignore),
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


#: Smallest pools (when a source has that many items): donors need candidates besides the base.
MIN_IMAGE_POOL = 16
MIN_TEXTURE_POOL = 8


def pool_size(items: int, shard_draws: float, store_draws: float, floor: int) -> int:
    """How many items of a source one shard's pool holds.

    The store draws ``store_draws`` items from a source of ``items``, so each item is used
    ``u = store_draws / items`` times; a shard that draws ``shard_draws`` needs
    ``shard_draws / u`` items for every use of an item to fall in one shard (decoded once).
    When the store is smaller than the source (``u < 1``) every draw gets a fresh item.
    """
    uses = max(1.0, store_draws / max(items, 1))
    return int(min(items, max(floor, math.ceil(shard_draws / uses))))


def _walk(seed: int, texture: bool, source: int, items: int, size: int, shard: int) -> np.ndarray:
    """Positions ``[shard * size, (shard + 1) * size)`` of a walk over fresh permutations."""
    out, pos, stop = [], shard * size, (shard + 1) * size
    while pos < stop:
        lap, at = divmod(pos, items)
        perm = derive(seed, "pool", int(texture), source, lap).permutation(items)
        take = min(stop - pos, items - at)
        out.append(perm[at : at + take])
        pos += take
    return np.concatenate(out)


def _grouped_walk(
    seed: int, texture: bool, source: int, sizes: np.ndarray, size: int, shard: int
) -> np.ndarray:
    """``_walk`` for a source stored in groups (tars): the walk finishes a group before the next.

    Each pass permutes the groups, then walks every group's own permutation of its items, so a
    pool (a slice of the walk) spans ``ceil(size / group size) + 1`` groups at most, and a shard
    loads that many tar indexes, whatever the number of tars. Every item is still used before
    any is used twice, and the pools depend only on the seed and the group sizes.
    """
    sizes = np.asarray(sizes, np.int64)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    out, pos, stop = [], shard * size, (shard + 1) * size
    while pos < stop:
        lap, at = divmod(pos, int(starts[-1]))
        order = derive(seed, "pool-groups", int(texture), source, lap).permutation(sizes.size)
        ends = np.cumsum(sizes[order])
        k = int(np.searchsorted(ends, at, side="right"))
        group, within = int(order[k]), at - int(ends[k] - sizes[order[k]])
        take = min(stop - pos, int(sizes[group]) - within)
        perm = derive(seed, "pool", int(texture), source, lap, group).permutation(sizes[group])
        out.append(starts[group] + perm[within : within + take])
        pos += take
    return np.concatenate(out)


def _member(sorted_values: Any, items: np.ndarray) -> np.ndarray:
    """Which ``items`` occur in ``sorted_values``: a sorted array or a ``GroupedEligible``."""
    if not isinstance(sorted_values, np.ndarray):
        return sorted_values.contains(items)
    if sorted_values.size == 0:
        return np.zeros(items.shape, bool)
    at = np.minimum(np.searchsorted(sorted_values, items), sorted_values.size - 1)
    return sorted_values[at] == items


def _normalise(weights: list[float]) -> np.ndarray:
    w = np.asarray(weights, dtype=np.float64)
    return w / w.sum() if w.size else w


def _pick_image(
    catalog: Catalog,
    rng: np.random.Generator,
    with_instances: bool,
    where: tuple[int, int, int | None] | None = None,
) -> SourceRef:
    """A source item, preferring items known to hold instances when the edit needs them.

    ``where`` = (seed, shard, slot) draws from the shard's pool: the pool's ``slot``-th item
    when one is given and usable (even use of every item), else a random usable pool item. A
    pool without a usable item falls back to the whole source.
    """
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
    if where is not None and catalog.image_pools is not None:
        seed, shard, slot = where
        items = catalog.pool(seed, False, s, shard)
        if slot is not None:
            item = int(items[slot % items.size])
            if not with_instances or elig is None or _member(elig, np.array([item]))[0]:
                return SourceRef(s, item)
        if with_instances:
            items = catalog.eligible_pool(seed, s, shard)
        if items.size:
            return SourceRef(s, int(items[rng.integers(items.size)]))
    if with_instances and elig is not None:
        return SourceRef(s, int(elig[rng.integers(elig.size)]))
    return SourceRef(s, int(rng.integers(len(catalog.images[s]))))


def sample_spec(manifest: Manifest, catalog: Catalog, index: int, attempt: int = 0) -> SampleSpec:
    """Draw the spec of triple ``index`` (attempt ``attempt``) from the manifest's seed."""
    rng = derive(manifest.seed, "spec", index, attempt)
    kinds = list(manifest.mix)
    kind = kinds[int(rng.choice(len(kinds), p=np.array([manifest.mix[k] for k in kinds])))]
    edef = EDITS[kind]
    shard, slot = divmod(index, manifest.shard_size)
    base = _pick_image(
        catalog, rng, edef.needs_instances, (manifest.seed, shard, None if attempt else slot)
    )
    donor = None
    if edef.needs_donor:
        donor = _pick_image(catalog, rng, True, (manifest.seed, shard, None))
    texture = None
    if edef.needs_texture:
        t = int(rng.choice(len(catalog.textures), p=catalog.texture_weights))
        if catalog.texture_pools is not None:
            items = catalog.pool(manifest.seed, True, t, shard)
            texture = SourceRef(t, int(items[rng.integers(items.size)]))
        else:
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
