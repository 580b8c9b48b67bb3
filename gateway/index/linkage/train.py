"""Estimate the model's m- and u-probabilities (Fellegi–Sunter, conditional independence).

    python -m gateway.index.linkage.train --records FILE.jsonl --out model.json

``FILE.jsonl`` holds one stored record (``ChildUpdate.record()`` shape) a line. As splink does:

1. u-probabilities from random pairs of records (almost all random pairs are different children),
   with add-one smoothing per level;
2. m-probabilities by expectation–maximisation, u held fixed, over the pairs of each training
   rule (pairs agreeing exactly on the date of birth; on family and first given name), leaving
   out the rule's own fields — among such pairs non-matches are close to random on the other
   fields, which is what fixing u assumes. Over all blocked pairs they are not: siblings agree on
   family name and address, and EM then learns "same household" instead of "same child";
3. u of the personal fields between siblings (pairs at the same address) by EM with m fixed;
4. the prior (the probability that two random records are the same child) from the count of
   blocked pairs agreeing exactly on given name, family name and birth date, less chance
   agreements, over the m of that agreement, divided by the number of pairs.

Records may carry ``_truth`` (a child id, as synthetic data does): then the m a labelled count
gives is written beside the EM estimate for comparison (never used). ``--evaluate FILE ...``
(labelled sets with two sources, ``_source`` A and B, seeded apart from the training set) suggests
the auto-link and review thresholds from record-level precision and recall on the first file, as
the store decides (best candidate per incoming record), and reports the others beside them.

Pure Python (no numpy): comparison vectors are counted per distinct pattern, so EM costs
patterns x fields per iteration, not pairs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import random
import sys
import time
from collections import Counter, defaultdict

from gateway.index.linkage.blocking import blocking_keys
from gateway.index.linkage.person import person_from_record
from gateway.index.linkage.scoring import (
    FIELD_NAMES, FIELDS, HOUSEHOLD_FIELDS, LOCATION, MISSING, SAME_ADDRESS, Model, compare, comparison_vector,
)

#: Probabilities are kept in [CLAMP, 1 - CLAMP]: no level is ever proof either way.
CLAMP = 1e-5
#: A name enters the term-frequency table once this many records carry it: rarer names are left
#: out (they weigh the field's average), so the table never lists a name few children share.
TF_MIN_COUNT = 10
#: Blocks larger than this are skipped when forming training pairs (a bucket this size is a key
#: too broad to be useful; the store has its own bound).
MAX_BLOCK = 200


def load_records(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def blocked_pairs(persons, max_block: int = MAX_BLOCK) -> set[tuple[int, int]]:
    buckets: dict[str, list[int]] = defaultdict(list)
    for index, person in enumerate(persons):
        for key in blocking_keys(person):
            buckets[key].append(index)
    pairs: set[tuple[int, int]] = set()
    for members in buckets.values():
        if len(members) > max_block:
            continue
        for i in range(len(members)):
            for j in range(i + 1, len(members)):
                pairs.add((members[i], members[j]))
    return pairs


def term_frequencies(persons, min_count: int = TF_MIN_COUNT) -> dict:
    """Each name's share of the records (the family name as recorded, the first given name), for
    the term-frequency adjustment (scoring.TF_MAX_ADJUSTMENT_BITS): from the records trained on,
    which for ``contactgate linkage train`` are the index's own."""
    out = {}
    for field, values in (("family", [p.family_names[0] for p in persons if p.family_names]),
                          ("given", [p.given_first[0] for p in persons if p.given_first])):
        counts = Counter(values)
        total = max(1, len(values))
        out[field] = {"records": len(values), "min_count": min_count,
                      "shares": {name: round(count / total, 7) for name, count in counts.most_common()
                                 if count >= min_count}}
    return out


def random_pairs(n_records: int, n_pairs: int, rng: random.Random) -> list[tuple[int, int]]:
    pairs = []
    while len(pairs) < n_pairs:
        i, j = rng.randrange(n_records), rng.randrange(n_records)
        if i != j:
            pairs.append((i, j))
    return pairs


def _clamp(p: float) -> float:
    return min(1 - CLAMP, max(CLAMP, p))


