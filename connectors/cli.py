"""The connecting organisation's commands: `contactgate csr` and `unbundle` (its credentials,
connectors.credentials), `contactgate push`: a source extract to the gateway, with a declarative mapping (connectors.push),
and `contactgate wsdl`: the WSDL and XSD for tools that cannot fetch them with a client certificate.

Exit codes: 0 every row sent (or unchanged), 1 some rows rejected (see the reject file), 2 usage or
a mapping that cannot be used, 3 could not finish (the gateway unreachable or refusing, or stopped
by SIGTERM/SIGINT; run again to resume)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

MAX_BATCH = 1000  # connectors.push.MAX_BATCH (the module is imported when the command runs: every
# `contactgate` command lists this one, and should not pay for loading its mapping machinery)


def _progress_printer(err):
    """A progress bar on a terminal (rich), plain lines every 10 s otherwise."""
    started = time.monotonic()
    if err.isatty():
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        bar = Progress(TextColumn("pushing"), BarColumn(), TextColumn("{task.fields[rows]} rows, "
                       "{task.fields[rate]:.0f} rows/s"), TimeRemainingColumn(), transient=False)
        task = None

        def show(rows: int, done: int, total: int) -> None:
            nonlocal task
            if task is None:
                bar.start()
                task = bar.add_task("push", total=max(total, 1), rows=0, rate=0.0)
            rate = rows / max(time.monotonic() - started, 1e-6)
            bar.update(task, completed=done, rows=rows, rate=rate)
            if done >= total:
                bar.stop()
        return show
    last = [started]

    def line(rows: int, done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] < 10 and done < total:
            return
        last[0] = now
        elapsed = max(now - started, 1e-6)
        rate = rows / elapsed
        eta = (total - done) / (done / elapsed) if done else 0
        click.echo(f"progress: {rows} rows, {rate:.0f} rows/s, {100 * done / max(total, 1):.0f} %, "
                   f"ETA {eta:.0f} s", err=True)
    return line


@click.command("push", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("extract", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--folder", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Instead of EXTRACT: push the folder's new files in name order, each moved to done/ or "
                   "failed/ once its push has finished.")
@click.option("--sftp", "sftp_url", default=None, metavar="sftp://USER@HOST[:PORT]/FOLDER",
              help="Instead of EXTRACT: the same for a folder on an SFTP server (with --known-hosts, --sftp-key).")
@click.option("--known-hosts", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The SFTP server's host key (OpenSSH known_hosts): a server not in it is refused.")
@click.option("--sftp-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The private key that signs in to the SFTP server (no passwords).")
@click.option("--pattern", default="*", show_default=True, help="With --folder or --sftp: the files to take.")
@click.option("--sql", "use_sql", is_flag=True,
              help="Instead of EXTRACT: the rows of the mapping's sql.query (a `source: sql` mapping).")
@click.option("--database-url", envvar="CONTACTGATE_SOURCE_DATABASE_URL", default=None,
              help="With --sql: the organisation's database, a SQLAlchemy URL [env CONTACTGATE_SOURCE_DATABASE_URL: "
                   "keep its password out of the command line].")
@click.option("--mapping", "mapping_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The mapping (YAML) from the extract's columns to the canonical model.")
@click.option("--url", help="The gateway, e.g. https://gateway.example:8443 (not with --dry-run).")
@click.option("--cert", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="This organisation's certificate (from the officers' `cert approve`).")
@click.option("--key", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Its private key.")
@click.option("--ca", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The gateway CA [default: ca.pem beside --cert].")
@click.option("--gateway-cert", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="The gateway's signing certificate(s) [default: gateway-signing.pem beside --cert].")
@click.option("--state-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where what was sent is kept, one state per source, organisation and gateway "
                   "[default: $XDG_STATE_HOME/contactgate/push, else ~/.local/state/contactgate/push]. One run "
                   "at a time per state directory (its push.lock).")
@click.option("--source-name", default=None,
              help="Name the source the extract comes from (its state) [default: the extract's path, a date in "
                   "its file name as #: cases-2026-12-08.csv is the same source as cases-2026-12-07.csv].")
@click.option("--state", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Use this state file instead (what was sent, for deltas and resuming).")
@click.option("--forget", is_flag=True, help="Forget what was sent to this gateway from this source, and send "
                                             "every row again (the gateway updates, never duplicates).")
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Rows rejected by the mapping or the gateway: line, source id, who, why "
                   "[default: EXTRACT.rejects.csv; with --folder or --sftp beside the file in done/ or failed/].")
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the run report here (JSON): counts, the rows sent to review.")
@click.option("--batch-size", type=click.IntRange(1, MAX_BATCH), default=MAX_BATCH,
              show_default=True, help="Records per SubmitUpdates.")
@click.option("--full", is_flag=True, help="The extract is the whole caseload: end the involvements of "
                                           "records sent before and absent now.")
@click.option("--dry-run", is_flag=True, help="Map and check the extract (`mapping check --sample`); send "
                                              "nothing, keep no state.")
def push(extract: Path | None, folder: Path | None, sftp_url: str | None, known_hosts: Path | None,
         sftp_key: Path | None, pattern: str, use_sql: bool, database_url: str | None, mapping_file: Path,
         url: str | None, cert: Path | None, key: Path | None, ca: Path | None,
         gateway_cert: Path | None, state_dir: Path | None, source_name: str | None, state: Path | None,
         forget: bool, rejects: Path | None, report: Path | None, batch_size: int, full: bool, dry_run: bool) -> None:
    """Push a source extract (any size) to the gateway: each row mapped and checked, bad rows to the
    reject file, the rest in signed batches; retried on network failure or Unavailable; resumed
    where it stopped when run again; only what changed since the last push is sent.

    The source is EXTRACT, or for a scheduled run --folder DIR, --sftp URL or --sql (the mapping's
    query on --database-url). One run at a time per state directory: another is refused (exit 3).

    Exit codes: 0 every row sent (or unchanged), 1 some rows rejected (the reject file says why),
    2 usage or a mapping that cannot be used, 3 could not run or was stopped (SIGTERM, SIGINT: the
    batch in flight is finished and the state saved; run again to resume). With --folder or --sftp,
    the worst of the files' codes."""
    from connectors import mapping as mapping_mod
    from connectors import push as push_mod
    from connectors import scheduled, sources

    given = [name for name, value in (("EXTRACT", extract), ("--folder", folder), ("--sftp", sftp_url),
                                      ("--sql", use_sql)) if value]
    if len(given) != 1:
        raise click.UsageError("give one source: EXTRACT, --folder DIR, --sftp URL or --sql"
                               + (f" (not {' and '.join(given)})" if given else ""))
    if sftp_url and not (known_hosts and sftp_key):
        raise click.UsageError("--sftp needs --known-hosts (the server's host key: never accepted on first use) "
                               "and --sftp-key (the key that signs in)")
    if sftp_url:
        try:
            scheduled.parse_sftp_url(sftp_url)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    if use_sql and not database_url:
        raise click.UsageError("--sql needs --database-url (or CONTACTGATE_SOURCE_DATABASE_URL)")
    try:
        m = mapping_mod.load(mapping_file)
    except mapping_mod.MappingError as exc:
        raise click.UsageError(str(exc)) from None
    if use_sql:
        if m.source != "sql":
            raise click.UsageError(f"--sql reads the query of a `source: sql` mapping; {mapping_file} is a "
                                   f"{m.source} mapping")
        extract = sources.SqlQuery(database_url, m.sql_options["query"])
        source_name = source_name or extract.name
    if dry_run:
        from connectors import check

        if folder or sftp_url:
            raise click.UsageError("--dry-run checks one extract (EXTRACT or --sql), not a folder")
        try:
            result = check.check_sample(m, extract)
        except sources.ExtractError as exc:
            raise click.UsageError(str(exc)) from None
        for line in check.sample_lines(result):
            click.echo(line)
        click.echo("dry run: nothing was sent, no state kept")
        sys.exit(1 if check.has_problems(result) else 0)
    for name, value in (("--url", url), ("--cert", cert), ("--key", key)):
        if not value:
            raise click.UsageError(f"{name} is needed (or --dry-run)")
    ca = ca or cert.parent / "ca.pem"
    gateway_cert = gateway_cert or cert.parent / "gateway-signing.pem"
    for needed in (ca, gateway_cert):
        if not needed.exists():
            raise click.UsageError(f"{needed} not found (give --ca and --gateway-cert)")
    try:
        organisation = push_mod.organisation_of(cert)
    except ValueError as exc:
        raise click.UsageError(f"{cert} is not a PEM certificate ({exc})") from None
    state_dir = state.parent if state is not None else (state_dir or push_mod.default_state_dir())
    try:
        lock = scheduled.RunLock(state_dir)
    except scheduled.Locked as exc:
        click.echo(str(exc))
        sys.exit(3)
    except OSError as exc:
        click.echo(f"push could not run: the state cannot be kept in {state_dir}: {exc}", err=True)
        sys.exit(3)
    stop = _StopOnSignal()
    try:
        run = _Run(m, mapping_file, url, cert, key, ca, gateway_cert, state_dir, state, forget, batch_size, full, stop)
        run.organisation = organisation
        if folder or sftp_url:
            drop = (scheduled.FolderDrop(folder, pattern) if folder
                    else scheduled.SftpDrop(sftp_url, known_hosts, sftp_key, pattern))
            code = _push_drop(run, drop, report, source_name)
        else:
            code, entry = run.one(extract, source_name, rejects or (None if use_sql else
                                                                      extract.with_name(extract.name + ".rejects.csv")))
            if report is not None and ("counts" in entry or "error" in entry):
                _write_report(report, {key: value for key, value in entry.items() if key != "exit_code"})
    finally:
        stop.restore()
        lock.release()
    sys.exit(code)


