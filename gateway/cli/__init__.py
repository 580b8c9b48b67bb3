"""The `contactgate` command line (CONTRACT.md "Command line"), wired here: one module per command
group, each holding that group's commands and nothing else.

- `home`: init, migrate
- `officers`: login, logout, whoami, officer ...
- `organisations`: org ...
- `certificates`: cert ...
- `trust`: trust ... (the trusted CAs)
- `proxy`: proxy ... (the certificates of nginx in front of the nodes)
- `signing_keys`: signing-key ... (the key the gateway signs its answers with)
- `keys`: keys ... (the data keys that seal values at rest)
- `roles`: roles ... (what each practitioner role may see)
- `precedence`: precedence ... (which kind of organisation's value of each field is shown)
- `serve`: serve, console
- `portal`: portal (the practitioners' web portal), portal-admin ... (appointing its user administrators)
- `identity_providers`: idp ... (an organisation's OpenID provider for the portal, four-eyes)
- `audit`: audit ... (the chain, exports, reports, the misuse review)
- `backup`: backup, restore ... (one encrypted archive; a restore acknowledged by two officers)
- `review`: review ... (the data-quality review queue)
- `linkage`: linkage ... (train a linkage model from the index; put one in use, four-eyes)
- `retention`: retention ...
- `load`: load (an organisation's signed load file: a first or full re-load, gateway.bulk_load)

What they share (exit codes, the preflight, the invocation's `Context`, the command classes) is in
`base`; what the officers' commands share (audited registry changes, how organisations,
certificates and proposals are printed) in `changes`. Other installed distributions add commands
under the entry-point group ``contactgate.commands`` (`push`, `csr`, `unbundle`, `demo`): see
`base.MainGroup`.
"""

from __future__ import annotations

import click

from gateway import __version__
from gateway.audit import reset_origin, set_origin
from gateway.cli import (audit, backup, certificates, home, hsm, identity_providers, keys, linkage, load, officers,
                         organisations, portal, precedence, proxy, retention, review, roles, serve, signing_keys, trust)
from gateway.cli.base import Context, MainGroup, local_origin


@click.group(cls=MainGroup)
@click.version_option(__version__, prog_name="contactgate", message="%(prog)s %(version)s")
@click.option("--home", envvar="CONTACTGATE_HOME", default="./var", show_default=True, show_envvar=True,
              help="The gateway's home: config, SQLite database, certificates.")
@click.option("--database-url", envvar="CONTACTGATE_DATABASE_URL", default=None, show_envvar=True,
              help="SQLAlchemy URL, e.g. postgresql+psycopg://USER@HOST/DB (default: SQLite under "
                   "the home).")
@click.option("--redis-url", envvar="CONTACTGATE_REDIS_URL", default=None, show_envvar=True,
              help="Redis for the rate-limit counters shared by every gateway process: redis://HOST:PORT/DB, "
                   "or redis+sentinel://HOST:PORT,HOST:PORT/SERVICE for Sentinel (default: the embedded store).")
@click.pass_context
def main(ctx: click.Context, home: str, database_url: str | None, redis_url: str | None) -> None:
    """ContactGate: accredited organisations exchange signed SOAP messages with the contact index.

    Exit codes: 0 done, 1 a check found a problem, 2 usage or refused, 3 could not run.
    Set CONTACTGATE_DEBUG=1 to see the traceback of an unexpected error."""
    ctx.obj = Context(home, database_url, redis_url)
    origin = set_origin(local_origin())
    ctx.call_on_close(lambda: reset_origin(origin))  # a caller running commands in-process keeps its own


for _command in (
    home.init, home.migrate,
    officers.login, officers.logout, officers.whoami, officers.officer_group,
    organisations.org,
    certificates.cert,
    trust.trust,
    proxy.proxy,
    signing_keys.signing_key,
    keys.keys_group,
    hsm.hsm_group,
    roles.roles_group,
    precedence.precedence_group,
    serve.serve, serve.console,
    portal.portal, portal.portal_admin,
    identity_providers.idp_group,
    audit.audit_group,
    backup.backup, backup.restore,
    review.review,
    linkage.linkage,
    retention.retention_group,
    load.load,
):
    main.add_command(_command)
del _command