def level_frequencies(patterns: Counter, weight=None) -> dict[str, list[float]]:
    """Per field, the (weighted) share of each level among the pairs where the field is present,
    add-one smoothed."""
    out = {}
    for f, name in enumerate(FIELD_NAMES):
        counts = [1.0] * len(FIELDS[name])
        for pattern, count in patterns.items():
            level = pattern[f]
            if level != MISSING:
                counts[level] += count * (weight(pattern) if weight else 1.0)
        total = sum(counts)
        out[name] = [_clamp(c / total) for c in counts]
    return out


def expectation_maximisation(patterns: Counter, m: dict, u: dict, prior: float, *, fix_u: bool = True,
                             fix_m: bool = False, ignore: frozenset = frozenset(), u_household: dict | None = None,
                             max_iterations: int = 500, tolerance: float = 1e-7):
    """EM for the two-class mixture over comparison patterns. Returns (m, u, prior, iterations).

    Fields in ``ignore`` are left out of the likelihood and keep their m/u (a training rule's own
    fields: they agree by construction). ``fix_m`` and ``fix_u`` hold those probabilities fixed
    (``fix_m=True, fix_u=True`` estimates only the prior). With ``u_household``, pairs at the same
    address are scored against it for the household fields (as ``compare`` does)."""
    if ignore:
        drop = [f for f, name in enumerate(FIELD_NAMES) if name in ignore]
        reduced = Counter()
        for pattern, count in patterns.items():
            pattern = list(pattern)
            for f in drop:
                pattern[f] = MISSING
            reduced[tuple(pattern)] += count
        patterns = reduced
    items = list(patterns.items())
    total = sum(patterns.values())
    m = {k: list(v) for k, v in m.items()}
    u = {k: list(v) for k, v in u.items()}
    iterations = 0
    for iterations in range(1, max_iterations + 1):
        posteriors = []
        for pattern, count in items:
            pm, pu = prior, 1 - prior
            table = u_household if u_household and pattern[LOCATION] in SAME_ADDRESS else u
            for f, name in enumerate(FIELD_NAMES):
                level = pattern[f]
                if level != MISSING:
                    pm *= m[name][level]
                    pu *= table[name][level]
            posteriors.append(pm / (pm + pu) if pm + pu > 0 else 0.0)
        new_prior = sum(g * c for g, (_, c) in zip(posteriors, items)) / total
        new_m, new_u = {}, {}
        for f, name in enumerate(FIELD_NAMES):
            sm = [0.0] * len(FIELDS[name])
            su = [0.0] * len(FIELDS[name])
            for g, (pattern, count) in zip(posteriors, items):
                level = pattern[f]
                if level != MISSING:
                    sm[level] += g * count
                    su[level] += (1 - g) * count
            tm, tu = sum(sm), sum(su)
            new_m[name] = m[name] if fix_m else [_clamp(x / tm) if tm else m[name][i] for i, x in enumerate(sm)]
            new_u[name] = u[name] if fix_u else [_clamp(x / tu) if tu else u[name][i] for i, x in enumerate(su)]
        change = abs(new_prior - prior) + max(
            abs(a - b) for name in FIELD_NAMES for a, b in zip(new_m[name], m[name]))
        m, u, prior = new_m, new_u, _clamp(new_prior)
        if change < tolerance:
            break
    return m, u, prior, iterations


def initial_m() -> dict[str, list[float]]:
    """EM's starting point: most matches agree exactly. Only a start; EM moves it."""
    out = {}
    for name, levels in FIELDS.items():
        n = len(levels)
        out[name] = [0.8] + [0.2 / (n - 1)] * (n - 1)
    return out


def document(m, u, prior, *, version, estimation: dict, thresholds: dict | None = None) -> dict:
    fields = {}
    for name, levels in FIELDS.items():
        fields[name] = {
            level: {"m": round(m[name][i], 7), "u": round(u[name][i], 7),
                    "bits": round(math.log2(m[name][i] / u[name][i]), 3)}
            for i, level in enumerate(levels)
        }
        fields[name]["missing"] = {"bits": 0.0, "note": "either side absent: neutral"}
    return {"version": version, "date": dt.date.today().isoformat(), "estimation": estimation,
            "prior_match_probability": round(prior, 7), "fields": fields,
            "suggested_thresholds": thresholds or {}}