def _write_report(path: Path, report: dict) -> None:
    import json

    path.write_text(json.dumps(report, indent=2) + "\n")


def _push_drop(run: "_Run", drop, report: Path | None, source_name: str | None) -> int:
    """Each new file of ``drop`` pushed in name order and moved by its exit code; the worst code."""
    from connectors import push as push_mod
    from connectors import scheduled

    entries: list[dict] = []
    worst = 0
    try:
        with drop, scheduled.work_folder(run.state_dir) as work:
            names = drop.new_files()
            if not names:
                click.echo(f"{drop.description}: no new files")
            for name in names:
                click.echo(f"{drop.description}: {name}")
                try:
                    local = drop.fetch(name, Path(work))
                except (OSError, scheduled.DropError) as exc:
                    click.echo(f"{name}: could not be fetched ({exc}): the run stops", err=True)
                    worst = 3
                    break
                rejects = Path(work) / f"{name}.rejects.csv"
                shown = str(drop.source_path(name))  # the source, for its state: digits as # (as for EXTRACT)
                # the source, for its state: a date in the file's name as # (as for EXTRACT), never a folder's digits
                folder_part, slash, file_name = shown.rpartition("/")
                code, entry = run.one(local, source_name or folder_part + slash + push_mod.dated_name(file_name),
                                      rejects, shown=shown)
                try:
                    entry["moved_to"] = drop.finish(name, code, rejects)
                except OSError as exc:  # pushed, but not moved: the next run pushes it again (unchanged rows)
                    click.echo(f"{name}: pushed but could not be moved ({exc}): the run stops", err=True)
                    entries.append({**entry, "moved_to": None})
                    worst = 3
                    break
                if entry["moved_to"]:
                    click.echo(f"{name}: moved to {entry['moved_to']}")
                if local.parent == Path(work):
                    local.unlink(missing_ok=True)
                entries.append(entry)
                worst = max(worst, code)
                if code == 3:
                    click.echo(f"{name}: left where it is; the run stops (the next run takes it first)", err=True)
                    break
    except scheduled.DropError as exc:
        click.echo(f"push could not run: {exc}")
        worst = 3
    if report is not None:
        _write_report(report, {"source": drop.description, "exit_code": worst, "files": entries})
    return worst


