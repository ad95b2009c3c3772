"""The URL-or-skip rule of the tests that need a real server (PostgreSQL, Redis), shared by their fixtures."""

from __future__ import annotations

import os

import pytest


def server_url_or_skip(variable: str, *, start: str, what: str) -> str:
    """The server URL in environment variable ``variable``; without it, skip (or fail under CI).

    Args:
        variable: e.g. ``PRUNEGYM_TEST_REDIS_URL``.
        start: the command that starts a server and sets it (shown in the message).
        what: what the tests exercise (for the failure under CI).

    Returns:
        The URL.
    """
    url = os.environ.get(variable)
    if not url:
        message = f'{variable} is unset; start a server with: eval "$({start})"'
        if os.environ.get("CI"):
            pytest.fail(f"CI must run {what}: {message}")
        pytest.skip(message)
    return url
