"""Linkage models as versions: trained from the index, kept in the gateway's home, put in use by two
officers, and checked before every load.

- ``<home>/linkage/model-<version>.json`` (0600): a model `contactgate linkage train` estimated from
  the index's own records. Its name-frequency table is drawn from the index, so it is sealed under
  the data keys (``term_frequencies: {"sealed": ...}``) like every other value taken from it: no
  name from the index is written in clear. The shipped ``model.json`` (package data) is a version
  too, under its own ``version``.
- The model in use is the one named by the latest *approved* ``linkage_model`` proposal (gateway.
  trust.registry: one officer proposes with `linkage use VERSION`, a second approves), which
  records its SHA-256; with none approved, the shipped model. A model that is missing, unreadable,
  out of range or whose SHA-256 is not the approved one is never used: the gateway does not start,
  and a running process that meets it at a reload links nothing (every SubmitUpdates and FindChild
  is answered Unavailable) until it is put right.
- `check` bounds and checks a model document: the JSON (size, nesting, no NaN or duplicate keys)
  and every probability the scorer reads, each in (0, 1).

``InUse`` is the process's model: read from the database at most every ``CHECK_S`` seconds (one
indexed query), loaded and checked only when the approved version changes, and re-checked from
the file every ``RECHECK_S``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
import weakref
from importlib import resources
from pathlib import Path

from gateway.index import linkage_home
from gateway.index.linkage.scoring import FIELDS, Model

#: The proposal kind that puts a model in use (gateway.trust.registry).
PROPOSAL_KIND = "linkage_model"
#: A model file larger than this is refused unread (the shipped one is ~60 KB; a national index's
#: sealed name table may reach a few MB).
MAX_MODEL_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 12
MAX_NAME_CHARS = 200
VERSION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
#: The seal's associated data: a sealed table opens only as a model's name-frequency table.
TF_CONTEXT = "linkage_model:term_frequencies"
#: How often a process asks the database which model is approved, and re-reads its file.
CHECK_S = 2.0
RECHECK_S = 600.0


class ModelError(Exception):
    """A model file that is malformed, out of range, missing, or not the one approved (the message
    says which and where)."""


class ModelUnavailable(ModelError):
    """The model in use cannot be loaded: nothing is linked with another one instead."""


# ---- files --------------------------------------------------------------------------------------

def directory(home: Path) -> Path:
    return Path(home) / "linkage"


def check_version(version: str) -> str:
    if not isinstance(version, str) or not VERSION_RE.match(version):
        raise ModelError(f"a model version is 1-64 letters, digits, '.', '_' or '-' (starting with a letter or "
                         f"digit), not {str(version)[:80]!r}")
    return version


def path_of(home: Path, version: str) -> Path:
    return directory(home) / f"model-{check_version(version)}.json"


def shipped_bytes() -> bytes:
    return resources.files("gateway.index.linkage").joinpath("model.json").read_bytes()


def shipped_version() -> str:
    return str(json.loads(shipped_bytes())["version"])


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_bytes(path: Path) -> bytes:
    """The file's bytes, refused unread beyond MAX_MODEL_BYTES."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_MODEL_BYTES + 1)
    except FileNotFoundError:
        raise ModelError(f"no model file {path}") from None
    except OSError as exc:
        raise ModelError(f"cannot read the model file {path}: {exc.strerror or type(exc).__name__}") from None
    if len(data) > MAX_MODEL_BYTES:
        raise ModelError(f"model file {path.name} is larger than {MAX_MODEL_BYTES} bytes: refused unread")
    return data


def bytes_of(home: Path, version: str) -> tuple[bytes, str]:
    """(the bytes, where they are) of a version: a model in the home, or the shipped one."""
    path = path_of(home, version)
    if not path.exists() and version == shipped_version():
        return shipped_bytes(), "(shipped with the gateway)"
    return read_bytes(path), str(path)


