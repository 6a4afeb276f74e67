"""Data sets for asmp-jax, installed as the package ``asmp_data``.

``asmp_data.synthetic``: the procedurally generated audio-visual set (the embedded default).
TFDS builders for the synthetic set, ASIW and AVE live in the sub-packages.
"""
