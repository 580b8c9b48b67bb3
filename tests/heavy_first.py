"""The test files that take longest are collected first, so that `make test` (pytest-xdist,
`--dist loadfile`: a file to a worker, handed out in collection order) starts them at once and
does not end with one worker running a long file alone while the other has nothing left to do.

The list is of the longest files of a measured run (`--durations`, sums per file), longest first;
a file not named keeps its place after them, in the usual order. Only the order changes: every
test still runs, in its own file's order."""

from __future__ import annotations

import pytest

HEAVY_FIRST = (
    "tests/gateway/console/test_console_signin_flood.py",
    "tests/gateway/test_properties.py",
    "tests/docs/test_operations.py",
    "tests/gateway/console/test_console_browser.py",
    "tests/docs/clients/test_client_guides.py",
    "tests/deploy/test_nginx_nodes.py",
    "tests/gateway/portal/test_portal_web.py",
    "tests/gateway/test_permissions.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    rank = {path: n for n, path in enumerate(HEAVY_FIRST)}
    root = config.rootpath

    def place(item) -> int:
        try:
            relative = item.path.relative_to(root).as_posix()
        except ValueError:
            return len(rank)
        return rank.get(relative, len(rank))

    items.sort(key=place)  # stable: within a file, and among the files not named, the order is kept
