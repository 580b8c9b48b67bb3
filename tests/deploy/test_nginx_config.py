"""deploy/nginx/contactgate.conf against the nodes' own settings, read from the files as shipped
(no nginx needed): what the nginx-in-front tests would only show by a race."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def seconds(value: str) -> float:
    """An nginx time (``10s``, ``1m``, ``500ms``, ``15``) in seconds."""
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def upstream_keepalive_timeout_s() -> float:
    """The upstream block's keepalive_timeout (nginx's default: 60 s)."""
    conf = (DEPLOY / "nginx" / "contactgate.conf").read_text()
    [block] = re.findall(r"^upstream contactgate_nodes \{(.*?)^\}", conf, re.S | re.M)
    found = re.findall(r"^\s*keepalive_timeout\s+(\S+);", block, re.M)
    return seconds(found[0]) if found else 60.0


def node_keepalive_timeout_s() -> float:
    """The nodes' idle keep-alive timeout: the shipped environment file's, else the default."""
    env = dict(line.split("=", 1) for line in (DEPLOY / "contactgate.env.example").read_text().splitlines()
               if line.strip() and not line.startswith("#"))
    return Settings.from_env(env).keepalive_timeout_s


def test_nginx_lets_an_idle_upstream_connection_go_before_the_node_closes_it():
    """A node closes a connection idle for CONTACTGATE_KEEPALIVE_TIMEOUT. If nginx kept it longer,
    it could send a request on it as the node closes it, and would answer 502: it does not re-send a
    POST (proxy_next_upstream without non_idempotent). So nginx must give up first, with a margin."""
    assert upstream_keepalive_timeout_s() <= node_keepalive_timeout_s() - 3
