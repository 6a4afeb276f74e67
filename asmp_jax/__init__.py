"""asmp-jax: the Audio Separator and Motion Predictor (ASMP, NeurIPS 2022) in JAX/Flax."""

__version__ = "0.1.0"
