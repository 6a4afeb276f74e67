"""Shared pytest setup: CPU only, float64 available, quiet TF/absl logs."""
import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
