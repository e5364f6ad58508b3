"""Manifests: the YAML that fully determines a store, validated up front.

A manifest names the sources, the edit mix and parameters, the output size, the number of
triples, the seed, the shard size and the codec. Validation rejects unknown keys, wrong types,
missing paths and bad probabilities with one-line errors that name the field and the fix, so a
64-worker build never starts from a typo.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synth.errors import ConfigError
from synth.sources import SOURCE_KINDS
from synth.store import CODECS, DEFAULT_CODEC, Codec

#: Default edit mix: the paper's recipe (about half local-region, a quarter exchange/paste,
#: a quarter removal pairs), plus a few identical pairs so a model learns to output nothing.
DEFAULT_MIX: dict[str, float] = {
    "local_texture": 0.35,
    "local_color": 0.08,
    "cutpaste": 0.07,
    "exchange": 0.12,
    "appearance_paste": 0.07,
    "disappearance_paste": 0.06,
    "disappearance_inpaint": 0.1,
    "appearance_inpaint": 0.1,
    "none": 0.05,
}

_TOP_KEYS = {
    "version",
    "name",
    "seed",
    "n",
    "size",
    "shard_size",
    "codec",
    "sources",
    "mix",
    "edits",
    "inpainter",
    "max_attempts",
    "sampling",
}
#: ``sampling.mode``: ``pooled`` draws a shard's source items from that shard's pool (a slice of a
#: seeded walk over every item, so each item is decoded once per shard and every item gets used);
#: ``independent`` draws every item uniformly for every triple. See ``synth/sample.py``.
SAMPLING_MODES = ("pooled", "independent")
_PATH_KEYS = ("ann_file", "image_root", "root", "cache_dir")


@dataclass(frozen=True)
class SourceSpec:
    """One entry of ``sources.images`` or ``sources.textures``."""

    name: str
    kind: str
    weight: float = 1.0
    options: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "weight": self.weight, **self.options}


@dataclass(frozen=True)
class Manifest:
    """A validated manifest with every path resolved and every default filled in."""

    name: str
    seed: int
    n: int
    size: tuple[int, int]
    shard_size: int
    codec: Codec
    images: tuple[SourceSpec, ...]
    textures: tuple[SourceSpec, ...]
    mix: Mapping[str, float]
    edits: Mapping[str, Mapping[str, Any]]
    inpainter: Mapping[str, Any]
    max_attempts: int = 8
    sampling: str = "pooled"
    #: the mapping as written in the YAML file (recorded in the store next to the resolved config)
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The resolved config as plain data (what the store records and workers receive)."""
        return {
            "version": 1,
            "name": self.name,
            "seed": self.seed,
            "n": self.n,
            "size": list(self.size),
            "shard_size": self.shard_size,
            "codec": self.codec.to_dict(),
            "sources": {
                "images": [s.to_dict() for s in self.images],
                "textures": [s.to_dict() for s in self.textures],
            },
            "mix": dict(self.mix),
            "edits": {k: dict(v) for k, v in self.edits.items()},
            "inpainter": dict(self.inpainter),
            "max_attempts": self.max_attempts,
            "sampling": {"mode": self.sampling},
        }

    def fingerprint(self) -> str:
        """Hash of the resolved config: equal manifests build byte-identical stores."""
        return config_fingerprint(self.to_dict())

    def with_overrides(self, **kw: Any) -> Manifest:
        """A copy with top-level fields replaced (re-validated)."""
        d = self.to_dict()
        for k, v in kw.items():
            if k == "size" and v is not None:
                v = list(_parse_size(v, "size"))
            if v is not None:
                d[k] = v
        return dataclasses.replace(parse_manifest(d, base_dir=None), raw=self.raw)


def config_fingerprint(config: Mapping[str, Any]) -> str:
    """16 hex digits over a resolved config (``Manifest.to_dict``), as stores record it."""
    blob = json.dumps(config, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _type_error(where: str, want: str, got: Any) -> ConfigError:
    return ConfigError(f"{where}: expected {want}, got {type(got).__name__} {got!r}")


def _int(
    d: Mapping[str, Any], key: str, where: str, default: int | None = None, lo: int = 0
) -> int:
    v = d.get(key, default)
    if v is None:
        raise ConfigError(f"{where}.{key}: missing; add it to the manifest")
    if isinstance(v, bool) or not isinstance(v, int):
        raise _type_error(f"{where}.{key}", "an integer", v)
    if v < lo:
        raise ConfigError(f"{where}.{key}: {v} is below the minimum {lo}")
    return v


def _parse_size(v: Any, where: str) -> tuple[int, int]:
    if isinstance(v, int) and not isinstance(v, bool):
        v = [v, v]
    if isinstance(v, str) and re.fullmatch(r"\d+(x\d+)?", v.strip().lower()):
        parts = [int(p) for p in v.strip().lower().split("x")]
        v = parts * 2 if len(parts) == 1 else parts
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 2
        or not all(isinstance(x, int) and not isinstance(x, bool) for x in v)
    ):
        raise _type_error(where, "an int or [height, width]", v)
    if min(v) < 16 or max(v) > 4096:
        raise ConfigError(f"{where}: {list(v)} outside [16, 4096] pixels")
    return int(v[0]), int(v[1])


