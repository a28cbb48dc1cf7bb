"""Minimal setup.py for Beam's `--setup_file` (Dataflow worker packaging).

Beam builds an sdist of the project with `python setup.py sdist` and installs it on every worker, so the
workers get `pipeline/` and `transforms/` and the pinned dependencies. Everything (name, version, the
two packages, the `==` pins) is read from pyproject.toml by setuptools: this file only gives Beam the
entry point it asks for. The Flex Template image (deploy/dataflow/Dockerfile) installs the same with
constraints.txt, so a worker built from it needs nothing from PyPI at start.
"""

from setuptools import setup

setup()
