"""ContactGate: a federated integration gateway for a national children's contact index."""

__version__ = "0.1.0"
