"""`python -m gateway`: the same as the `contactgate` console script."""

from gateway.cli import main

main(prog_name="contactgate")
