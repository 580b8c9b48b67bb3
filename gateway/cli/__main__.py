"""`python -m gateway.cli`: the same as `python -m gateway` and the `contactgate` console script."""

from gateway.cli import main

main(prog_name="contactgate")
