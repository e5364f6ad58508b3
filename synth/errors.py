"""Exceptions with one-line messages that name the file or field and say what to do."""

from __future__ import annotations


class SynthError(Exception):
    """Base class: a user-facing problem reported as a single line."""


class SourceError(SynthError):
    """An input (image, annotation, mask) cannot be used; the message names it.

    ``input`` is the source item key (e.g. ``coco[17]``) once the catalog knows it.
    """

    def __init__(self, message: str, input: str | None = None) -> None:  # noqa: A002
        super().__init__(message)
        self.input = input


class ConfigError(SynthError):
    """A manifest or config field is wrong; the message names the field and the fix."""


class SkipSample(SynthError):
    """A sample spec cannot be realised from its inputs (e.g. no usable instance).

    The builder records the reason and retries the index with the next attempt number.
    """
