"""Step 3: the request element must conform to schemas/contactgate.xsd (closed content: anything
the contract does not name, such as case notes, is refused)."""

from __future__ import annotations

import hashlib
import re

from contactgate_wire.faults import SchemaInvalid
from gateway.pipeline.context import Exchange, Services
from contactgate_wire.soap import SOAP_ENV, q

# libxml2 quotes the offending value in its message, and a value can be megabytes long. The
# caller is told at most this much of it (the contract's cg:Error/Message holds 1000 characters);
# the audit trail keeps a little more.
PUBLIC_REASON_CHARS = 300
AUDIT_REASON_CHARS = 2000


def validate_schema(exchange: Exchange, services: Services) -> None:
    body = exchange.envelope.find(q(SOAP_ENV, "Body"))
    payload = next(child for child in body if isinstance(child.tag, str))
    schema = services.schema
    if not schema.validate(payload):
        error = schema.error_log.last_error
        message = f"line {error.line}: {error.message}" if error else "schema validation failed"
        # The caller is shown its own value; the audit trail never holds one (it may be a name or a
        # birth date): only its length and a digest.
        raise SchemaInvalid(_shortened(without_values(message), AUDIT_REASON_CHARS), public_message=(
            f"The message does not conform to the schema ({_shortened(message, PUBLIC_REASON_CHARS)})"))


# libxml2's ways of quoting a value: "Element '{ns}X': 'v' is not a valid value …",
# "[facet 'maxLength'] The value 'v' has a length of …", "The value 'v' is not accepted by the pattern …".
_QUOTED_VALUE = re.compile(
    r"(The value |Element '[^']*': )'(.*)'(?= is not| has a length| is not accepted| is not an element)")


def without_values(message: str) -> str:
    def digest(match: re.Match) -> str:
        value = match.group(2)
        return (f"{match.group(1)}<a value of {len(value)} characters, "
                f"sha256 {hashlib.sha256(value.encode('utf-8', 'surrogatepass')).hexdigest()[:16]}>")

    return _QUOTED_VALUE.sub(digest, message)


def _shortened(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"
