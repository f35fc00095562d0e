"""Packages for setuptools: every package under src/, found (never listed), plus dlrun.conf.

pyproject.toml holds everything else. dlrun.conf lives in conf/ at the top of the repository
(pyproject.toml's package-dir maps it), where a search of src/ cannot see it.
"""

from setuptools import find_packages, setup

setup(packages=[*find_packages("src"), "dlrun.conf"])
