"""Step 3: the request element must conform to schemas/contactgate.xsd (closed content: anything
the contract does not name, such as case notes, is refused)."""

from __future__ import annotations

from gateway.errors import SchemaInvalid
from gateway.pipeline.context import Exchange, Services
from gateway.soap import SOAP_ENV, q


def validate_schema(exchange: Exchange, services: Services) -> None:
    body = exchange.envelope.find(q(SOAP_ENV, "Body"))
    payload = next(child for child in body if isinstance(child.tag, str))
    schema = services.schema
    if not schema.validate(payload):
        error = schema.error_log.last_error
        message = f"line {error.line}: {error.message}" if error else "schema validation failed"
        raise SchemaInvalid(message, public_message=f"The message does not conform to the schema ({message})")