class _Run:
    """One push of one extract, as the command runs it: (exit code, report entry)."""

    def __init__(self, m, mapping_file, url, cert, key, ca, gateway_cert, state_dir, state, forget, batch_size, full,
                 stop):
        self.m, self.mapping_file, self.url, self.cert, self.key = m, mapping_file, url, cert, key
        self.ca, self.gateway_cert, self.state_dir, self.state = ca, gateway_cert, state_dir, state
        self.forget, self.batch_size, self.full, self.stop = forget, batch_size, full, stop
        self._client = None
        self.organisation: str = ""

    def client(self):
        if self._client is None:
            from connectors.client import GatewayClient

            self._client = GatewayClient(self.url, cert=self.cert, key=self.key, ca=self.ca,
                                         gateway_signing_cert=self.gateway_cert)
        return self._client

    def one(self, extract, source_name: str | None, rejects: Path | None, shown: str | None = None) -> tuple[int, dict]:
        from connectors import push as push_mod
        from connectors import sources

        shown = shown or str(extract)
        entry: dict = {"extract": shown, "mapping": str(self.mapping_file)}
        if self.stop():
            click.echo(f"push stopped ({self.stop()}) before {shown}", err=True)
            return 3, {**entry, "exit_code": 3}
        state = self.state
        if state is None:
            try:
                state = push_mod.state_path(self.state_dir, source_name or push_mod.source_name_of(extract),
                                            self.organisation, self.url)
                old = push_mod.adopt_state_beside(self.mapping_file, state)
            except OSError as exc:
                click.echo(f"push could not run: the state cannot be kept: {exc}", err=True)
                return 3, {**entry, "exit_code": 3, "error": f"the state cannot be kept: {exc}"}
            if old is not None:
                click.echo(f"moved the state file {old} to {state} (the state is now kept per source, organisation "
                           f"and gateway, not beside the mapping)")
        if rejects is None:  # a SQL source: beside the state
            rejects = state.with_suffix(".rejects.csv")
        entry["rejects"] = str(rejects)
        try:
            summary = push_mod.push_file(self.client(), extract, self.m, state=state, rejects=rejects,
                                         batch_size=self.batch_size, full=self.full,
                                         progress=_progress_printer(sys.stderr), stop=self.stop, forget=self.forget,
                                         source_named=source_name is not None)
        except (sources.ExtractError, push_mod.OtherSource) as exc:
            click.echo(f"Error: {exc}", err=True)
            return 2, {**entry, "exit_code": 2, "error": str(exc)}
        except push_mod.PushError as exc:
            click.echo(f"push stopped: {exc}", err=True)
            done = exc.summary.report() if getattr(exc, "summary", None) is not None else {}
            return 3, {**entry, **done, "exit_code": 3, "error": str(exc)}
        except Exception as exc:  # a scheduler acts on the exit code: anything unforeseen is "could not run"
            click.echo(f"push could not run: {exc.__class__.__name__}: {exc}", err=True)
            return 3, {**entry, "exit_code": 3, "error": f"{exc.__class__.__name__}: {exc}"}
        if self.forget:  # said once done: push_file forgets under the state's lock
            click.echo(f"forgot what was sent to {self.url} from this source ({state}): every row is sent again")
        for line in summary.lines():
            click.echo(line)
        entry.update(summary.report())
        code = 0
        if summary.stopped:
            click.echo(f"push stopped ({summary.stopped}): the batch in flight was finished and the state saved; "
                       f"run the push again to resume", err=True)
            code = 3
        elif summary.any_rejected():
            click.echo(f"rejected rows are in {rejects}, each with who rejected it and why")
            code = 1
        entry["exit_code"] = code
        return code, entry


