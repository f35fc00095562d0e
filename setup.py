"""Packages for setuptools: every package under src/, found (never listed), plus dlrun.conf.

pyproject.toml holds everything else. dlrun.conf lives in conf/ at the top of the repository
(pyproject.toml's package-dir maps it), where a search of src/ cannot see it. hydra_plugins is a
namespace package (Hydra's plugin scan), hence the namespace-aware search.
"""

from setuptools import find_namespace_packages, setup

found = find_namespace_packages("src", exclude=["*__pycache__*"])
setup(packages=[*found, "dlrun.conf"])
