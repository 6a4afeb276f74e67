"""AVE (Audio-Visual Event, Tian et al. ECCV 2018), 18 classes as in ASMP, as a TFDS builder."""
