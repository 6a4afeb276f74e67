"""The synthetic audio-visual data set: generator and TFDS builder."""
