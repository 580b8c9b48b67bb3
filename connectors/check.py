"""The local data-quality check (`contactgate mapping check MAPPING --sample EXTRACT`, `push
--dry-run`): what a push of this extract would send, judged before anything leaves the organisation.

- **rejected rows**: each with its line and the mapping's reason (what the reject file would say);
- **completeness**: for each target field, the share of rows that give it a value;
- **invalid identifiers**: NHS numbers failing their check digit and unique pupil numbers failing
  their check letter (python-stdnum, as the gateway checks them), where the mapping did not already
  reject the row for it;
- **dates outside childhood**: a date of birth in the future, or 18 years ago or more (the index holds
  no adults: the gateway would reject the row);
- **likely duplicates**: pairs of rows that seem to be one child entered twice, judged by the
  gateway's own linkage engine in process (`gateway.index.within_extract`: its blocking keys, its
  model, its rules; no gateway is called), each with the engine's ``decision`` (``link``: the
  gateway would answer ``matched``; ``review``: a data-quality officer would be asked) and
  ``score`` (the match probability). The engine is found through the entry point
  ``contactgate.linkage``, which the full ``contactgate`` distribution declares: this package may
  not import the gateway. Installed without it (the ``contactgate-client`` wheel), pairs are judged
  by a simple scorer instead, said in the output (``scorer``): the same valid NHS number; or the
  same date of birth (or its day and month swapped) with family and first given names alike
  (difflib ratio, weighted 0.6 family, 0.4 given; 0.85 or more).

`fields()` lists every target field of the canonical model (`contactgate mapping fields`).
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections import defaultdict
from pathlib import Path

from connectors import model, sources
from connectors.mapping import Mapping, RowError
from connectors.transforms import suggestion

SCORER = ("simple (the gateway's linkage engine is not in the client): the same valid NHS number, or the same "
          "date of birth (or day and month swapped) with family and first given names alike (difflib, >= 0.85)")
DUPLICATE_THRESHOLD = 0.85
MAX_LISTED = 100  # of each kind of finding, in the report (the counts are whole)
MAX_BLOCK = 200  # rows compared with each other under one date of birth or one NHS number (the rest: sampled, or counted)
MAX_JUDGED = 200_000  # rows judged for duplicates (memory: a few hundred bytes a row); the rest are counted


def fields() -> list[dict]:
    """Every target a mapping may name: ``field`` (``Carer[n].Name``: n from 0), ``type``, ``required``
    (within ``within``, the optional group it belongs to: required in each one sent), ``repeating``
    (a list of values), ``values`` (the model's codes)."""
    out = []

    def walk(node: model.Node, prefix: str, within: str | None) -> None:
        for child in node.children:
            optional_group = child.leaf is None and (child.repeating or not child.required)
            name = child.name + ("[n]" if child.repeating and child.leaf is None else "")
            if child.leaf is not None:
                leaf = child.leaf
                out.append({"field": prefix + name, "type": leaf.kind, "required": leaf.required,
                            "within": within, "repeating": leaf.repeating, "values": list(leaf.enumeration)})
            else:
                walk(child, f"{prefix}{name}.", (prefix + child.name).replace("[n]", "") if optional_group else within)

    walk(model.tree(), "", None)
    return out


def field_lines(listed: list[dict]) -> list[str]:
    width = max(len(f["field"]) for f in listed)
    lines = []
    for f in listed:
        kind = f["type"] + (" (list)" if f["repeating"] else "")
        need = ("required" + (f" (in each {f['within']} sent)" if f["within"] else "")) if f["required"] else "optional"
        values = f"  one of: {', '.join(f['values'])}" if f["values"] else ""
        lines.append(f"{f['field']:<{width}}  {kind:<12} {need}{values}")
    return lines


def outside_childhood(born: dt.date, today: dt.date) -> str | None:
    """Why a date of birth is not a child's on ``today``, or None."""
    if born > today:
        return "date of birth is in the future"
    try:
        eighteenth = born.replace(year=born.year + 18)
    except ValueError:  # 29 February
        eighteenth = dt.date(born.year + 18, 3, 1)
    if today >= eighteenth:
        return "18 or over: the index holds no adults (the gateway rejects the row)"
    return None


def _letters(text: str) -> str:
    return re.sub(r"[^a-z]", "", text.casefold())


def _alike(a: dict, b: dict) -> float:
    family = difflib.SequenceMatcher(None, a["family"], b["family"]).ratio()
    given = difflib.SequenceMatcher(None, a["given"], b["given"]).ratio()
    return 0.6 * family + 0.4 * given


def _duplicates(people: list[dict]) -> tuple[list[dict], int]:
    """(the pairs found, how many more pairs share an NHS number beyond the first MAX_BLOCK rows
    of each number: counted, not listed, so a placeholder number on every row stays linear)."""
    pairs: dict[tuple[int, int], dict] = {}
    more = 0
    by_nhs, by_birth = defaultdict(list), defaultdict(list)
    for index, person in enumerate(people):
        if person["nhs"]:
            by_nhs[person["nhs"]].append(index)
        if person["born"]:
            by_birth[person["born"]].append(index)
    for indexes in by_nhs.values():
        if len(indexes) > MAX_BLOCK:
            more += len(indexes) * (len(indexes) - 1) // 2 - MAX_BLOCK * (MAX_BLOCK - 1) // 2
        for i, a in enumerate(indexes[:MAX_BLOCK]):
            for b in indexes[i + 1:MAX_BLOCK]:
                pairs[(a, b)] = {"score": 1.0, "why": "the same NHS number"}
    for born, indexes in by_birth.items():
        swapped = born[:5] + born[8:10] + "-" + born[5:7] if int(born[8:10]) <= 12 else None
        group = indexes + (by_birth.get(swapped, []) if swapped and swapped != born else [])
        for i, a in enumerate(group[:MAX_BLOCK]):
            for b in group[i + 1:MAX_BLOCK]:
                key = (min(a, b), max(a, b))
                if a == b or key in pairs:
                    continue
                pa, pb = people[a], people[b]
                if pa["nhs"] and pb["nhs"] and pa["nhs"] != pb["nhs"]:
                    continue  # two valid, different NHS numbers: two children
                score = _alike(pa, pb)
                if score >= DUPLICATE_THRESHOLD:
                    pairs[key] = {"score": round(score, 2), "why": "names alike, the same date of birth"
                                  if pa["born"] == pb["born"] else "names alike, day and month of birth swapped"}
    return [{"lines": [people[a]["line"], people[b]["line"]],
             "source_record_ids": [people[a]["srid"], people[b]["srid"]], **found}
            for (a, b), found in sorted(pairs.items())], more


LINKAGE_ENTRY_POINTS = "contactgate.linkage"


def linkage_engine():
    """The gateway's linkage engine for one extract (an object with ``add(line, source_record_id,
    record)`` and ``result()``: `gateway.index.within_extract.ExtractLinkage`), found through the
    entry point group ``contactgate.linkage``; None when only the client is installed. Declared but
    failing to load (the gateway's packages missing, or broken): `EngineUnavailable`, saying why."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=LINKAGE_ENTRY_POINTS):
        if entry.name == "extract":
            try:
                return entry.load()()
            except Exception as exc:  # noqa: BLE001 - any failure: the simple scorer judges, and says why
                return EngineUnavailable(f"{type(exc).__name__}: {exc}"[:300])
    return None


class EngineUnavailable:
    """The entry point is declared but its engine could not be loaded: ``why``."""

    def __init__(self, why: str):
        self.why = why


def check_sample(m: Mapping, extract: Path | str, today: dt.date | None = None, *, engine=None,
                 simple: bool = False) -> dict:
    """The data-quality report of ``extract`` read with ``m`` (nothing is sent). Duplicates are
    judged by ``engine`` (default: `linkage_engine()`), or by the simple scorer when there is none
    or ``simple``."""
    from stdnum.gb import nhs, upn

    today = today or dt.date.today()
    engine = None if simple else (engine or linkage_engine())
    scorer = SCORER
    if isinstance(engine, EngineUnavailable):
        scorer = (f"simple (the gateway's linkage engine is installed but could not be loaded: {engine.why})"
                  + SCORER[SCORER.index("):") + 1:])
        engine = None
    rows = rejected = invalid_count = dates_count = 0
    rejects, invalid, dates, people = [], [], [], []
    filled: dict[str, int] = {r.target: 0 for r in m.rules}
    for line, row in sources.rows(extract, m):
        rows += 1
        for rule in m.rules:
            try:
                value = rule.apply(row)
            except RowError:
                continue
            if value not in (None, "", []):
                filled[rule.target] += 1
        srid = (row.get(m.id_rule.source) or "").strip() if m.id_rule.source else ""
        try:
            record = m.record(row)
        except RowError as exc:
            rejected += 1
            if len(rejects) < MAX_LISTED:
                rejects.append({"line": line, "source_record_id": srid, "reason": str(exc)})
            continue
        identity = record.get("Identity", {})
        number = identity.get("NhsNumber")
        if number and not nhs.is_valid(number):
            invalid_count += 1
            invalid.append({"line": line, "source_record_id": srid, "field": "Identity.NhsNumber",
                            "problem": "fails its check digit" if re.fullmatch(r"\d{10}", number) else "not 10 digits"})
        pupil = identity.get("PupilNumber")
        if pupil and not upn.is_valid(pupil):
            invalid_count += 1
            invalid.append({"line": line, "source_record_id": srid, "field": "Identity.PupilNumber",
                            "problem": "fails its check letter"})
        del invalid[MAX_LISTED:]
        born = identity.get("DateOfBirth")
        why = outside_childhood(dt.date.fromisoformat(born), today) if born else None
        if why:
            dates_count += 1
            dates.append({"line": line, "source_record_id": srid, "field": "Identity.DateOfBirth", "date": born,
                          "problem": why})
        del dates[MAX_LISTED:]
        given = identity.get("GivenName") or [""]
        if engine is not None:
            engine.add(line, srid, record)
        elif len(people) < MAX_JUDGED:
            people.append({"line": line, "srid": srid, "family": _letters(identity.get("FamilyName", "")),
                           "given": _letters(given[0]), "born": born,
                           "nhs": number if number and nhs.is_valid(number) else None})
    if engine is not None:
        found = engine.result()
        duplicates, count, judged, scorer = found["pairs"], found["count"], found["rows_judged"], found["engine"]
    else:
        duplicates, more = _duplicates(people)
        count, judged = len(duplicates) + more, len(people)
    return {"rows": rows, "rejected": rejected, "rejects": rejects,
            "completeness": {target: round(n / rows, 4) if rows else 0.0 for target, n in filled.items()},
            "invalid_identifiers": invalid[:MAX_LISTED], "invalid_identifiers_count": invalid_count,
            "dates_outside_childhood": dates[:MAX_LISTED], "dates_outside_childhood_count": dates_count,
            "likely_duplicates": duplicates[:MAX_LISTED], "likely_duplicates_count": count,
            "duplicates_rows_judged": judged, "scorer": scorer}


def missing_columns(m: Mapping, extract: Path | str) -> list[dict]:
    """The columns the mapping reads that a CSV extract does not have, each with its rule's line and
    the closest column the extract has."""
    if m.source != "csv":
        return []
    header = sources.columns(Path(extract), m)
    out = []
    for rule in (m.id_rule, *m.rules):
        for column in rule.reads:
            if column not in header:
                out.append({"line": rule.line, "message": f"{rule.target}: the extract has no column {column!r}"
                                                          f"{suggestion(column, header)}"})
    return out


def has_problems(result: dict) -> bool:
    return bool(result["rejected"] or result["invalid_identifiers_count"] or result["dates_outside_childhood_count"]
                or result["likely_duplicates_count"])


DECISIONS = {"link": "the gateway would link them (matched)", "review": "the gateway would hold them for review"}


def sample_lines(result: dict) -> list[str]:
    out = [f"rows: {result['rows']}; rejected by the mapping: {result['rejected']}"]
    out += [f"  line {r['line']} ({r['source_record_id']}): {r['reason']}" for r in result["rejects"]]
    out.append("completeness (rows giving a value):")
    width = max((len(t) for t in result["completeness"]), default=0)
    out += [f"  {target:<{width}}  {share:6.1%}" for target, share in result["completeness"].items()]
    out.append(f"invalid identifiers: {result['invalid_identifiers_count']}")
    out += [f"  line {i['line']} ({i['source_record_id']}): {i['field']} {i['problem']}"
            for i in result["invalid_identifiers"]]
    out.append(f"dates outside childhood: {result['dates_outside_childhood_count']}")
    out += [f"  line {d['line']} ({d['source_record_id']}): {d['date']}: {d['problem']}"
            for d in result["dates_outside_childhood"]]
    judged = "" if result["duplicates_rows_judged"] >= result["rows"] - result["rejected"] else (
        f", among the first {result['duplicates_rows_judged']:,} rows")
    out.append(f"likely duplicates inside the extract: {result['likely_duplicates_count']}{judged} "
               f"(scorer: {result['scorer']})")
    out += [f"  lines {d['lines'][0]} and {d['lines'][1]} ({d['source_record_ids'][0]}, {d['source_record_ids'][1]}): "
            + (f"{DECISIONS[d['decision']]}, " if d.get("decision") in DECISIONS else "")
            + f"score {d['score']}: {d['why']}" for d in result["likely_duplicates"]]
    return out
