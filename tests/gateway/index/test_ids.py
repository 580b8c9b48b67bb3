from gateway.index import ids


def test_new_ids_are_valid_distinct_and_grouped():
    made = {ids.new_child_id() for _ in range(2000)}
    assert len(made) == 2000
    for child_id in list(made)[:200]:
        assert ids.is_valid(child_id)
        assert len(child_id) == 19 and child_id.count("-") == 3


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
