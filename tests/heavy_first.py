"""The test files that take longest are collected first, so that `make test` (pytest-xdist,
`--dist loadfile`: a file to a worker, handed out in collection order) starts them at once and
does not end with one worker running a long file alone while the other has nothing left to do.

The list is of the longest files of a measured run (`--durations`, sums per file), longest first;
a file not named keeps its place after them, in the usual order. Only the order changes: every
test still runs, in its own file's order."""

from __future__ import annotations

import pytest

HEAVY_FIRST = (
    # seconds summed per file, a quiet full run (1,414 s wall), with the tests/gateway files since made
    # shorter estimated from before/after runs of the file in one sitting (branch suitetime)
    "tests/gateway/test_cli.py",  # 252 -> ~135: in-process where the script's process is not the point
    "tests/gateway/test_fault_tolerance.py",  # 81
    "tests/gateway/test_properties.py",  # 77
    "tests/gateway/test_slow_clients.py",  # 73
    "tests/gateway/portal/test_portal_web.py",  # 73
    "tests/gateway/console/test_console_browser.py",  # 82 -> ~70: no wait for a new TOTP step
    "tests/gateway/portal/test_portal_keys.py",  # 96 -> ~65: no wait for a new TOTP step
    "tests/docs/test_operations.py",  # 59
    "tests/gateway/console/test_console_signin_flood.py",  # 55
    "tests/docs/clients/test_client_guides.py",  # long in an earlier measured run
    "tests/deploy/test_nginx_nodes.py",  # long in an earlier measured run
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
