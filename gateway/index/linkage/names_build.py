"""``python -m gateway.index.linkage.names_build --ssa names.zip|by-name.json --out FILE``: rebuild
data/given_names.txt.gz (gateway.index.linkage.names.main; a module of its own so that running it
does not import names.py twice)."""

import sys

from gateway.index.linkage.names import main

if __name__ == "__main__":
    sys.exit(main())
