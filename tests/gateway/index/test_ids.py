from gateway.index import ids


def test_new_ids_are_valid_distinct_and_grouped():
    made = {ids.new_child_id() for _ in range(2000)}
    assert len(made) == 2000
    for child_id in list(made)[:200]:
        assert ids.is_valid(child_id)
        assert len(child_id) == 19 and child_id.count("-") == 3


def test_every_character_is_drawn_about_equally_often_in_every_position():
    """The 15 random characters are uniform over the alphabet (no character or position favoured)."""
    from collections import Counter

    n = 6400
    payloads = [ids.new_child_id().replace("-", "")[:15] for _ in range(n)]
    expected = n / len(ids.ALPHABET)  # 200 per character per position
    for position in range(15):
        counts = Counter(p[position] for p in payloads)
        assert set(counts) == set(ids.ALPHABET)
        chi2 = sum((counts[c] - expected) ** 2 / expected for c in ids.ALPHABET)
        assert chi2 < 80, (position, chi2)  # 31 degrees of freedom: exceeded by chance about 1 in 10^6


def test_every_single_character_error_is_caught():
    child_id = ids.new_child_id()
    raw = child_id.replace("-", "")
    for position in range(16):
        for char in ids.ALPHABET:
            if char == raw[position]:
                continue
            mutated = raw[:position] + char + raw[position + 1:]
            assert ids.normalise(mutated) is None


def test_every_adjacent_transposition_but_0_z_is_caught():
    for _ in range(50):
        raw = ids.new_child_id().replace("-", "")
        for i in range(15):
            if raw[i] == raw[i + 1] or {raw[i], raw[i + 1]} == {"0", "Z"}:
                continue
            swapped = raw[:i] + raw[i + 1] + raw[i] + raw[i + 2:]
            assert ids.normalise(swapped) is None


def test_normalise_accepts_case_spacing_and_confusables():
    child_id = ids.new_child_id()
    sloppy = child_id.lower().replace("-", " ")
    assert ids.normalise(sloppy) == child_id
    assert ids.normalise("not an id") is None
    assert ids.normalise("") is None
