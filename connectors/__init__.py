"""Connectors: dialect mappers from source systems to the canonical index (inbound), and the client
SDK that connecting systems use to call the gateway (outbound)."""
