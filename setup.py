"""For tools that still look for setup.py. Everything about the distribution (name, version,
dependencies, packages, entry points) is in pyproject.toml, the one place it is said."""

from setuptools import setup

setup()