def _truth_patterns(records, persons, pairs):
    matches, non_matches = Counter(), Counter()
    for i, j in pairs:
        vector, _ = comparison_vector(persons[i], persons[j])
        (matches if records[i].get("_truth") == records[j].get("_truth") else non_matches)[vector] += 1
    return matches, non_matches


#: The review band may give up this much recall (true matches linked or reviewed) against the
#: lowest threshold tried, in exchange for a far smaller queue.
LOWER_RECALL_SLACK = 0.0025


def suggest_thresholds(model: Model, path: str) -> dict:
    """Thresholds from a labelled evaluation set with two sources, as the store decides: source A
    is the index, each record of source B is compared with the A records it shares a blocking key
    with, and its best candidate is linked when at or above the upper threshold (never when the
    pair is twin-flagged). Per threshold: precision and recall of automatic links; per lower
    threshold: the share of B records with a true match in A whose true match is linked or sent
    to review, and the share of all B records sent to review."""
    records = load_records(path)
    held = [r for r in records if r["_source"] == "A"]
    incoming = [r for r in records if r["_source"] == "B"]
    held_persons = [person_from_record(r) for r in held]
    model = model.for_index_size(len(held))
    buckets: dict[str, list[int]] = defaultdict(list)
    for index, person in enumerate(held_persons):
        for key in blocking_keys(person):
            buckets[key].append(index)
    held_truth = {r["_truth"] for r in held}
    best = []  # (probability, correct, twins, has_match)
    for record in incoming:
        person = person_from_record(record)
        candidates = {i for key in blocking_keys(person) for i in buckets.get(key, ())}
        top = None
        for i in candidates:
            c = compare(person, held_persons[i], model)
            if top is None or c.probability > top[0]:
                top = (c.probability, held[i]["_truth"] == record["_truth"], c.twins)
        best.append((*(top or (0.0, False, False)), record["_truth"] in held_truth))
    with_match = sum(1 for *_, has in best if has)
    table = []
    for t in (0.5, 0.8, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9999):
        links = [(correct) for p, correct, twins, _ in best if p >= t and not twins]
        table.append({"threshold": t, "links": len(links),
                      "precision": round(sum(links) / len(links), 5) if links else 1.0,
                      "recall": round(sum(links) / with_match, 5) if with_match else 0.0})
    lower_table = []
    for t in (0.001, 0.01, 0.05, 0.1, 0.2, 0.5):
        kept = sum(1 for p, correct, _, _ in best if p >= t and correct)
        lower_table.append({"threshold": t, "true_match_linked_or_reviewed": round(kept / with_match, 5),
                            "share_at_or_above": round(sum(1 for p, *_ in best if p >= t) / len(best), 5)})
    upper = next((row["threshold"] for row in table if row["precision"] >= 0.999), 0.9999)
    floor = lower_table[0]["true_match_linked_or_reviewed"]
    lower = next(row["threshold"] for row in reversed(lower_table)
                 if row["true_match_linked_or_reviewed"] >= floor - LOWER_RECALL_SLACK)
    return {"auto_link": upper, "review": lower, "evaluation_set": path.rsplit("/", 1)[-1],
            "held_records": len(held), "incoming_records": len(incoming), "incoming_with_a_match": with_match,
            "upper_rule": "lowest threshold whose automatic links have precision >= 0.999 (best candidate "
                          "per incoming record; twin-flagged pairs never linked)",
            "lower_rule": f"highest threshold whose share of true matches linked or in review is within "
                          f"{LOWER_RECALL_SLACK} of that at the lowest threshold tried (review costs people)",
            "auto_link_table": table, "review_table": lower_table}