def parse(data: bytes) -> dict:
    """Bounded JSON: UTF-8, at most MAX_MODEL_BYTES and MAX_DEPTH levels, no NaN/Infinity, no key twice,
    no number too long to read."""
    if len(data) > MAX_MODEL_BYTES:
        raise ModelError(f"the model is larger than {MAX_MODEL_BYTES} bytes")

    def no_constant(name):
        raise ModelError(f"the model holds {name}, which is not a number")

    def pairs(items):
        out = {}
        for key, value in items:
            if key in out:
                raise ModelError(f"the model names {key[:80]!r} twice in one object")
            out[key] = value
        return out

    try:
        text = data.decode("utf-8")
        _check_depth(text)
        doc = json.loads(text, parse_constant=no_constant, object_pairs_hook=pairs)
    except UnicodeDecodeError:
        raise ModelError("the model is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"the model is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except ValueError:  # an integer of more digits than Python reads (sys.get_int_max_str_digits)
        raise ModelError("the model holds a number too long to read") from None
    if not isinstance(doc, dict):
        raise ModelError("the model is not a JSON object")
    return doc


def _check_depth(text: str) -> None:
    depth, in_string, escaped = 0, False, False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ModelError(f"the model nests deeper than {MAX_DEPTH} levels")
        elif char in "]}":
            depth -= 1


def _probability(value, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ModelError(f"{where} is {str(value)[:40]!r}: a probability must be a number in (0, 1)")
    if not 0.0 < float(value) < 1.0:
        raise ModelError(f"{where} is {value}: a probability must be in (0, 1), never 0 or 1")
    return float(value)


def _object(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise ModelError(f"{where} is missing or not an object")
    return value


def check(doc: dict, *, sealed_ok: bool = True) -> None:
    """Every value the scorer reads, present and in range; raises ModelError naming the first that is
    not. A sealed name table is checked once opened (`model_from`)."""
    check_version(doc.get("version"))
    _probability(doc.get("prior_match_probability"), "prior_match_probability")
    reference = doc.get("prior_reference_records", 0)
    if isinstance(reference, bool) or not isinstance(reference, int) or not 0 <= reference <= 10**9:
        raise ModelError(f"prior_reference_records is {str(reference)[:40]!r}: a count of records (0 to 10^9)")
    fields = _object(doc.get("fields"), "fields")
    for name, levels in FIELDS.items():
        spec = _object(fields.get(name), f"fields.{name}")
        for what in ("m", "u"):
            total = 0.0
            for level in levels:
                total += _probability(_object(spec.get(level), f"fields.{name}.{level}").get(what),
                                      f"fields.{name}.{level}.{what}")
            if not 0.98 <= total <= 1.02:
                raise ModelError(f"the {what}-probabilities of fields.{name} add up to {total:.4f}: a "
                                 f"distribution over the levels adds up to 1")
    household = doc.get("household")
    if household is not None:
        hfields = _object(_object(household, "household").get("fields"), "household.fields")
        for name, spec in hfields.items():
            if name not in FIELDS:
                raise ModelError(f"household.fields.{name[:40]} is not a field of the model")
            for level in FIELDS[name]:
                _probability(_object(_object(spec, f"household.fields.{name}").get(level),
                                     f"household.fields.{name}.{level}").get("u"), f"household.fields.{name}.{level}.u")
    tf = doc.get("term_frequencies")
    if tf is not None:
        tf = _object(tf, "term_frequencies")
        if "sealed" in tf:
            if not sealed_ok:
                raise ModelError("term_frequencies is sealed here where it must be open")
            if not isinstance(tf["sealed"], str):
                raise ModelError("term_frequencies.sealed is not a sealed value")
        else:
            check_term_frequencies(tf)
    thresholds = doc.get("suggested_thresholds")
    if thresholds is not None:
        _object(thresholds, "suggested_thresholds")


def check_term_frequencies(tf: dict) -> None:
    for name in ("given", "family"):
        if name not in tf:
            continue
        shares = _object(_object(tf[name], f"term_frequencies.{name}").get("shares", {}),
                         f"term_frequencies.{name}.shares")
        for value, share in shares.items():
            if len(value) > MAX_NAME_CHARS:
                raise ModelError(f"term_frequencies.{name} holds a name longer than {MAX_NAME_CHARS} characters")
            _probability(share, f"term_frequencies.{name}.shares[…]")


def seal_term_frequencies(doc: dict, vault) -> dict:
    """The document with its name-frequency table sealed (drawn from the index: names in clear would
    be values of the index on disk)."""
    tf = doc.get("term_frequencies")
    if not tf or "sealed" in tf:
        return doc
    return {**doc, "term_frequencies": {
        "sealed": vault.seal(json.dumps(tf, sort_keys=True), TF_CONTEXT),
        "note": "names held by at least min_count records of the index, with their shares, sealed under "
                "the gateway's data keys"}}


def opened(doc: dict, vault) -> dict:
    """The document with a sealed name-frequency table opened (checked as any other)."""
    tf = doc.get("term_frequencies")
    if not tf or "sealed" not in tf:
        return doc
    try:
        table = json.loads(vault.open(tf["sealed"], TF_CONTEXT))
    except Exception as exc:  # a wrong key, a damaged token, a retired key
        raise ModelError(f"the model's sealed name table cannot be opened with this gateway's data keys "
                         f"({type(exc).__name__})") from None
    if not isinstance(table, dict):
        raise ModelError("the model's sealed name table is not an object")
    check_term_frequencies(table)
    return {**doc, "term_frequencies": table}


def model_from(data: bytes, vault, version: str | None = None) -> Model:
    """A checked Model from a model file's bytes (its sealed table opened with ``vault``);
    ``version``: the version the file is kept as, which the document must state."""
    doc = parse(data)
    check(doc)
    if version is not None and doc["version"] != version:
        raise ModelError(f"the file of version {version} holds a model that calls itself {doc['version']!r}")
    doc = opened(doc, vault)
    try:
        return Model.from_dict(doc)
    except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
        raise ModelError(f"the model cannot be read as a linkage model ({type(exc).__name__}: {exc})") from None


def write_new(home: Path, doc: dict) -> tuple[Path, str]:
    """Stage a new version's file (0600) beside the others; refuses a version that exists. Returns
    (the staged file, its SHA-256): `files.publish` it once its audit entry is committed."""
    from gateway import files

    path = path_of(home, doc["version"])
    if path.exists() or doc["version"] == shipped_version():
        raise ModelError(f"model version {doc['version']} exists already: choose another --version")
    data = (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode("utf-8")
    check(parse(data))
    return files.stage_private(path, data), sha256(data)


def list_files(home: Path) -> list[tuple[str, Path]]:
    """(version, path) of every model file in the home, by name."""
    found = []
    for path in sorted(directory(home).glob("model-*.json")):
        version = path.name[len("model-"):-len(".json")]
        if VERSION_RE.match(version):
            found.append((version, path))
    return found


# ---- the model in use ---------------------------------------------------------------------------

def approved(conn) -> tuple[int, dict] | None:
    """(proposal id, payload) of the latest approved linkage_model proposal; None: the shipped model.
    Latest by proposal id, not by decision time (the approving host's clock): a proposal supersedes
    those pending, and only the newest may be approved (gateway.trust.registry), so the newest
    approved one is the last approval."""
    from sqlalchemy import select

    from gateway.db import proposals

    row = conn.execute(select(proposals.c.id, proposals.c.payload)
                       .where(proposals.c.kind == PROPOSAL_KIND, proposals.c.status == "approved")
                       .order_by(proposals.c.id.desc()).limit(1)).first()
    return (row.id, json.loads(row.payload)) if row else None


def load_approved(conn, home: Path | None, decision: tuple[int, dict] | None) -> Model:
    """The approved model, checked: its file's SHA-256 must be the approved one."""
    from gateway.index import sealed

    if decision is None:
        from gateway.index.linkage.scoring import default_model

        return default_model()
    proposal_id, payload = decision
    version, expected = payload.get("version"), payload.get("sha256")
    where = f"model {version} (approved in proposal {proposal_id})"
    if home is None:
        raise ModelUnavailable(f"{where} is in use, but this process has no gateway home to read it from")
    try:
        data, source = bytes_of(home, version)
    except ModelError as exc:
        raise ModelUnavailable(f"{where} cannot be loaded: {exc}; restore the file from a backup, or have "
                               f"officers put another model in use (`contactgate linkage use`)") from None
    actual = sha256(data)
    if actual != expected:
        raise ModelUnavailable(f"{where}: {source} has SHA-256 {actual}, not the approved {expected}: the file "
                               f"was changed after approval; restore it from a backup, or propose another model")
    try:
        return model_from(data, sealed.vault_of(conn), version)
    except ModelError as exc:
        raise ModelUnavailable(f"{where} cannot be used: {exc}") from None


class _State:
    def __init__(self):
        self.decision_id = -1  # never looked
        self.model: Model | None = None
        self.error: str | None = None
        self.checked = -math.inf
        self.loaded = -math.inf


class InUse:
    """The process's model in use (see the module's docstring), per database engine, read from the
    home `gateway.index.linkage_home` names. Thread-safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._generation = -1
        self._states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    @property
    def home(self) -> Path | None:
        return linkage_home.home()

    def configure(self, home: Path | None) -> None:
        """The home whose model files this process reads (the gateway's). Without one, a process uses
        the shipped model, and fails closed if the database names another."""
        linkage_home.configure(home)

    def model(self, conn, at: float | None = None) -> Model:
        now = time.monotonic() if at is None else at
        with self._lock:
            if self._generation != linkage_home.generation():
                self._generation, self._states = linkage_home.generation(), weakref.WeakKeyDictionary()
            state = self._states.get(conn.engine)
            if state is None:
                state = self._states[conn.engine] = _State()
            if now - state.checked >= CHECK_S:
                state.checked = now
                decision = approved(conn)
                decision_id = decision[0] if decision else 0
                if decision_id != state.decision_id or now - state.loaded >= RECHECK_S:
                    try:
                        state.model, state.error = load_approved(conn, self.home, decision), None
                    except ModelUnavailable as exc:
                        state.model, state.error = None, str(exc)
                    state.decision_id, state.loaded = decision_id, now
            if state.error is not None:
                raise ModelUnavailable(state.error)
            return state.model


IN_USE = InUse()
