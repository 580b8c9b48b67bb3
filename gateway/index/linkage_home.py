"""Where this process reads linkage model versions from: its gateway home (``<home>/linkage/``).

Set by whatever builds the process — the gateway's services, the console, a `contactgate` command
— without loading the linkage code (`gateway.index.linkage.versions` reads it when it loads a
model). Each change starts the process's models afresh."""

from __future__ import annotations

from pathlib import Path

_STATE: dict = {"home": None, "generation": 0}


def configure(home) -> None:
    _STATE["home"] = Path(home) if home is not None else None
    _STATE["generation"] += 1


def home() -> Path | None:
    return _STATE["home"]


def generation() -> int:
    return _STATE["generation"]