#: Training rules (as splink's "blocking rules for training"): pairs agreeing exactly on the rule's
#: fields, among which non-matches are close to random on every other field; EM on each rule
#: estimates m for the fields the rule does not fix, with u held at its random-pair value.
#: The second rule also leaves location out: children sharing a family and a first name at one
#: address are often brothers (two Muhammads), and EM would count them as one child at two birth
#: dates, inflating m(dob disagree); and gender, which a given name all but fixes. Each field's m
#: comes from the rules that estimate it.
TRAINING_RULES = {
    "same_date_of_birth": (lambda p: p.date_of_birth.isoformat() if p.date_of_birth else None, frozenset({"dob"})),
    "same_family_and_first_given": (
        lambda p: f"{p.family_names[0]}|{p.given_first[0]}" if p.family_names and p.given_first else None,
        frozenset({"given", "family", "location", "gender"})),
}
#: A rule's group larger than this is sampled down to it (bounds pairs per group at ~1,800).
MAX_RULE_GROUP = 60


def rule_pairs(persons, key, rng: random.Random) -> list[tuple[int, int]]:
    groups: dict[str, list[int]] = defaultdict(list)
    for index, person in enumerate(persons):
        value = key(person)
        if value is not None:
            groups[value].append(index)
    pairs = []
    for members in groups.values():
        if len(members) > MAX_RULE_GROUP:
            members = rng.sample(members, MAX_RULE_GROUP)
        pairs.extend((members[i], members[j]) for i in range(len(members)) for j in range(i + 1, len(members)))
    return pairs


