"""The one error discovery raises."""

from __future__ import annotations


class DiscoveryError(ValueError):
    """The model cannot be back-projected (or not without help); the message says why and what
    to do."""
