"""A small synthetic population for TRAINING the shipped model only (never for measuring it: the
benchmark in bench/ has its own generator, seeds and corruption mix).

Households of 1-4 children (some twins) share a family name and an address; each child is held
by one or two "organisations", each copy corrupted independently with the kinds of error real
feeds carry. Names are drawn from the lists below with Zipf(1) frequencies: the lists are common
UK names chosen by hand and the frequencies are an assumption, not statistics, so the
u-probabilities for names in the shipped model reflect this assumption (re-estimate them from the
index's own records with ``python -m gateway.index.linkage.train`` once it holds real data).

Output records have the stored-record shape (``ChildUpdate.record()``) plus ``_truth`` (the
child) and ``_source`` (the organisation), which the engine ignores.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import string

from gateway.index.linkage.person import _nickname_groups

SURNAMES = """smith jones williams taylor brown davies evans wilson thomas johnson roberts robinson
thompson wright walker white edwards hughes green hall lewis harris clarke patel jackson wood turner
martin cooper hill ward morris moore clark lee king baker harrison morgan allen james scott phillips
watson davis parker price bennett young griffiths mitchell kelly cook carter richardson bailey collins
bell shaw murphy miller cox richards khan marshall anderson simpson ellis adams singh begum wilkinson
foster chapman powell webb rogers gray mason ali hussain campbell matthews owen palmer holmes mills
barnes knight lloyd butler russell barker fisher stevens jenkins murray dixon harvey ahmed nowak
kowalski o'brien smith-jones mcdonald o'connor fitzgerald nguyen chen wang okafor mensah adeyemi
rahman chowdhury kaur sharma gill""".split() + ["da silva", "van der berg"]

GIRLS = """olivia amelia isla ava mia ivy lily isabella rosie sophia grace willow freya florence emily ella
poppy evie elsie charlotte evelyn sienna sofia daisy phoebe sophie alice harper matilda ruby emilia
maya millie isabelle eva luna jessica elizabeth chloe thea aria imogen esme margaret katherine eleanor
amira fatima aisha zara hannah zoe maryam ayesha olga anna julia natalia priya leah""".split()
BOYS = """muhammad noah oliver george leo arthur oscar harry archie jack henry charlie freddie theodore
thomas finley theo alfie jacob william isaac tommy joshua james lucas alexander arlo roman edward
max mohammed teddy elijah luca ethan adam joseph samuel benjamin daniel reuben jude harrison louie
albert frederick sebastian alfred john robert michael ibrahim yusuf omar jakub oskar krzysztof
ravi arjun kwame chidi""".split()

# A long tail, as real surnames have (in England and Wales the 100 commonest cover only about a
# fifth of people): English-looking compounds of common surname parts.
_PREFIXES = """ash black brad brook bur cal cart chad cran dal down east fair field grant green hart
hay hol horn kings lang lock mar mid mill nor oak pen ray red ridge ros rush stan stock thorn
wad wel west whit wood""".split()
_SUFFIXES = "ley ton field worth ford wood ham by well more bridge shaw combe dale hurst man son croft land lock".split()
SURNAME_TAIL = [p + s for p in _PREFIXES for s in _SUFFIXES]

STREETS = ["High Street", "Station Road", "Church Lane", "Park Avenue", "Victoria Road", "Green Lane",
           "Manor Road", "Church Street", "Park Road", "Queens Road", "New Road", "Mill Lane",
           "Kings Road", "School Lane", "The Crescent", "Grange Road", "Springfield Road", "York Road"]
_ABBREVIATE = {"Street": "St", "Road": "Rd", "Lane": "Ln", "Avenue": "Ave", "Crescent": "Cres"}


def _zipf_weights(n: int, exponent: float = 1.0) -> list[float]:
    return [1.0 / (rank + 1) ** exponent for rank in range(n)]


def _mixture(head: list[str], tail: list[str], head_share: float, exponent: float):
    """Names and weights: ``head`` Zipf-distributed with ``head_share`` of the mass, ``tail`` uniform."""
    zipf = _zipf_weights(len(head), exponent)
    total = sum(zipf)
    names = head + [t for t in tail if t not in head]
    weights = [head_share * w / total for w in zipf] + [(1 - head_share) / (len(names) - len(head))] * (len(names) - len(head))
    return names, weights


def _nhs(rng: random.Random) -> str:
    while True:
        digits = [rng.randrange(10) for _ in range(9)]
        check = 11 - sum(d * w for d, w in zip(digits, range(10, 1, -1))) % 11
        check = 0 if check == 11 else check
        if check != 10:
            return "".join(map(str, digits)) + str(check)


def _upn(rng: random.Random) -> str:
    from stdnum.gb import upn
    body = str(rng.choice(sorted(upn._la_numbers))) + "".join(str(rng.randrange(10)) for _ in range(8))
    body += rng.choice("0123456789") if rng.random() < 0.5 else rng.choice("ABCDEFGHJKLMNPQRTUVWXYZ")
    return upn.calc_check_digit(body) + body


def _postcode(rng: random.Random) -> str:
    area = rng.choice(["B", "M", "L", "S", "LS", "BS", "NG", "CF", "SW", "SE", "N", "E", "GL", "OX", "CB"])
    return f"{area}{rng.randrange(1, 30)} {rng.randrange(1, 10)}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"


def _nearby_postcode(rng: random.Random, postcode: str) -> str:
    outward, inward = postcode.split(" ")
    return f"{outward} {inward[0]}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}"


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 3:
        return text
    i = rng.randrange(1, len(text))
    kind = rng.random()
    if kind < 0.3:
        return text[:i] + rng.choice(string.ascii_lowercase) + text[i + 1:]
    if kind < 0.55:
        return text[:i] + text[i + 1:]
    if kind < 0.8 and i < len(text) - 1:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text[:i] + rng.choice(string.ascii_lowercase) + text[i:]


def _nicknames_of(name: str) -> list[str]:
    groups = _nickname_groups()
    return sorted(n for n, g in groups.items() if name in g and n != name and len(n) > 2)


def _dob_error(rng: random.Random, d: dt.date) -> dt.date:
    """One error in a date of birth: a day/month swap, the year one off, a day or month a little
    off, two adjacent digits transposed, the day and month replaced, or the whole date replaced
    (the last three added for issue 23: real feeds carry them, and a model that never saw them
    learns that they never happen)."""
    kind = rng.random()
    try:
        if kind < 0.25 and d.day <= 12 and d.day != d.month:
            return d.replace(day=d.month, month=d.day)
        if kind < 0.45:
            return d.replace(year=d.year + rng.choice((-1, 1)))
        if kind < 0.6:
            return d.replace(day=max(1, min(28, d.day + rng.choice((-1, 1, -10, 10)))))
        if kind < 0.68:
            return d.replace(month=max(1, min(12, d.month + rng.choice((-1, 1)))))
        if kind < 0.8:
            text = d.strftime("%Y%m%d")
            i = rng.randrange(2, 7)
            swapped = text[:i] + text[i + 1] + text[i] + text[i + 2:]
            return dt.date(int(swapped[:4]), int(swapped[4:6]), int(swapped[6:]))
        if kind < 0.9:
            return d.replace(month=rng.randrange(1, 13), day=rng.randrange(1, 29))
        return d + dt.timedelta(days=rng.choice((-1, 1)) * rng.randrange(30, 3 * 365))
    except ValueError:
        return d + dt.timedelta(days=1)


def generate(n_children: int, seed: int, error_rate: float = 0.12) -> list[dict]:
    """About ``n_children`` children, each held by one or two sources; returns the records."""
    rng = random.Random(seed)
    # Shares and exponents are assumptions chosen to give name-agreement rates of the order of
    # real ones (sum of squared frequencies ~0.005 for surnames, ~0.02 for given names).
    surnames, surname_w = _mixture(SURNAMES, SURNAME_TAIL, 0.45, 1.0)
    formal = sorted({f for groups in _nickname_groups().values() for f in groups if len(f) > 2})
    girls, girl_w = _mixture(GIRLS, formal[0::2], 0.75, 0.7)
    boys, boy_w = _mixture(BOYS, formal[1::2], 0.75, 0.7)
    records: list[dict] = []
    child = 0
    while child < n_children:
        family = rng.choices(surnames, surname_w)[0]
        postcode = _postcode(rng)
        street = f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"
        size = rng.choice((1, 1, 2, 2, 2, 3, 3, 4))
        birthdays = []
        for _ in range(size):
            if birthdays and rng.random() < 0.06:
                birthdays.append(birthdays[-1])  # twins
            else:
                birthdays.append(dt.date(2007, 1, 1) + dt.timedelta(days=rng.randrange(18 * 365)))
        used_first: set[str] = set()
        for dob in birthdays:
            gender = rng.choice(("female", "male"))
            pool, weights = (girls, girl_w) if gender == "female" else (boys, boy_w)
            given = [rng.choices(pool, weights)[0]]
            # Brothers and sisters rarely share a first name (assumed: 1 in 50 may, as with a
            # family tradition of Muhammad or Mary as every child's first name).
            while given[0] in used_first and rng.random() > 0.02:
                given = [rng.choices(pool, weights)[0]]
            used_first.add(given[0])
            if rng.random() < 0.5:
                given.append(rng.choices(pool, weights)[0])
            truth = {"family_name": family, "given_names": given, "date_of_birth": dob, "gender": gender,
                     "postcode": postcode, "line": street,
                     "nhs": _nhs(rng) if rng.random() < 0.5 else None,
                     "upn": _upn(rng) if rng.random() < 0.4 else None}
            held_by = rng.choice((("A",), ("B",), ("A", "B"), ("A", "B"), ("A", "B"), ("A", "B")))
            for source in held_by:
                records.append(_corrupt(rng, truth, error_rate, f"c{seed}-{child}", source, surnames))
            child += 1
    return records


def _corrupt(rng: random.Random, truth: dict, rate: float, uid: str, source: str, surnames) -> dict:
    family = truth["family_name"]
    given = list(truth["given_names"])
    previous: list[str] = []
    dob = truth["date_of_birth"]
    gender = truth["gender"]
    postcode, line = truth["postcode"], truth["line"]
    nhs = truth["nhs"] if rng.random() < 0.7 else None
    upn = truth["upn"] if rng.random() < 0.7 else None
    preferred = None
    if rng.random() < rate:
        given[0] = _typo(rng, given[0])
    if rng.random() < rate:
        nicks = _nicknames_of(given[0])
        if nicks:
            if rng.random() < 0.5:
                given[0] = rng.choice(nicks)
            else:
                preferred = rng.choice(nicks)
    if rng.random() < rate:
        family = _typo(rng, family)
    if rng.random() < rate / 3:
        previous = [family]
        family = rng.choice(surnames)
    if rng.random() < rate / 4:
        family, given = given[0], [family] + given[1:]
    elif rng.random() < rate / 6:  # a first name recorded as another name altogether (issue 23)
        given[0] = rng.choice(GIRLS if truth["gender"] == "female" else BOYS)
    if rng.random() < rate:
        dob = _dob_error(rng, dob)
    if rng.random() < rate / 2:
        gender = "unknown"
    if rng.random() < rate:
        postcode = _nearby_postcode(rng, postcode) if rng.random() < 0.3 else _postcode(rng)
        line = f"{rng.randrange(1, 200)} {rng.choice(STREETS)}"
    elif rng.random() < rate / 3:  # the same address written otherwise: a house number or street slip
        number, street = line.split(" ", 1)
        line = f"{_typo(rng, number) if len(number) > 1 and rng.random() < 0.5 else number} {_typo(rng, street)}"
    if rng.random() < rate:
        for full, short in _ABBREVIATE.items():
            line = line.replace(full, short)
    if rng.random() < rate / 2:
        postcode = None
    if nhs and rng.random() < rate / 4:
        nhs = nhs[:-1] + str((int(nhs[-1]) + 1) % 10)  # a mistyped number: invalid, ignored
    record = {
        "identity": {
            "family_name": family.title(), "given_names": [g.title() for g in given],
            "date_of_birth": dob.isoformat(), "gender": gender, "preferred_name": preferred.title() if preferred else None,
            "previous_names": [p.title() for p in previous], "nhs_number": nhs, "pupil_number": upn,
        },
        "address": {"lines": [line], "postcode": postcode or "", "town": None} if postcode or line else None,
        "carers": [], "educational_setting": None, "gp_practice": None,
        "_truth": uid, "_source": source,
    }
    return record


def main(argv=None) -> int:
    import argparse
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=20000)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--error-rate", type=float, default=0.12)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    with open(args.out, "w", encoding="utf-8") as fh:
        for record in generate(args.children, args.seed, args.error_rate):
            fh.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
