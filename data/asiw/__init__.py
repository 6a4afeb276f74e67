"""ASIW (Audio Separation in the Wild, Chatterjee et al. ICCV 2021) as a TFDS builder."""
