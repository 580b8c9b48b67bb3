"""`contactgate audit`: verify the chain (or an export, offline), export a period, report who accessed
what, and run the misuse review rules (an auditor's commands)."""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path

import click

from gateway import audit, files
from gateway.audit.checkpoints import signing_certificates
from gateway.audit.review import RULES as REVIEW_RULES
from gateway.cli.base import CannotRun, Context, fail, group, pass_ctx
from gateway.db import reader
from gateway.trust import pki, registry


@group("audit")
def audit_group() -> None:
    """Verify the audit chain and report who accessed what."""


@audit_group.command("verify", needs_home=False)  # the database chain checks the home itself (below)
@click.option("--file", "export_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Verify an export (from `audit export`) offline instead of the database.")
@click.option("--cert", "cert_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --file: the gateway's signing certificate(s), e.g. gateway-signing.pem.")
@click.option("--checkpoints", "witnesses", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="A checkpoints file kept elsewhere (another node's, an old copy) the chain must also "
                   "hold (repeatable).")
@click.option("--full", is_flag=True,
              help="Re-hash every entry from the first, not only those after the newest signed checkpoint "
                   "(run it weekly: docs/operations.md, \"Verifying the audit trail\").")
@click.option("--export", "exports", multiple=True, type=click.Path(dir_okay=False, path_type=Path),
              help="An export (from `audit export`) whose entries the chain must still hold, checked with "
                   "the home's signing certificates first (repeatable).")
@click.pass_context
def audit_verify(click_ctx: click.Context, export_file: Path | None, cert_file: Path | None,
                 witnesses: tuple[Path, ...], full: bool, exports: tuple[Path, ...]) -> None:
    """Check the chain: exit 0 intact, 1 tampering found (naming the first bad entry, or the
    exact entries missing) or a restore that two officers have not yet acknowledged, 3 could not
    check (database, key or files unavailable), 2 usage.

    Each successful run records the head in $CONTACTGATE_HOME/audit/checkpoints, signed with the
    gateway's signing key, and in every file CONTACTGATE_CHECKPOINT_COPIES names; later runs check
    that the chain still holds every head recorded in any of them. Run it regularly (cron can tell
    tampering from an outage by the exit code).

    Without --full it re-hashes only the entries after the newest checkpoint signed with the
    gateway's signing key that still matches its entry (the whole chain when there is none), and
    checks the earlier ones only at the recorded checkpoints and exports: an edit of an earlier
    entry by someone without the audit key is found by --full (run it weekly).

    Entries lost in a restore (`contactgate restore`) are named on every run, for ever; once two
    officers have acknowledged the restore (`restore acknowledge`) they no longer make it exit 1.

    With --file EXPORT --cert gateway-signing.pem: check an export with the signing certificate
    only (no home, key or database needed), with the same exit codes."""
    if export_file is not None or cert_file is not None:
        _verify_export(export_file, cert_file)
        return
    ctx: Context = click_ctx.obj
    ctx.preflight()
    try:
        trail = ctx.trail
    except FileNotFoundError as exc:
        raise CannotRun(f"could not check: {exc}") from None
    exported = _exported_points(ctx, exports)
    result = trail.verify(ctx.engine, witnesses=witnesses, exported=exported, incremental=not full)
    if result.ok:
        if result.anchor_seq is None:
            click.echo(f"audit chain intact: {result.entries} entries (up to entry {result.head_seq})")
        else:
            click.echo(f"audit chain intact: {result.entries} entries after the signed checkpoint of entry "
                       f"{result.anchor_seq} (up to entry {result.head_seq}; the earlier ones checked at their "
                       f"checkpoints only: --full re-hashes them)")
        for gap in result.lost:
            click.echo(gap.describe())
        if result.unacknowledged:
            sys.exit(1)
        return
    where = f"at entry {result.first_bad_seq}" if result.first_bad_seq is not None else "outside the database"
    click.echo(f"audit chain BROKEN {where}: {result.problem} ({result.entries} entries verified before it)")
    sys.exit(1)


MAX_EXPORT_BYTES = 2 * 1024 ** 3


def _exported_points(ctx: Context, exports: tuple[Path, ...]) -> dict[int, tuple[str, str]]:
    """seq -> (public link, file) of every entry of the exports given, each export verified first
    with the gateway's signing certificates (current, previous and staged)."""
    from gateway.audit import export

    if not exports:
        return {}
    certificates = signing_certificates(ctx.settings.layout)
    points: dict[int, tuple[str, str]] = {}
    for path in exports:
        try:
            if path.stat().st_size > MAX_EXPORT_BYTES:
                raise CannotRun(f"could not check: {path} is larger than an export can be")
            document = json.loads(path.read_bytes())
        except OSError as exc:
            raise CannotRun(f"could not check: {exc.strerror or exc}: {exc.filename}") from None
        except ValueError:
            document = None
        result = export.verify_document(document, certificates)
        if not result.ok:
            click.echo(f"export {path} NOT intact: {result.problem}: it cannot vouch for the chain")
            sys.exit(1)
        for entry in document["entries"]:
            points[entry["seq"]] = (entry["public_hash"], str(path))
    return points


