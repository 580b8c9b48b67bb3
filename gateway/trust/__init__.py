"""Trust: the PKI (certificates and chains) and the accreditation registry."""
