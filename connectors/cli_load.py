"""`contactgate load-prepare`: an organisation's whole caseload as a signed load file, for the
gateway's operator to load with `contactgate load` (connectors.load_file)."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("load-prepare", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("extract", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--mapping", "mapping_file", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The mapping `contactgate push` uses for this extract.")
@click.option("--cert", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The organisation's certificate (cert.pem), registered with the gateway.")
@click.option("--key", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Its private key (key.pem): signs the file.")
@click.option("--out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The signed load file to write (0600: it holds children's records).")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where rows that cannot be sent are listed (default: EXTRACT.rejects.csv).")
@click.option("--batch-size", default=1000, show_default=True, type=click.IntRange(1, 5000),
              help="Records per batch: each batch is loaded in one transaction with one audit entry.")
def load_prepare(extract: Path, mapping_file: Path, cert: Path, key: Path, out: Path, rejects: Path | None,
                 batch_size: int) -> None:
    """Map EXTRACT exactly as `contactgate push` would and write it, signed with the organisation's
    key, as a load file for a first (or full re-) load: the gateway's operator loads it with
    `contactgate load FILE` on the gateway host.

    Exit codes: 0 every row written, 1 some rows rejected (the reject file says why), 2 usage or a
    mapping that cannot be used."""
    from connectors import load_file
    from connectors import mapping as mapping_mod
    from connectors import push as push_mod
    from connectors import sources

    try:
        organisation = push_mod.organisation_of(cert)
        done = load_file.prepare(extract, mapping_file, cert, key, out, organisation=organisation,
                                 rejects=rejects or extract.with_name(extract.name + ".rejects.csv"),
                                 batch_size=batch_size)
    except (mapping_mod.MappingError, sources.ExtractError, ValueError) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"{out}: {done.records} records in {done.batches} batch(es) for {done.organisation}, signed by "
               f"{done.fingerprint}; rows read {done.rows}, rejected {done.rejected}")
    sys.exit(1 if done.rejected else 0)