def _verify_export(export_file: Path | None, cert_file: Path | None) -> None:
    from gateway.audit import export

    if export_file is None or cert_file is None:
        fail("--file EXPORT and --cert gateway-signing.pem go together")
    try:
        certificates = pki.load_certs_pem(cert_file.read_bytes())
        data = export_file.read_bytes()
    except OSError as exc:
        raise CannotRun(f"could not check: {exc.strerror or exc}: {exc.filename}") from None
    except ValueError:
        raise CannotRun(f"could not check: {cert_file} holds no PEM certificate") from None
    try:
        document = json.loads(data)
    except ValueError:
        document = None
    result = export.verify_document(document, certificates)
    if result.ok:
        click.echo(result.summary)
        return
    where = f" at entry {result.first_bad_seq}" if result.first_bad_seq is not None else ""
    click.echo(f"export NOT intact{where}: {result.problem} ({result.entries} entries checked before it)")
    sys.exit(1)


@audit_group.command("export")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, metavar="YYYY-MM-DD",
              help="The entries from this day (UTC) on.")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="...up to the start of this day (UTC) [default: all].")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="The file to write (readable by its owner only: it names children).")
@click.option("--format", "fmt", type=click.Choice(["native", "fhir"]), default="native", show_default=True,
              help="native (verified offline by `audit verify --file`) or fhir (a FHIR R4 Bundle of "
                   "AuditEvent resources, for an audit repository).")
@click.option("--force", is_flag=True, help="Write over an existing file.")
@pass_ctx
def audit_export(ctx: Context, since, until, out: Path, fmt: str, force: bool) -> None:
    """Export the entries of a period with their chain links and the gateway's signed checkpoints,
    after verifying the chain (an auditor's command). A holder of gateway-signing.pem verifies it
    with `contactgate audit verify --file FILE --cert gateway-signing.pem`."""
    from gateway.audit import export

    actor = ctx.signed_in(("auditor",), action="audit export")
    if (out.exists() or out.is_symlink()) and not force:
        fail(f"{out} already exists: nothing was exported (--force to write over it)")
    since = since.replace(tzinfo=dt.timezone.utc)
    until = until.replace(tzinfo=dt.timezone.utc) if until else None
    try:
        trail = ctx.trail
    except FileNotFoundError as exc:
        raise CannotRun(f"could not export: {exc}") from None
    result = trail.verify(ctx.engine)
    if not result.ok:
        click.echo(f"audit chain BROKEN at entry {result.first_bad_seq}: {result.problem}: nothing was exported")
        sys.exit(1)
    signer = trail.checkpoint_signer()
    if signer is None:
        raise CannotRun("could not export: no signing key in the home (run `contactgate init`)")
    try:
        document = export.build(ctx.engine, signer, ctx.settings.layout.audit_checkpoints, result.head_seq,
                                since, until)
    except export.ExportError as exc:
        fail(str(exc))
    body = document if fmt == "native" else export.to_fhir(document)
    data = json.dumps(body, ensure_ascii=True, indent=1).encode() + b"\n"
    claims = document["export"]["claims"]
    with ctx.engine.begin() as conn:  # no audit, no export
        trail.append(conn, audit.Entry(operation="audit.export", outcome="done", user_id=actor.officer_id,
                                       role=actor.role_text, detail=(
            f"{fmt} export of entries {claims['first_seq']}..{claims['last_seq']} ({claims['count']}), "
            f"sha256 {export.digest_of(data)}")))
    files.write_private(out, data)
    click.echo(f"exported {claims['count']} entries (#{claims['first_seq']}..#{claims['last_seq']}) to {out}"
               + (f"; verify with `contactgate audit verify --file {out} --cert gateway-signing.pem`"
                  if fmt == "native" else ""))


@audit_group.command("report")
@click.option("--child", "child_id", default=None, help="Who accessed this child's record (any spelling of its id).")
@click.option("--user", "user", default=None, metavar="ORG:USER", help="What this user accessed.")
@click.option("--org", "org_code", default=None, metavar="CODE", help="Everything of one organisation.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="Only entries from this day (UTC) on.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True,
              help="table (for people: every control or direction character shown escaped), csv or json (one object a line).")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@pass_ctx
