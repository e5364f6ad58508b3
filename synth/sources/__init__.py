"""Image and texture sources, created by short name.

``create_source("coco", ann_file=..., image_root=...)`` imports only the module it needs, so
``synth preview`` does not pay for pycocotools or scikit-image unless the manifest uses them.
Keyword arguments are checked against the class signature, so a typo in a manifest becomes a
``ConfigError`` naming the field instead of a ``TypeError`` deep inside a worker.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

from synth.errors import ConfigError
from synth.sources.base import ImageSource, Instance, SourceImage, TextureSource

_SOURCES: dict[str, tuple[str, str]] = {
    "coco": ("synth.sources.coco", "CocoSource"),
    "folder": ("synth.sources.folder", "FolderSource"),
    "samples": ("synth.sources.samples", "SampleSource"),
    "plain": ("synth.sources.plain", "PlainImages"),
    "proposals": ("synth.sources.proposals", "ProposalFolder"),
    "sa1b": ("synth.sources.sa1b", "Sa1bSource"),
}

_TEXTURES: dict[str, tuple[str, str]] = {
    "folder": ("synth.sources.textures", "TextureFolder"),
    "samples": ("synth.sources.samples", "SampleTextures"),
}

SOURCE_KINDS = tuple(sorted(_SOURCES))
TEXTURE_KINDS = tuple(sorted(_TEXTURES))


def create_source(kind: str, **kwargs: Any) -> ImageSource:
    """Create an image source by kind (``SOURCE_KINDS``; ``docs/sources.md`` describes each).

    Raises:
        ConfigError: unknown kind, unknown or missing arguments.
        SourceError: the source's data cannot be used (raised by the source itself).
    """
    return _create(_SOURCES, "source", kind, kwargs)


def create_texture_source(kind: str, **kwargs: Any) -> TextureSource:
    """Create a texture source by kind: ``folder`` or ``samples``.

    Raises:
        ConfigError: unknown kind, unknown or missing arguments.
        SourceError: the textures cannot be used (raised by the source itself).
    """
    return _create(_TEXTURES, "texture source", kind, kwargs)


def index_plan(kind: str, **kwargs: Any) -> Any:
    """The per-shard index work a source needs before it opens, or None when it needs none.

    Sources stored as many shards (``sa1b``: tars) are indexed by the build's cluster, one task
    per shard, before the shard tasks run (``synth.index.cluster``); this asks the source's
    class which shards are left, checking ``kwargs`` as ``create_source`` does.

    Raises:
        ConfigError: unknown kind, unknown or missing arguments.
        SourceError: the source's files cannot be listed (raised by the source itself).
    """
    cls = _class(_SOURCES, "source", kind, kwargs)
    plan = getattr(cls, "index_plan", None)
    return None if plan is None else plan(**kwargs)


def _create(table: dict[str, tuple[str, str]], what: str, kind: str, kwargs: dict[str, Any]) -> Any:
    return _class(table, what, kind, kwargs)(**kwargs)


def _class(table: dict[str, tuple[str, str]], what: str, kind: str, kwargs: dict[str, Any]) -> Any:
    """The class registered for ``kind``, once ``kwargs`` fit its signature."""
    if kind not in table:
        raise ConfigError(f"{what} kind {kind!r} is unknown; use one of {', '.join(sorted(table))}")
    module, name = table[kind]
    cls = getattr(importlib.import_module(module), name)
    params = inspect.signature(cls).parameters
    open_kwargs = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    named = {n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    unknown = sorted(set(kwargs) - named)
    if unknown and not open_kwargs:
        raise ConfigError(
            f"{what} {kind!r}: unknown field(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(named))}"
        )
    missing = sorted(
        n
        for n, p in params.items()
        if p.default is inspect.Parameter.empty
        and p.kind not in (inspect.Parameter.VAR_KEYWORD, inspect.Parameter.VAR_POSITIONAL)
        and n not in kwargs
    )
    if missing:
        raise ConfigError(f"{what} {kind!r}: missing field(s) {', '.join(missing)}")
    return cls


__all__ = [
    "SOURCE_KINDS",
    "TEXTURE_KINDS",
    "ImageSource",
    "Instance",
    "SourceImage",
    "TextureSource",
    "create_source",
    "create_texture_source",
    "index_plan",
]