def train(records, *, seed: int, random_pair_count: int, version: str, source: str,
          evaluate: str | list[str] | None = None, log=print) -> dict:
    started = time.time()
    rng = random.Random(seed)
    persons = [person_from_record(r) for r in records]
    random_patterns = Counter(comparison_vector(persons[i], persons[j])[0]
                              for i, j in random_pairs(len(persons), random_pair_count, rng))
    u = level_frequencies(random_patterns)
    estimates: dict[str, list[list[float]]] = defaultdict(list)
    rules_report = {}
    for rule, (key, fixed) in TRAINING_RULES.items():
        pairs = rule_pairs(persons, key, rng)
        patterns = Counter(comparison_vector(persons[i], persons[j])[0] for i, j in pairs)
        m, _, prior, iterations = expectation_maximisation(patterns, initial_m(), u, 0.1, ignore=fixed)
        log(f"rule {rule}: {len(pairs)} pairs, EM {iterations} iterations, in-rule prior {prior:.4f}")
        rules_report[rule] = {"pairs": len(pairs), "em_iterations": iterations, "in_rule_prior": round(prior, 5),
                              "fields_estimated": [f for f in FIELD_NAMES if f not in fixed]}
        for name in FIELD_NAMES:
            if name not in fixed:
                estimates[name].append(m[name])
    m = {name: [sum(v[i] for v in estimates[name]) / len(estimates[name]) for i in range(len(FIELDS[name]))]
         for name in FIELD_NAMES}
    # The household: pairs at the same address (postcode and first line), where non-matches are
    # siblings; EM with m fixed estimates their u for the personal fields.
    pairs = rule_pairs(persons, lambda p: f"{p.postcode}|{p.address_line}" if p.postcode and p.address_line else None, rng)
    patterns = Counter(comparison_vector(persons[i], persons[j])[0] for i, j in pairs)
    _, u_sibling, household_prior, iterations = expectation_maximisation(
        patterns, m, u, 0.5, fix_m=True, fix_u=False, ignore=frozenset({"location"}))
    u_household = {name: (u_sibling[name] if name in HOUSEHOLD_FIELDS else u[name]) for name in FIELD_NAMES}
    household = {
        "note": "u-probabilities of the personal fields between different children at the same address "
                "(siblings), by EM with m fixed over pairs sharing postcode and first line",
        "pairs": len(pairs), "em_iterations": iterations, "in_rule_prior": round(household_prior, 5),
        "fields": {name: {lvl: {"u": round(u_sibling[name][i], 7)} for i, lvl in enumerate(FIELDS[name])}
                   for name in HOUSEHOLD_FIELDS},
    }
    log(f"household: {len(pairs)} pairs, EM {iterations} iterations, in-rule prior {household_prior:.4f}")
    # The prior: the probability that two records, drawn at random, are the same child. (Not the
    # share among blocked candidates: blocking already used names, birth date and postcode, and
    # the random-pair u would count that evidence a second time.) EM cannot give it with u from
    # random pairs; instead count the blocked pairs agreeing exactly on given, family and birth
    # date, remove the coincidences u predicts, and divide by the m of that agreement.
    pairs = blocked_pairs(persons)
    vectors = [comparison_vector(persons[i], persons[j])[0] for i, j in pairs]
    exact_all = sum(1 for v in vectors if v[0] == 0 and v[1] == 0 and v[2] == 0)
    n = len(persons)
    all_pairs = n * (n - 1) / 2
    coincidences = u["given"][0] * u["family"][0] * u["dob"][0] * all_pairs
    matches = max(1.0, exact_all - coincidences) / (m["given"][0] * m["family"][0] * m["dob"][0])
    prior = _clamp(matches / all_pairs)
    log(f"{len(records)} records, {len(pairs)} blocked pairs, {exact_all} agree on given+family+dob "
        f"(~{coincidences:.0f} by chance): ~{matches:.0f} matches, prior {prior:.3g}")
    estimation = {
        "method": "Fellegi-Sunter, conditional independence, as splink trains it: u from random pairs; "
                  "m by EM over the pairs of each training rule, with u fixed and the rule's own fields "
                  "left out, averaged over rules; u of the personal fields at the same address (siblings) by EM with m fixed; prior = estimated "
                  "matches / blocked pairs (see prior_method)",
        "prior_method": "matches = (blocked pairs agreeing exactly on given, family and date of birth - those "
                        "expected by chance from u) / (m_given_exact * m_family_exact * m_dob_exact)",
        "training_data": source, "records": len(records), "random_pairs_for_u": random_pair_count,
        "training_rules": rules_report, "blocked_pairs": len(pairs),
        "estimated_matches": round(matches), "exact_given_family_dob_pairs": exact_all,
        "seed": seed, "smoothing": f"add-one per level; probabilities clamped to [{CLAMP}, 1-{CLAMP}]",
        "prior": "probability that two records drawn at random are the same child, for an index of "
                 "prior_reference_records records; Model.for_index_size(n) rescales it to n records",
        "seconds": round(time.time() - started, 1),
    }
    if records and "_truth" in records[0]:
        true_pairs, _ = _truth_patterns(records, persons, pairs)
        true_m = level_frequencies(true_pairs)
        estimation["labelled_check"] = {
            "note": "m from the labelled true pairs among blocked pairs (not used by the model)",
            "true_prior": round(sum(true_pairs.values()) / max(1, len(pairs)), 5),
            "m": {name: {lvl: round(true_m[name][i], 4) for i, lvl in enumerate(FIELDS[name])} for name in FIELDS},
        }
    doc = document(m, u, prior, version=version, estimation=estimation)
    doc["prior_reference_records"] = n
    doc["household"] = household
    doc["term_frequencies"] = term_frequencies(persons)
    if evaluate:
        files = [evaluate] if isinstance(evaluate, str) else list(evaluate)
        doc["suggested_thresholds"] = suggest_thresholds(Model.from_dict(doc), files[0])
        doc["other_evaluations"] = [
            {key: value for key, value in suggest_thresholds(Model.from_dict(doc), path).items()
             if key not in ("auto_link", "review", "upper_rule", "lower_rule")}
            for path in files[1:]]
    return doc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description="Estimate the linkage model's m/u by EM.")
    parser.add_argument("--records", required=True, help="JSONL of stored records")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=20261122)
    parser.add_argument("--random-pairs", type=int, default=300_000)
    parser.add_argument("--version", default=None)
    parser.add_argument("--evaluate", nargs="+", help="labelled JSONL files (with _truth, _source A/B): "
                        "thresholds are suggested on the first, the others are reported beside them")
    args = parser.parse_args(argv)
    records = load_records(args.records)
    version = args.version or f"em-{dt.date.today().isoformat()}"
    doc = train(records, seed=args.seed, random_pair_count=args.random_pairs,
                version=version, source=args.records.rsplit("/", 1)[-1], evaluate=args.evaluate,
                log=lambda msg: print(msg, file=sys.stderr))
    with open(args.out, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1)
        fh.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
