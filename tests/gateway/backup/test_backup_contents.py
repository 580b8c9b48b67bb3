"""What a backup takes from the home: everything a restored gateway needs to serve as it did."""

from __future__ import annotations

from types import SimpleNamespace

from gateway.backup import _HOME_MEMBER, _home_files


def test_the_linkage_models_are_backed_up_with_the_home(tmp_path):
    """The model in use is checked against its approved SHA-256 at start: a restore without the
    home's linkage/ directory would leave a gateway that refuses to serve."""
    (tmp_path / "linkage").mkdir()
    (tmp_path / "linkage" / "model-2027-01-01.index-em.1.json").write_text("{}")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "data-keys.json").write_text("{}")
    found = _home_files(SimpleNamespace(root=tmp_path))
    assert set(found) == {"linkage/model-2027-01-01.index-em.1.json", "keys/data-keys.json"}
    assert _HOME_MEMBER.fullmatch("home/linkage/model-2027-01-01.index-em.1.json")
    assert not _HOME_MEMBER.fullmatch("home/linkage/../keys/x")
