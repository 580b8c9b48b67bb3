"""bench/at_rest.py runs and prints every figure (the figures themselves are for the README)."""

from __future__ import annotations

from bench import at_rest


def test_the_encryption_cost_benchmark_prints_every_figure(capsys):
    assert at_rest.main(["--n", "200"]) == 0
    out = capsys.readouterr().out
    for line in ("seal shown record", "open shown record", "open involvement", "blind one key",
                 "per GetContacts", "per pushed record"):
        assert line in out
