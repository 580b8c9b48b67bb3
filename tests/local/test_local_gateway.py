"""contactgate_local.LocalGateway, which the demo, the benchmarks and the tests serve through: a
port taken between being chosen and being bound (another process on the machine choosing at the same
moment, as test processes running side by side do) costs a retry on other ports, not a failed start."""

from __future__ import annotations

import socket

import contactgate_local
from tests.support import private_gateway


def test_a_port_taken_before_the_server_binds_it_is_replaced(tmp_path, monkeypatch):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    ports = iter([taken.getsockname()[1]])
    real = contactgate_local.free_port
    monkeypatch.setattr(contactgate_local, "free_port", lambda: next(ports, None) or real())
    try:
        with private_gateway("sqlite", tmp_path / "home", orgs={"LA": ("local_authority", ["query"])}) as gw:
            assert gw.port != taken.getsockname()[1]
            assert gw.client("la").ping(user_id="it-admin", role="onboarding").organisation == "LA"
    finally:
        taken.close()
