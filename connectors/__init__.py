"""What a connecting organisation installs (the `contactgate-client` distribution): the SDK that
calls the gateway (`connectors.client`, typed answers in `connectors.results`), declarative mappings
from a source system's extract to the canonical model (`connectors.mapping`, `connectors.model`),
readers for CSV, XML and FHIR extracts (`connectors.sources`) and the resumable bulk push
(`connectors.push`, `contactgate push`). It shares only `contactgate_wire` and `contactgate_schemas`
with the gateway."""
