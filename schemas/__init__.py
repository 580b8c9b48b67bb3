"""Access to the wire-format files in schemas/ (packaged as `contactgate_schemas`)."""

from __future__ import annotations

from importlib import resources

XSD_NAME = "contactgate.xsd"
WSDL_NAME = "contactgate.wsdl"


def read(name: str) -> bytes:
    return resources.files("contactgate_schemas").joinpath(name).read_bytes()


def wsdl_for(address: str) -> bytes:
    """The WSDL with the service address pointing at where it was fetched from."""
    return read(WSDL_NAME).replace(b"https://localhost:8443/soap/v1", address.encode())