class _StopOnSignal:
    """SIGTERM and SIGINT ask the push to stop at the next row or batch (it is asked: ``stop()``)."""

    def __init__(self):
        import signal

        self.reason: str | None = None
        self._previous = {}
        for number in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[number] = signal.signal(number, self._handle)
            except ValueError:  # not the main thread (an embedding program): no handler
                pass

    def _handle(self, number, frame) -> None:
        import signal

        self.reason = signal.Signals(number).name

    def __call__(self) -> str | None:
        return self.reason

    def restore(self) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)


@click.command("csr", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--org", "org_code", required=True, help="This organisation's code, as the officers registered it.")
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where the key (key.pem, 0600) and the request (request.csr) are written.")
@click.option("--name", "organisation_name", default=None, help="This organisation's name (put in the request).")
@click.option("--ec", "use_ec", is_flag=True, help="An ECDSA P-256 key (default RSA-2048, which every SOAP stack reads).")
@click.option("--force", is_flag=True, help="Replace key.pem and request.csr if they exist.")
def csr(org_code: str, out_dir: Path, organisation_name: str | None, use_ec: bool, force: bool) -> None:
    """Make this organisation's key on this machine and a certificate signing request for it.

    Send request.csr (never key.pem) to the accreditation officers; when a second officer has
    approved it they send back cert.pem, ca.pem and gateway-signing.pem: put them beside key.pem."""
    from connectors import credentials

    try:
        made = credentials.make_request(org_code, out_dir, key_type="ec" if use_ec else "rsa",
                                        organisation_name=organisation_name, force=force)
    except credentials.CredentialError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {made.key_path} (the private key: keep it here, 0600) and {made.request_path}")
    click.echo(f"send {made.request_path} to the accreditation officers; the key's sha256 is "
               f"{made.public_key_sha256} (they see the same on the proposal: compare it by telephone)")


@click.command("unbundle", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Where key.pem (0600), cert.pem and ca.pem are written.")
@click.option("--passphrase-stdin", is_flag=True, help="Read the passphrase from standard input (else asked for).")
@click.option("--force", is_flag=True, help="Replace the files if they exist.")
def unbundle(bundle: Path, out_dir: Path, passphrase_stdin: bool, force: bool) -> None:
    """Open the encrypted bundle (bundle.p12) of a key the gateway made for this organisation, with
    the passphrase the officers gave by another channel."""
    from connectors import credentials

    if passphrase_stdin:
        passphrase = click.get_text_stream("stdin").readline().rstrip("\r\n")
    else:
        passphrase = click.prompt("passphrase", hide_input=True)
    try:
        written = credentials.unbundle(bundle, passphrase, out_dir, force=force)
    except credentials.CredentialError as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(f"wrote {', '.join(str(p) for p in written)}; put gateway-signing.pem beside them")


@click.command("wsdl", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The directory the WSDL and the XSD are written to (made if missing).")
@click.option("--url", default="https://localhost:8443", show_default=True,
              help="The gateway's address, written as the service's soap:address in the WSDL.")
def wsdl(out_dir: Path, url: str) -> None:
    """Write the WSDL (with its WS-SecurityPolicy) and the XSD it imports (side by side: its relative
    schemaLocation finds it), for tools that cannot present a client certificate to fetch them
    (wsimport, python -m zeep, svcutil). They are the files this release speaks; a gateway serves the
    same at /soap/v1?wsdl, and without a client certificate where it runs a metadata listener."""
    import contactgate_schemas as schemas
    from contactgate_wire.soap import SOAP_PATH

    try:
        address = schemas.service_address(url)
    except ValueError as exc:
        raise click.UsageError(f"--url {exc}") from None
    out_dir.mkdir(parents=True, exist_ok=True)
    wsdl_path, xsd_path = out_dir / schemas.WSDL_NAME, out_dir / schemas.XSD_NAME
    wsdl_path.write_bytes(schemas.wsdl_for(address + SOAP_PATH))
    xsd_path.write_bytes(schemas.read(schemas.XSD_NAME))
    click.echo(f"wrote {wsdl_path} and {xsd_path}")


@click.group("mapping", context_settings={"help_option_names": ["-h", "--help"]})
def mapping() -> None:
    """Write and check a mapping before anything is sent: `mapping fields` lists what it may target,
    `mapping check` finds every error at once and judges a sample extract."""


@mapping.command("fields")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def mapping_fields(as_json: bool) -> None:
    """Every field of the canonical model a mapping may target: its type, whether it is required
    (within an optional group such as an Involvement: in each one sent), the codes it takes."""
    import json

    from connectors import check

    listed = check.fields()
    if as_json:
        click.echo(json.dumps(listed, indent=2))
        return
    for line in check.field_lines(listed):
        click.echo(line)


@mapping.command("check")
@click.argument("mapping_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--sample", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An extract (or a part of one) to judge: completeness, identifiers, dates, duplicates.")
@click.option("--json", "as_json", is_flag=True, help="As JSON.")
def mapping_check(mapping_file: Path, sample: Path | None, as_json: bool) -> None:
    """Check a mapping (every error at once, with its line and a suggestion) and, with --sample,
    what pushing that extract would send. Nothing leaves this machine.

    Exit codes: 0 no problem, 1 the sample has problems (rejected rows, invalid identifiers, dates
    outside childhood, likely duplicates), 2 the mapping or the sample cannot be used."""
    import json

    from connectors import check
    from connectors import mapping as mapping_mod
    from connectors import sources

    out: dict = {"mapping": str(mapping_file), "errors": []}

    def finish(code: int) -> None:
        if as_json:
            click.echo(json.dumps(out, indent=2))
        sys.exit(code)

    try:
        m = mapping_mod.load(mapping_file)
    except mapping_mod.MappingError as exc:
        errors = getattr(exc, "errors", [exc])
        out["errors"] = [{"line": e.line, "message": str(e).split(": ", 1)[-1] if e.line else str(e)} for e in errors]
        if not as_json:
            for e in errors:
                click.echo(str(e))
            click.echo(f"{len(errors)} error(s) in {mapping_file}")
        finish(2)
    if sample is not None:
        try:
            missing = check.missing_columns(m, sample)
            if missing:
                out["errors"] = missing
                if not as_json:
                    for e in missing:
                        click.echo(f"{mapping_file}:{e['line']}: {e['message']}")
                finish(2)
            out["sample"] = check.check_sample(m, sample)
        except sources.ExtractError as exc:
            out["errors"] = [{"line": None, "message": str(exc)}]
            if not as_json:
                click.echo(str(exc))
            finish(2)
        if not as_json:
            for line in check.sample_lines(out["sample"]):
                click.echo(line)
    if not as_json:
        click.echo(f"{mapping_file}: the mapping is usable" + (
            "; the sample has problems (above)" if sample is not None and check.has_problems(out["sample"]) else ""))
    finish(1 if sample is not None and check.has_problems(out["sample"]) else 0)


@click.group("contactgate", context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """ContactGate for a connecting organisation (the contactgate-client distribution): make the
    organisation's key and certificate request, push extracts to the gateway. The gateway's own
    `contactgate` lists these commands too."""


main.add_command(push)
main.add_command(csr)
main.add_command(unbundle)
main.add_command(wsdl)


main.add_command(mapping)


from connectors.cli_load import load_prepare  # noqa: E402 (its own module: the bulk load's file)

main.add_command(load_prepare)