def _resolve_path(value: Any, where: str, base_dir: Path | None, must_exist: bool) -> str:
    if not isinstance(value, str) or not value:
        raise _type_error(where, "a path or URL string", value)
    if "://" in value:
        return value
    p = Path(os.path.expanduser(value))
    if not p.is_absolute() and base_dir is not None:
        p = base_dir / p
    if must_exist and not p.exists():
        raise ConfigError(f"{where}: path {str(p)!r} does not exist; fix the path in the manifest")
    return str(p)


def _resolve_tars(value: Any, where: str, base_dir: Path | None) -> str | list[str]:
    """A tar source's ``tars``: one path, URL or glob, or a list of them, each resolved against
    the manifest's folder. Existence is the source's check: a glob names no single file."""
    if isinstance(value, str):
        return _resolve_path(value, where, base_dir, must_exist=False)
    if not isinstance(value, list) or not value:
        raise _type_error(where, "a tar path, URL or glob, or a list of them", value)
    return [_resolve_path(v, f"{where}[{i}]", base_dir, False) for i, v in enumerate(value)]


def _parse_sources(entries: Any, where: str, base_dir: Path | None) -> tuple[SourceSpec, ...]:
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise _type_error(where, "a list of sources", entries)
    out, names = [], set()
    for i, e in enumerate(entries):
        w = f"{where}[{i}]"
        if not isinstance(e, Mapping):
            raise _type_error(w, "a mapping with name and kind", e)
        e = dict(e)
        kind = e.pop("kind", None)
        if not isinstance(kind, str):
            raise ConfigError(f"{w}.kind: missing; use one of {', '.join(SOURCE_KINDS)}")
        name = e.pop("name", kind)
        if not isinstance(name, str) or name in names:
            raise ConfigError(f"{w}.name: {name!r} must be a unique string")
        names.add(name)
        weight = e.pop("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            raise ConfigError(f"{w}.weight: {weight!r} must be a positive number")
        for k in _PATH_KEYS:
            if k in e:
                e[k] = _resolve_path(e[k], f"{w}.{k}", base_dir, must_exist=k != "cache_dir")
        if "tars" in e:
            e["tars"] = _resolve_tars(e["tars"], f"{w}.tars", base_dir)
        out.append(SourceSpec(name=name, kind=kind, weight=float(weight), options=e))
    return tuple(out)


def parse_manifest(raw: Mapping[str, Any], base_dir: str | Path | None) -> Manifest:
    """Validate a manifest mapping; relative paths resolve against ``base_dir``."""
    from synth.edits import EDITS, make_params

    if not isinstance(raw, Mapping):
        raise _type_error("manifest", "a mapping at top level", raw)
    unknown = sorted(set(raw) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"manifest: unknown key(s) {unknown}; known keys: {sorted(_TOP_KEYS)}")
    base = Path(base_dir) if base_dir is not None else None
    if raw.get("version", 1) != 1:
        raise ConfigError(
            f"version: {raw.get('version')!r} unsupported; this synth reads version 1"
        )
    name = raw.get("name", "synth")
    if not isinstance(name, str):
        raise _type_error("name", "a string", name)
    seed = _int(raw, "seed", "manifest", default=0)
    n = _int(raw, "n", "manifest", lo=1)
    size = _parse_size(raw.get("size", 256), "size")
    shard_size = _int(raw, "shard_size", "manifest", default=256, lo=1)
    codec = raw.get("codec", {}) or {}
    if not isinstance(codec, Mapping) or not (
        set(codec) <= {"name", "level"} or set(codec) == {"zstd_level"}
    ):
        raise ConfigError(
            f"codec: {codec!r}; use {{name: {'|'.join(CODECS)}, level: N}} (lossless only)"
        )
    if "zstd_level" in codec:  # the format-1 spelling of {name: zstd, level: N}
        codec = {"name": "zstd", "level": codec["zstd_level"]}
    codec_name = codec.get("name", DEFAULT_CODEC)
    if codec_name not in CODECS:
        raise ConfigError(f"codec.name: {codec_name!r} unknown; use one of {', '.join(CODECS)}")
    lo, hi, default_level = CODECS[codec_name]
    level = codec.get("level", default_level)
    if isinstance(level, bool) or not isinstance(level, int) or not lo <= level <= hi:
        raise ConfigError(f"codec.level: {level!r} for {codec_name}; use an integer in {lo}..{hi}")
    max_attempts = _int(raw, "max_attempts", "manifest", default=8, lo=1)
    sampling = raw.get("sampling", {}) or {}
    if not isinstance(sampling, Mapping) or not set(sampling) <= {"mode"}:
        raise ConfigError(f"sampling: {sampling!r}; use {{mode: {'|'.join(SAMPLING_MODES)}}}")
    sampling_mode = sampling.get("mode", SAMPLING_MODES[0])
    if sampling_mode not in SAMPLING_MODES:
        raise ConfigError(
            f"sampling.mode: {sampling_mode!r}; use one of {', '.join(SAMPLING_MODES)}"
        )

    sources = raw.get("sources")
    if not isinstance(sources, Mapping):
        raise ConfigError("sources: missing; give sources.images (and sources.textures)")
    extra = sorted(set(sources) - {"images", "textures"})
    if extra:
        raise ConfigError(f"sources: unknown key(s) {extra}; use images and textures")
    images = _parse_sources(sources.get("images"), "sources.images", base)
    textures = _parse_sources(sources.get("textures"), "sources.textures", base)
    if not images:
        raise ConfigError("sources.images: empty; add at least one image source")

    mix = raw.get("mix", DEFAULT_MIX)
    if not isinstance(mix, Mapping) or not mix:
        raise _type_error("mix", "a mapping edit-kind -> probability", mix)
    for k, p in mix.items():
        if k not in EDITS:
            raise ConfigError(f"mix.{k}: unknown edit kind; known: {sorted(EDITS)}")
        if isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0:
            raise ConfigError(f"mix.{k}: {p!r} must be a probability >= 0")
    total = float(sum(mix.values()))
    if abs(total - 1.0) > 1e-6:
        raise ConfigError(f"mix: probabilities sum to {total:.6g}, not 1; rescale them")
    mix = {k: float(v) for k, v in mix.items() if v > 0}
    needs_tex = [k for k in mix if EDITS[k].needs_texture]
    if needs_tex and not textures:
        raise ConfigError(f"sources.textures: empty but mix uses {needs_tex}; add a texture source")

    edits = raw.get("edits", {}) or {}
    if not isinstance(edits, Mapping):
        raise _type_error("edits", "a mapping edit-kind -> parameters", edits)
    for k, params in edits.items():
        if k not in EDITS:
            raise ConfigError(f"edits.{k}: unknown edit kind; known: {sorted(EDITS)}")
        if not isinstance(params, Mapping):
            raise _type_error(f"edits.{k}", "a mapping of parameters", params)
        try:
            make_params(k, params)
        except TypeError as e:
            raise ConfigError(f"edits.{k}: {e}") from e

    inpainter = dict(raw.get("inpainter") or {"kind": "opencv"})
    if "path" in inpainter:
        inpainter["path"] = _resolve_path(inpainter["path"], "inpainter.path", base, True)

    return Manifest(
        name=name,
        seed=seed,
        n=n,
        size=size,
        shard_size=shard_size,
        codec=Codec(codec_name, level),
        images=images,
        textures=textures,
        mix=mix,
        edits={k: dict(v) for k, v in edits.items()},
        inpainter=inpainter,
        max_attempts=max_attempts,
        sampling=sampling_mode,
    )


def load_manifest(path: str | Path) -> Manifest:
    """Read and validate a YAML manifest file."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: manifest file not found")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{p}:{where}: not valid YAML ({getattr(e, 'problem', e)})") from e
    try:
        return dataclasses.replace(parse_manifest(raw, base_dir=p.parent), raw=raw)
    except ConfigError as e:
        raise ConfigError(f"{p}: {e}") from e


def default_manifest(n: int = 64, size: int | tuple[int, int] = 256, seed: int = 0) -> Manifest:
    """The built-in manifest: embedded sample photos and textures, the default mix."""
    return parse_manifest(
        {
            "name": "builtin-samples",
            "seed": seed,
            "n": n,
            "size": list(_parse_size(size, "size")),
            "shard_size": 64,
            "sources": {
                "images": [{"name": "samples", "kind": "samples"}],
                "textures": [{"name": "sample-textures", "kind": "samples"}],
            },
        },
        base_dir=None,
    )
