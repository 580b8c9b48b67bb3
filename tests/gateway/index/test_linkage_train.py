"""Estimating the model: EM recovers known m/u, and the trainer writes a usable model.json."""

from __future__ import annotations

import json
import random
from collections import Counter

from gateway.index import linkage
from gateway.index.linkage import train
from gateway.index.linkage.scoring import FIELD_NAMES, FIELDS, Model
from gateway.index.linkage.synthetic import generate

TRUE_PRIOR = 0.2


def _true_parameters():
    m, u = {}, {}
    for name, levels in FIELDS.items():
        n = len(levels)
        # matches mostly agree, non-matches mostly disagree; every level has some mass
        m[name] = [0.7] + [0.3 / (n - 1)] * (n - 1)
        u[name] = [0.02] * (n - 1) + [1 - 0.02 * (n - 1)]
    return m, u


def _sample(m, u, prior, n, rng):
    patterns = Counter()
    for _ in range(n):
        table = m if rng.random() < prior else u
        pattern = tuple(rng.choices(range(len(FIELDS[name])), table[name])[0] for name in FIELD_NAMES)
        patterns[pattern] += 1
    return patterns


def test_em_recovers_m_u_and_prior_from_synthetic_vectors():
    rng = random.Random(5)
    m_true, u_true = _true_parameters()
    patterns = _sample(m_true, u_true, TRUE_PRIOR, 40_000, rng)
    start_u = {name: [1 / len(levels)] * len(levels) for name, levels in FIELDS.items()}
    m, u, prior, iterations = train.expectation_maximisation(patterns, train.initial_m(), start_u, 0.5, fix_u=False)
    assert abs(prior - TRUE_PRIOR) < 0.01
    for name in FIELD_NAMES:
        for estimated, true in zip(m[name], m_true[name]):
            assert abs(estimated - true) < 0.03, (name, m[name], m_true[name])
        for estimated, true in zip(u[name], u_true[name]):
            assert abs(estimated - true) < 0.02, (name, u[name], u_true[name])


def test_em_with_u_fixed_recovers_m():
    rng = random.Random(6)
    m_true, u_true = _true_parameters()
    patterns = _sample(m_true, u_true, 0.05, 60_000, rng)
    m, _, prior, _ = train.expectation_maximisation(patterns, train.initial_m(), u_true, 0.3)
    assert abs(prior - 0.05) < 0.01
    assert all(abs(a - b) < 0.05 for name in FIELD_NAMES for a, b in zip(m[name], m_true[name]))


def test_probabilities_are_clamped_away_from_zero_and_one():
    patterns = Counter({(0, 0, 0, 0, 0, 0, 0): 100})
    frequencies = train.level_frequencies(patterns)
    assert all(0 < p < 1 for levels in frequencies.values() for p in levels)


def test_trainer_writes_a_model_that_links_its_own_population(tmp_path):
    records = generate(1500, seed=99)
    evaluation = generate(800, seed=98)
    records_file, eval_file, out = tmp_path / "train.jsonl", tmp_path / "eval.jsonl", tmp_path / "model.json"
    records_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    eval_file.write_text("".join(json.dumps(r) + "\n" for r in evaluation))
    assert train.main(["--records", str(records_file), "--out", str(out), "--evaluate", str(eval_file),
                       "--random-pairs", "20000", "--version", "test-1"]) == 0
    doc = json.loads(out.read_text())
    assert doc["version"] == "test-1" and doc["estimation"]["seed"]
    model = Model.from_dict(doc)
    for name in FIELD_NAMES:
        assert all(0 < p < 1 for p in model.m[name] + model.u[name])
    # agreement is evidence for, disagreement against
    assert model.bits["dob"][0] > 5 and model.bits["dob"][-1] < 0
    assert model.bits["family"][0] > 3 and model.bits["family"][-1] < 0
    # the m it learnt without labels is close to the labelled count
    labelled = doc["estimation"]["labelled_check"]["m"]
    assert abs(doc["fields"]["dob"]["exact"]["m"] - labelled["dob"]["exact"]) < 0.1
    # (looser: twins in the same-date rule pull m(given exact) down by ~0.1 on a set this small)
    assert abs(doc["fields"]["given"]["exact"]["m"] - labelled["given"]["exact"]) < 0.15
    thresholds = doc["suggested_thresholds"]
    assert 0 < thresholds["review"] < thresholds["auto_link"] < 1


def test_shipped_model_records_how_it_was_estimated():
    doc = linkage.default_model().raw
    assert doc["version"] and doc["date"]
    assert {"method", "seed", "random_pairs_for_u", "training_rules"} <= set(doc["estimation"])
    assert set(doc["fields"]) == set(FIELDS)
