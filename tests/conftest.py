"""Shared fixtures."""

import os

import matplotlib

matplotlib.use("Agg")  # no display in CI

os.environ.setdefault("POPDYN_FAST", "1")
