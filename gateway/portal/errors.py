"""The portal's refusal, below every portal module that raises or catches it (accounts, security
keys, views): a request refused, with a message safe to show to whoever made it."""

from __future__ import annotations


class PortalError(Exception):
    """A portal request refused; the message is safe to show to whoever made it."""
