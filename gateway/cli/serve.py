"""Serving: `serve` (the gateway, with mutual TLS or behind nginx) and `console` (the officers' web
console). Both check the home before they listen."""

from __future__ import annotations

import click

from gateway.cli.base import CannotRun, Context, command, fail, pass_ctx


@command("console", needs_home=False)
@click.option("--bind", default="127.0.0.1:8444", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1), help="Worker processes.")
@pass_ctx
def console(ctx: Context, bind: str, workers: int) -> None:
    """Run the officers' web console (HTTPS with the gateway's server certificate).

    For the officers' network, not for connecting systems: officers sign in with their password and
    a TOTP code, as with `contactgate login`. Served by the same front as `serve`, bounded by the
    same settings (CONTACTGATE_HANDSHAKE_TIMEOUT, _HEADER_TIMEOUT, _BODY_TIMEOUT, _KEEPALIVE_TIMEOUT,
    _MAX_CONNECTIONS, _MAX_CONNECTIONS_PER_ADDRESS, _THREADS). Refuses to start if the home is open
    to other users."""
    from gateway.console.server import serve_console

    ctx.preflight_serving()
    click.echo(f"console on https://{bind}/ (sign in with an officer account)")
    serve_console(ctx.settings, bind, workers)


@command("serve", needs_home=False)  # its own preflight: the permissions are checked before the database is opened
@click.option("--bind", default="127.0.0.1:8443", show_default=True, help="HOST:PORT to listen on.")
@click.option("--workers", default=2, show_default=True, type=click.IntRange(min=1),
              help="Worker processes.")
@click.option("--threads", default=None, type=click.IntRange(min=1),
              help="Request threads per worker [default: $CONTACTGATE_THREADS or 4].")
@click.option("--behind-proxy", is_flag=True,
              help="For nginx in front (deploy/nginx): nginx does the clients' mutual TLS and forwards the client "
                   "certificate in Client-Cert (RFC 9440), over mutual TLS to this node with a proxy certificate "
                   "registered by two officers (`contactgate proxy`), from $CONTACTGATE_TRUSTED_PROXIES. "
                   "There is no plain-HTTP hop.")
@click.option("--metrics-bind", envvar="CONTACTGATE_METRICS_BIND", show_envvar=True, default="none",
              show_default=True,
              help="HOST:PORT for /metrics (Prometheus), /readyz and /healthz, without a client certificate: "
                   "keep it on loopback or a monitoring network (e.g. 127.0.0.1:9464). HOST:0 takes a free "
                   "port. The start-up log says where, or that there is no metrics port (none, the default: "
                   "two gateways on one host do not contend for one).")
@click.option("--metadata-bind", envvar="CONTACTGATE_METADATA_BIND", show_envvar=True, default="none",
              show_default=True,
              help="HOST:PORT where the WSDL (with its WS-SecurityPolicy) and the XSD are served over HTTPS without a "
                   "client certificate, for tools that cannot present one (wsimport, python -m zeep, svcutil): "
                   "/soap/v1?wsdl and /soap/contactgate.xsd, nothing else. none (the default): not served; "
                   "`contactgate wsdl --out DIR` writes the same files.")
@click.option("--service-url", envvar="CONTACTGATE_SERVICE_URL", show_envvar=True, default=None,
              help="The service's address (https://HOST[:PORT][/PATH], as the organisations reach it) written in "
                   "the WSDL the metadata listener serves; required with --metadata-bind.")
@pass_ctx
def serve(ctx: Context, bind: str, workers: int, threads: int | None, behind_proxy: bool, metrics_bind: str,
          metadata_bind: str, service_url: str | None) -> None:
    """Run the gateway with mutual TLS (or behind nginx, which does the clients' and presents its
    own proxy certificate: --behind-proxy).

    Refuses to start (exit 2) if the home, or anything in it, is open to other users."""
    from gateway.server import serve as run_server

    if behind_proxy and not ctx.settings.trusted_proxies:
        fail("--behind-proxy needs CONTACTGATE_TRUSTED_PROXIES: the address(es) of the proxy whose "
              "Client-Cert header is believed (e.g. 127.0.0.1)")
    metrics_at = _address(metrics_bind, "--metrics-bind", "127.0.0.1:9464; port 0: a free one")
    metadata_at = _address(metadata_bind, "--metadata-bind", "0.0.0.0:8080", lowest_port=1)
    if metadata_at is not None and metadata_bind == bind:
        fail("--metadata-bind must be another address than --bind")
    if metadata_at is not None and service_url is None:
        fail("--metadata-bind needs --service-url (or CONTACTGATE_SERVICE_URL): the service's address as the "
             "organisations reach it (https://HOST[:PORT]), written in the WSDL served")
    if service_url is not None:
        import contactgate_schemas as schemas

        try:
            service_url = schemas.service_address(service_url)
        except ValueError as exc:
            fail(f"--service-url {exc}")
    ctx.preflight_serving()
    ctx.warn_if_redis_unreachable()
    from gateway.cli.linkage import check_in_use

    check_in_use(ctx)  # the linkage model in use is missing or changed: exit 3, nothing served
    from gateway.index import precedence

    try:  # which source's value is shown: a precedence file it cannot use, nothing served
        precedence.load(ctx.settings.precedence_path)
    except precedence.PrecedenceFileError as exc:
        raise CannotRun(str(exc)) from None
    from gateway.metrics import MetricsPortUnavailable

    try:
        run_server(ctx.settings, bind, workers, threads, behind_proxy=behind_proxy, metrics_bind=metrics_at,
                   metadata_bind=metadata_bind if metadata_at else None, service_url=service_url)
    except MetricsPortUnavailable as exc:
        raise CannotRun(str(exc)) from None


def _address(value: str, option: str, example: str, *, lowest_port: int = 0) -> tuple[str, int] | None:
    """``value`` of a HOST:PORT option as (host, port), or None for none; anything else stops the
    command, naming ``option`` and an ``example``."""
    if value.lower() == "none":
        return None
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit() or not lowest_port <= int(port) <= 65535:
        fail(f"{option} must be HOST:PORT (e.g. {example}) or none, not {value!r}")
    return host.strip("[]"), int(port)