def audit_report(ctx: Context, child_id: str | None, user: str | None, org_code: str | None, since, fmt: str,
                 as_json: bool) -> None:
    """Who accessed what, when, why, and what was disclosed (an auditor's command)."""
    from gateway.audit import report
    from gateway.index import ids

    actor = ctx.signed_in(("auditor",), action="audit report")
    if sum(bool(x) for x in (child_id, user, org_code)) != 1:
        fail("give exactly one of --child ID, --user ORG:USER or --org CODE")
    since = since.replace(tzinfo=dt.timezone.utc) if since else None
    with ctx.engine.begin() as conn:  # the look-up is audited with it, as in the console
        if child_id:
            wanted = ids.normalise(child_id)
            if wanted is None:
                fail("not a child id (16 characters with a check character, e.g. 7K2M-9XD4-T1BZ-R8Q3)")
            rows = audit.report_for_child(conn, wanted, since)
        elif user:
            code, _, user_id = user.partition(":")
            if not user_id or not code:
                fail("--user takes ORG:USER")
            org = registry.get_org(conn, code.strip(), with_pending=False)
            rows = audit.report_for_user(conn, org.code if org else code.strip(), user_id, since)
        else:
            org = registry.get_org(conn, org_code.strip(), with_pending=False)
            if org is None:
                fail(f"no organisation with code {report.safe_text(org_code)!r}")
            rows = audit.report_for_org(conn, org.code, since)
        ctx.trail.append(conn, audit.Entry(
            operation="audit.report", outcome="done", user_id=actor.officer_id, role=actor.role_text,
            child_ids=[wanted] if child_id and rows else [],  # a child's report is access to who saw the child
            detail=f"{'child' if child_id else 'user' if user else 'organisation'} report: {len(rows)} entries"
                   + ("" if child_id else f" for {user or org_code}")))
    click.echo(report.render(rows, "json" if as_json else fmt), nl=False)


@audit_group.command("review")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), required=True, metavar="YYYY-MM-DD",
              help="Review the entries from this day (UTC) on.")
@click.option("--until", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="YYYY-MM-DD",
              help="...up to the start of this day (UTC) [default: now].")
@click.option("--rule", "rules", multiple=True, type=click.Choice(REVIEW_RULES),
              help="Only this rule (repeatable) [default: all].")
@click.option("--mark", "mark_id", default=None, metavar="FINDING", help="Mark this finding reviewed (needs --note).")
@click.option("--note", default=None, help="What the review found (with --mark).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a finding.")
@pass_ctx
def audit_review(ctx: Context, since, until, rules: tuple[str, ...], mark_id: str | None, note: str | None,
                 as_json: bool) -> None:
    """Find misuse: run the review rules over the trail and list the findings with their evidence
    (an auditor's command; the rules and their thresholds, in $CONTACTGATE_HOME/review.json, are in
    docs/officers.md, "Misuse review"). A finding marked reviewed shows who reviewed it and the note; new evidence makes a
    new finding. Each run and each mark is an entry in the audit chain."""
    from gateway.audit import report, review

    actor = ctx.signed_in(("auditor",), action="audit review")
    if bool(mark_id) != bool(note and note.strip()):
        fail("--mark FINDING and --note TEXT go together")
    try:
        thresholds = review.Thresholds.load(ctx.settings.layout.review_file)
    except review.ReviewConfigError as exc:
        fail(str(exc))
    since = since.replace(tzinfo=dt.timezone.utc)
    until = until.replace(tzinfo=dt.timezone.utc) if until else None
    if until is not None and until <= since:
        fail("--until must be after --since")
    # Read in a transaction of its own that takes no write lock (a month's review can take minutes,
    # and on SQLite a writing transaction would hold every audited request back meanwhile).
    with reader(ctx.engine).begin() as conn:
        findings = review.run(conn, since, thresholds, until=until, rules=rules or review.RULES)
    with ctx.engine.begin() as conn:
        if mark_id:
            finding = next((f for f in findings if f.id == mark_id.strip().lower()), None)
            if finding is None:
                fail(f"no finding {report.safe_text(mark_id)!r} in this review (run it with the same --since)")
            review.mark_reviewed(conn, ctx.trail, finding, actor.officer_id, actor.role_text, note.strip())
            click.echo(f"finding {finding.id} marked reviewed")
            return
        ctx.trail.append(conn, audit.Entry(operation="audit.review", outcome="done", user_id=actor.officer_id,
                                           role=actor.role_text, detail=f"since {since:%Y-%m-%d}"
                                           f"{f' until {until:%Y-%m-%d}' if until else ''}: {len(findings)} findings"))
    if as_json:
        for finding in findings:
            click.echo(json.dumps(finding.as_dict(), ensure_ascii=True))
        return
    if not findings:
        click.echo("no findings")
    for finding in findings:
        mark = (f"reviewed by {report.safe_text(finding.reviewed['by'])} at {finding.reviewed['at']}: "
                f"{report.safe_text(finding.reviewed['note'])}" if finding.reviewed else "NOT REVIEWED")
        shown = " ".join(f"#{seq}" for seq in finding.evidence[:20]) + (" ..." if finding.count > 20 else "")
        click.echo(f"{finding.id}  {finding.rule}  {report.safe_text(finding.subject)}  "
                   f"{report.safe_text(finding.summary)}\n    {mark}\n    evidence ({finding.count}): {shown}")
