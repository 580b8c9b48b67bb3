"""WS-Security signing and verification, shared by the gateway and the client SDK."""
