"""Exceptions a backend raises when it has no chunk to give this time (the node holds and retries)."""

from __future__ import annotations


class InferenceUnavailable(RuntimeError):
    """No chunk this time (server unreachable, connection lost): hold, log (throttled), retry."""


class InferenceTimeout(InferenceUnavailable):
    """The answer did not come within the timeout: hold; a late answer is discarded."""
