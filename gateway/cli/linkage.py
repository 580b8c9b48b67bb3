"""`contactgate linkage`: train a linkage model from the index's own records, and put a model in use
with two officers (train, use, approve, decline, list).

`train` reads every source record of the index, opened in memory only, re-estimates the model by
EM (gateway.index.linkage.train), writes it as a new version in the home (``linkage/model-
<version>.json``, its name table sealed) and prints the evaluation tables. Nothing changes what the
gateway links until a senior officer proposes the version (`use`) and a second approves it."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import time

import click

from gateway import audit
from gateway.cli.base import JSON_FLAG, CannotRun, Context, echo_json, group, pass_ctx
from gateway.cli.changes import refuse_officer, registry_call, show_proposal
from gateway.trust import registry

#: Fewer records than this say too little to estimate m and u from.
MIN_TRAINING_RECORDS = 50
#: A truth file is read up to this size (CSV, bench/truth.py's columns).
MAX_TRUTH_BYTES = 64 * 1024 * 1024


@group("linkage")
def linkage() -> None:
    """The linkage model: train one from the index, put one in use (two officers), list them."""


# ---- train ----------------------------------------------------------------------------------------

def export_records(conn) -> tuple[list[dict], list[tuple[str, str]]]:
    """Every source record the index holds, opened in memory (never written anywhere), with its
    (organisation, source record id as sent)."""
    from sqlalchemy import select

    from gateway.db import source_records
    from gateway.index import sealed

    v = sealed.vault_of(conn)
    records, ids = [], []
    query = (select(source_records.c.org_code, source_records.c.source_record_id, source_records.c.record)
             .where(source_records.c.record.is_not(None))
             .order_by(source_records.c.org_code, source_records.c.source_record_id))
    for row in conn.execute(query):
        sent_id, text = sealed.open_source(v, row.org_code, row.source_record_id, row.record)
        records.append(json.loads(text))
        ids.append((row.org_code, sent_id))
    return records, ids


def read_truth(path: str) -> dict[tuple[str, str], str]:
    """(organisation code upper-cased, record id) -> cluster id, from a truth CSV (bench/truth.py:
    record_id, cluster_id, org — here the organisation's code in the index)."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_TRUTH_BYTES + 1)
    if len(data) > MAX_TRUTH_BYTES:
        raise click.BadParameter(f"larger than {MAX_TRUTH_BYTES} bytes", param_hint="--truth")
    try:
        reader = csv.DictReader(io.StringIO(data.decode("utf-8-sig"), newline=""))
        missing = {"record_id", "cluster_id", "org"} - set(reader.fieldnames or ())
        if missing:
            raise click.BadParameter(f"the header lacks {', '.join(sorted(missing))} (columns: org = the "
                                     f"organisation's code, record_id, cluster_id)", param_hint="--truth")
        return {(row["org"].strip().upper(), row["record_id"].strip()): row["cluster_id"].strip()
                for row in reader if row.get("record_id") and row.get("cluster_id") and row.get("org")}
    except (UnicodeDecodeError, csv.Error) as exc:
        raise click.BadParameter(f"not a UTF-8 CSV ({exc})", param_hint="--truth") from None


def evaluate(records, ids, truth: dict, models: dict, upper: float, lower: float, index_size: int) -> list[dict]:
    """Pairwise precision, recall and F1 of automatic links (probability >= ``upper``, never a pair
    that looks like twins) among the labelled records, per model, over the pairs that share a
    blocking key (a true pair that shares none counts as missed); and the recall of links plus
    the review band (>= ``lower``)."""
    from collections import Counter

    from gateway.index.linkage import compare, person_from_record
    from gateway.index.linkage.train import blocked_pairs

    labelled = [(records[i], truth[(org.upper(), sent)]) for i, (org, sent) in enumerate(ids)
                if (org.upper(), sent) in truth]
    persons = [person_from_record(r) for r, _ in labelled]
    clusters = [c for _, c in labelled]
    true_pairs = sum(n * (n - 1) // 2 for n in Counter(clusters).values())
    pairs = sorted(blocked_pairs(persons))
    rows = []
    for name, model in models.items():
        sized = model.for_index_size(max(index_size, int(model.raw.get("prior_reference_records") or 0)))
        links = right = reviewed_right = reviewed = 0
        for i, j in pairs:
            c = compare(persons[i], persons[j], sized)
            same = clusters[i] == clusters[j]
            if c.probability >= upper and not c.twins:
                links += 1
                right += same
            elif c.probability >= lower:
                reviewed += 1
                reviewed_right += same
        precision = right / links if links else 1.0
        recall = right / true_pairs if true_pairs else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append({"model": name, "version": model.version, "labelled_records": len(labelled),
                     "true_pairs": true_pairs, "compared_pairs": len(pairs), "links": links,
                     "precision": round(precision, 5), "recall": round(recall, 5), "f1": round(f1, 5),
                     "review_pairs": reviewed,
                     "links_plus_review_recall": round((right + reviewed_right) / true_pairs, 5) if true_pairs else 0.0})
    return rows


def comparison_table(old, new) -> list[dict]:
    """Per field and level: m, u and the weight (bits) of the model in use and of the new one."""
    from gateway.index.linkage.scoring import FIELDS

    rows = []
    for field, levels in FIELDS.items():
        for i, level in enumerate(levels):
            rows.append({"field": field, "level": level,
                         "old_m": old.m[field][i], "old_u": old.u[field][i], "old_bits": old.bits[field][i],
                         "new_m": new.m[field][i], "new_u": new.u[field][i], "new_bits": new.bits[field][i]})
    return rows


def _print_tables(table, old, new, evaluation) -> None:
    click.echo(f"{'field':<10} {'level':<18} {'m (in use)':>10} {'u (in use)':>10} {'bits':>6}   "
               f"{'m (new)':>9} {'u (new)':>9} {'bits':>6}")
    for r in table:
        click.echo(f"{r['field']:<10} {r['level']:<18} {r['old_m']:>10.4f} {r['old_u']:>10.5f} {r['old_bits']:>6.2f}   "
                   f"{r['new_m']:>9.4f} {r['new_u']:>9.5f} {r['new_bits']:>6.2f}")
    click.echo(f"prior (two random records one child): in use {old.raw['prior_match_probability']:.3g} for "
               f"{old.raw.get('prior_reference_records', '-')} records; new {new.raw['prior_match_probability']:.3g} "
               f"for {new.raw.get('prior_reference_records', '-')} records")
    click.echo(f"name frequencies: in use {sum(len(t) for t in old.tf_bits.values())} names; "
               f"new {sum(len(t) for t in new.tf_bits.values())} names (sealed in the model file)")
    if evaluation:
        r0 = evaluation[0]
        click.echo(f"labelled: {r0['labelled_records']} records, {r0['true_pairs']} true pairs, "
                   f"{r0['compared_pairs']} pairs sharing a blocking key")
        click.echo(f"{'model':<8} {'version':<34} {'links':>7} {'precision':>9} {'recall':>7} {'F1':>7} "
                   f"{'review':>7} {'links+review recall':>20}")
        for r in evaluation:
            click.echo(f"{r['model']:<8} {r['version']:<34} {r['links']:>7} {r['precision']:>9.4f} "
                       f"{r['recall']:>7.4f} {r['f1']:>7.4f} {r['review_pairs']:>7} "
                       f"{r['links_plus_review_recall']:>20.4f}")


def _default_version(home) -> str:
    from gateway.index.linkage import versions

    today = dt.date.today().isoformat()
    taken = {v for v, _ in versions.list_files(home)}
    n = 1
    while f"{today}.index-em.{n}" in taken:
        n += 1
    return f"{today}.index-em.{n}"


@linkage.command("train")
@click.option("--version", "version", default=None,
              help="The new model's version [default: DATE.index-em.N].")
@click.option("--truth", "truth_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="A labelled CSV of records in the index (columns org = organisation code, record_id, "
                   "cluster_id): precision, recall and F1 of the model in use and the new one.")
@click.option("--random-pairs", type=click.IntRange(1000, 10_000_000), default=300_000, show_default=True,
              help="Random pairs of records u is estimated from.")
@click.option("--seed", type=int, default=20261122, show_default=True, help="Of the random pairs.")
@JSON_FLAG
@pass_ctx
def linkage_train(ctx: Context, version: str | None, truth_path: str | None, random_pairs: int, seed: int,
                  as_json: bool) -> None:
    """Estimate a new model from the index's records (opened in memory only) by EM, write it as a
    new version in the home and print the evaluation tables. It is not used until two officers put
    it in use (`linkage use`, `linkage approve`)."""
    from gateway import files
    from gateway.index import sealed
    from gateway.index.linkage import train, versions
    from gateway.index.linkage.scoring import default_model

    actor = ctx.signed_in(registry.LINKAGE_TRAIN_ROLES, action="linkage train")
    home = ctx.settings.layout.root
    try:
        version = versions.check_version(version) if version else _default_version(home)
        if versions.path_of(home, version).exists() or version == versions.shipped_version():
            raise versions.ModelError(f"model version {version} exists already: choose another --version")
    except versions.ModelError as exc:
        refuse_officer(ctx, actor, "linkage train", exc)
    truth = read_truth(truth_path) if truth_path else None
    started = time.perf_counter()
    with ctx.reader.connect() as conn:
        records, ids = export_records(conn)
        try:
            old = versions.IN_USE.model(conn)
            old_name = "in use"
        except versions.ModelUnavailable as exc:
            click.echo(f"warning: {exc}; compared with the shipped model instead", err=True)
            old, old_name = default_model(), "shipped"
        v = sealed.vault_of(conn)
    if len(records) < MIN_TRAINING_RECORDS:
        refuse_officer(ctx, actor, "linkage train", ValueError(
            f"the index holds {len(records)} records: at least {MIN_TRAINING_RECORDS} are needed to estimate a model"))
    exported_s = time.perf_counter() - started
    doc = train.train(records, seed=seed, random_pair_count=random_pairs, version=version,
                      source="the index (its source records, opened in memory)",
                      log=lambda msg: click.echo(msg, err=True))
    doc["trained"] = {"by": actor.officer_id, "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                      "records": len(records), "export_seconds": round(exported_s, 1)}
    new = versions.model_from((json.dumps(doc)).encode("utf-8"), v)  # the new model, checked, as it will load
    evaluation = []
    if truth:
        evaluation = evaluate(records, ids, truth, {old_name: old, "new": new}, ctx.settings.link_upper,
                              ctx.settings.link_lower, len(records))
    del records, ids  # nothing of the index is kept beyond this point
    try:
        staged, digest = versions.write_new(home, versions.seal_term_frequencies(doc, v))
    except versions.ModelError as exc:
        refuse_officer(ctx, actor, "linkage train", exc)
    path = versions.path_of(home, version)
    try:
        with ctx.engine.begin() as conn:
            ctx.trail.append(conn, audit.Entry(
                operation="linkage.train", outcome="done", user_id=actor.officer_id, role=actor.role_text,
                detail=f"trained model {version} sha256={digest} from {doc['trained']['records']} records of the "
                       f"index; file {path.name}"))
        files.publish(staged, path)
    except BaseException:
        staged.unlink(missing_ok=True)
        raise
    table = comparison_table(old, new)
    if as_json:
        echo_json({"version": version, "sha256": digest, "file": str(path), "records": doc["trained"]["records"],
                   "compared_with": {"model": old_name, "version": old.version}, "fields": table,
                   "evaluation": evaluation, "estimation": doc["estimation"]})
        return
    click.echo(f"model {version} written to {path} (sha256 {digest}), from {doc['trained']['records']} records")
    click.echo(f"compared with the model {old_name}: {old.version}")
    _print_tables(table, old, new, evaluation)
    click.echo(f"not in use: a senior officer proposes it with `contactgate linkage use {version}`, a second "
               f"approves it")


# ---- use, approve, decline ------------------------------------------------------------------------

def _checked_bytes(ctx: Context, version: str, conn=None) -> tuple[bytes, str]:
    """The version's bytes and where they are, checked as the gateway would load them (``conn``: the
    transaction to read the data keys through, else a new connection)."""
    from gateway.index import sealed
    from gateway.index.linkage import versions

    data, where = versions.bytes_of(ctx.settings.layout.root, version)
    if conn is not None:
        versions.model_from(data, sealed.vault_of(conn), version)
    else:
        with ctx.reader.connect() as reading:
            versions.model_from(data, sealed.vault_of(reading), version)
    return data, where


@linkage.command("use")
@click.argument("version")
@pass_ctx
def linkage_use(ctx: Context, version: str) -> None:
    """Propose putting model VERSION in use (a senior officer; a second approves with `linkage approve`).
    The model is checked first: a malformed or out-of-range one is refused and nothing changes."""
    from gateway.index.linkage import versions

    actor = ctx.signed_in(registry.LINKAGE_ROLES, action="linkage use")
    try:
        data, where = _checked_bytes(ctx, version)
    except versions.ModelError as exc:
        refuse_officer(ctx, actor, "linkage use", versions.ModelError(f"model {version[:80]} refused: {exc}"))
    with ctx.reader.connect() as conn:
        current = versions.approved(conn)
    digest = versions.sha256(data)
    in_use = current[1] if current else {"version": versions.shipped_version(),
                                          "sha256": versions.sha256(versions.shipped_bytes())}
    if in_use["version"] == version and in_use["sha256"] == digest:
        refuse_officer(ctx, actor, "linkage use", ValueError(f"model {version} is in use already"))
    payload = {"version": version, "sha256": digest, "file": where, "replaces": in_use["version"]}
    show_proposal(registry_call(ctx, registry.propose_linkage_model, actor, payload))


@linkage.command("approve")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The proposal approved.")
@pass_ctx
def linkage_approve(ctx: Context, proposal_id: int) -> None:
    """Approve putting a model in use (a second senior officer): the file must be, byte for byte, the
    one proposed. Running gateways follow within seconds."""
    from gateway.index.linkage import versions

    actor = ctx.signed_in(registry.LINKAGE_ROLES, action="linkage approve")

    def check(conn, proposal) -> None:
        version = proposal.payload["version"]
        try:
            data, where = _checked_bytes(ctx, version, conn)
        except versions.ModelError as exc:
            raise registry.RegistryError(f"model {version} refused: {exc}") from None
        if versions.sha256(data) != proposal.payload["sha256"]:
            raise registry.RegistryError(
                f"model {version} ({where}) has changed since it was proposed (sha256 {versions.sha256(data)}, "
                f"proposed {proposal.payload['sha256']}): decline it and propose it again")

    decided = registry_call(ctx, registry.decide_linkage_model, proposal_id, actor, approve=True, check=check)
    show_proposal(decided)
    click.echo(f"model {decided.payload['version']} is in use: running gateways follow within "
               f"{versions.CHECK_S:g} s (each node reads it from its own home's linkage/ directory)")


@linkage.command("decline")
@click.option("--proposal", "proposal_id", type=int, required=True, help="The proposal declined.")
@click.option("--reason", required=True, help="Why.")
@pass_ctx
def linkage_decline(ctx: Context, proposal_id: int, reason: str) -> None:
    """Decline (or withdraw) a proposal to put a model in use, with a reason."""
    actor = ctx.signed_in(registry.LINKAGE_ROLES, action="linkage decline")
    show_proposal(registry_call(ctx, registry.decide_linkage_model, proposal_id, actor, approve=False,
                                reason=reason))


# ---- list -----------------------------------------------------------------------------------------

def _trained_entries(conn) -> dict[str, dict]:
    """sha256 -> who trained it and when, from the audit chain's linkage.train entries."""
    from sqlalchemy import select

    from gateway.db import audit_log

    found = {}
    for row in conn.execute(select(audit_log.c.at, audit_log.c.user_id, audit_log.c.detail)
                            .where(audit_log.c.operation == "linkage.train").order_by(audit_log.c.seq)):
        for word in (row.detail or "").split():
            if word.startswith("sha256="):
                found[word[len("sha256="):]] = {"by": row.user_id, "at": str(row.at)}
    return found


@linkage.command("list")
@JSON_FLAG
@pass_ctx
def linkage_list(ctx: Context, as_json: bool) -> None:
    """The models: the shipped one and those in the home, which is in use, who trained, proposed and
    approved each, and proposals awaiting a second officer."""
    from gateway.index.linkage import versions

    ctx.signed_in(registry.LINKAGE_TRAIN_ROLES, action="linkage list")
    home = ctx.settings.layout.root
    with ctx.reader.connect() as conn:
        trained = _trained_entries(conn)
        decided = registry.list_proposals(conn, kinds=registry.LINKAGE_PROPOSALS, status="approved")
        pending = registry.list_proposals(conn, kinds=registry.LINKAGE_PROPOSALS)
        current = versions.approved(conn)
    shipped = versions.sha256(versions.shipped_bytes())
    rows = [{"version": versions.shipped_version(), "file": "(shipped with the gateway)", "sha256": shipped,
             "check": "ok", "trained_by": None}]
    for version, path in versions.list_files(home):
        try:
            data = versions.read_bytes(path)
            versions.check(versions.parse(data))
            problem = "ok"
        except versions.ModelError as exc:
            try:
                with open(path, "rb") as fh:
                    data = fh.read(versions.MAX_MODEL_BYTES + 1)
            except OSError:
                data = b""
            problem = f"refused: {exc}"
        digest = versions.sha256(data)
        rows.append({"version": version, "file": str(path), "sha256": digest, "check": problem,
                     "trained_by": (trained.get(digest) or {}).get("by"),
                     "trained_at": (trained.get(digest) or {}).get("at")})
    in_use = current[1] if current else {"version": versions.shipped_version(), "sha256": shipped}
    for row in rows:
        row["in_use"] = row["version"] == in_use["version"]
        if row["in_use"] and row["sha256"] != in_use["sha256"]:
            row["check"] = f"CHANGED since approval (approved sha256 {in_use['sha256']}): the gateway refuses it"
        approvals = [p for p in decided if p.payload.get("version") == row["version"]]
        row["approvals"] = [{"proposal": p.id, "proposed_by": p.proposed_by, "approved_by": p.decided_by,
                             "approved_at": str(p.decided_at), "sha256": p.payload.get("sha256")} for p in approvals]
    if as_json:
        echo_json({"models": rows, "in_use": in_use, "pending": [p.as_json() for p in pending]})
        return
    for row in rows:
        mark = "* in use" if row["in_use"] else "        "
        who = f"trained by {row['trained_by']} {row['trained_at']}" if row.get("trained_by") else ""
        click.echo(f"{mark} {row['version']:<34} {row['sha256'][:16]}…  {row['check']}  {who}".rstrip())
        for a in row["approvals"]:
            click.echo(f"           proposal {a['proposal']}: proposed by {a['proposed_by']}, approved by "
                       f"{a['approved_by']} at {a['approved_at']}")
    for p in pending:
        click.echo(f"  proposal {p.id} by {p.proposed_by}, awaiting a second senior officer: {p.summary()}")


def check_in_use(ctx: Context) -> None:
    """For `serve`: the model in use loads and is the approved one (exit 3 if not)."""
    from gateway.app import check_linkage_model
    from gateway.index.linkage import versions

    try:
        check_linkage_model(ctx.settings, ctx.engine)
    except versions.ModelUnavailable as exc:
        raise CannotRun(f"cannot start: {exc}") from None
