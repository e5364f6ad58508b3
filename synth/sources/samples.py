"""Embedded sample data: photographs and textures shipped inside scikit-image's wheel.

They let ``make demo`` and the tests run with no download and no network. The files are read
straight from ``skimage/data/`` (never through ``skimage.data``'s fetchers, which may download);
only files present in the installed wheel are used. Instances are unsupervised proposals
(``synth.sources.proposals``), computed on first ``load`` and cached in-process.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np

from synth.errors import ConfigError, SourceError
from synth.sources._io import checked_index, fingerprint_of, read_rgb
from synth.sources.base import Instance, SourceImage
from synth.sources.proposals import ProposalParams, propose

# key -> file in skimage/data (natural photographs and micrographs; drawings, charts, text
# pages and test patterns are left out because proposals on them are not objects).
SAMPLE_IMAGES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "camera": "camera.png",
    "cell": "cell.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "coins": "coins.png",
    "horse": "horse.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "moon": "moon.png",
    "motorcycle": "motorcycle_left.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}

SAMPLE_TEXTURES: dict[str, str] = {
    "brick": "brick.png",
    "grass": "grass.png",
    "gravel": "gravel.png",
}

_PROPOSALS: dict[tuple[str, ProposalParams], tuple[np.ndarray, ...]] = {}


def skimage_data_dir() -> Path:
    """The folder of data files bundled in the installed scikit-image wheel."""
    import skimage

    return Path(skimage.__file__).parent / "data"


def _available(table: dict[str, str], names: Sequence[str] | None, what: str) -> tuple[str, ...]:
    root = skimage_data_dir()
    present = [k for k, f in table.items() if (root / f).is_file()]
    if names is None:
        chosen = present
    else:
        unknown = sorted(set(names) - set(table))
        if unknown:
            raise ConfigError(f"names: unknown {what} {unknown}; use some of {sorted(table)}")
        missing = sorted(set(names) - set(present))
        if missing:
            raise SourceError(f"{root}: scikit-image ships no {missing}; pick others")
        chosen = sorted(set(names))
    if not chosen:
        raise SourceError(f"{root}: no bundled {what} found; reinstall scikit-image")
    return tuple(sorted(chosen))


class SampleSource:
    """scikit-image's bundled photographs with proposed instances; works offline.

    Args:
        names: keys of ``SAMPLE_IMAGES`` to use (default: all bundled ones), kept sorted.
        name: prefix of the image keys (``"samples:astronaut"``).
        **params: ``ProposalParams`` fields for the proposer.

    Raises:
        ConfigError: an unknown image name or proposal setting.
        SourceError: a requested image is not in the installed wheel.
    """

    def __init__(
        self, *, names: Sequence[str] | None = None, name: str = "samples", **params: object
    ) -> None:
        self.params = ProposalParams.from_settings(params)
        self.name = name
        self.names = _available(SAMPLE_IMAGES, names, "sample images")

    def __len__(self) -> int:
        return len(self.names)

    def image_key(self, index: int) -> str:
        """``"<name>:<sample name>"``, e.g. ``"samples:astronaut"``."""
        return f"{self.name}:{self.names[index]}"

    def instance_counts(self) -> None:
        """Unknown until an image's proposals are computed."""
        return None

    def fingerprint(self) -> str:
        """Changes with the chosen images, the scikit-image version or the proposal settings."""
        import skimage

        return fingerprint_of(
            "samples", skimage.__version__, self.names, sorted(asdict(self.params).items())
        )

    def load(self, index: int) -> SourceImage:
        """Decode sample ``index`` (RGB) with its proposals (``ann_id`` = rank from 1).

        Raises:
            IndexError: ``index`` is out of range.
        """
        i = checked_index(self.name, index, len(self))
        key = self.names[i]
        image = read_rgb(str(skimage_data_dir() / SAMPLE_IMAGES[key]))
        cache_key = (key, self.params)
        if cache_key not in _PROPOSALS:
            _PROPOSALS[cache_key] = tuple(propose(image, self.params))
        instances = tuple(
            Instance(mask=m.copy(), category=0, ann_id=k)
            for k, m in enumerate(_PROPOSALS[cache_key], 1)
        )
        return SourceImage(key=self.image_key(i), image=image, instances=instances)


class SampleTextures:
    """scikit-image's bundled texture photographs (brick, grass, gravel) as RGB.

    Args:
        names: keys of ``SAMPLE_TEXTURES`` (default: all bundled ones), kept sorted.
        name: label used in messages.
    """

    def __init__(
        self, *, names: Sequence[str] | None = None, name: str = "sample-textures"
    ) -> None:
        self.name = name
        self.names = _available(SAMPLE_TEXTURES, names, "sample textures")

    def __len__(self) -> int:
        return len(self.names)

    def load(self, index: int) -> np.ndarray:
        """Texture ``index`` as HxWx3 uint8 RGB (the gray originals are repeated to 3 channels).

        Raises:
            IndexError: ``index`` is out of range.
        """
        i = checked_index(self.name, index, len(self))
        return read_rgb(str(skimage_data_dir() / SAMPLE_TEXTURES[self.names[i]]))

    def fingerprint(self) -> str:
        """Changes with the chosen textures or the scikit-image version."""
        import skimage

        return fingerprint_of("sample-textures", skimage.__version__, self.names)
