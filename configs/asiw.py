"""ASMP on Audio Separation in the Wild (ASIW), paper settings (NeurIPS 2022 §4.1).

  python launch.py --config=configs/asiw.py --workdir=runs/asiw --config.data.manual_dir=PATH

K = 14 auditory classes + background = 15 (filled from the data set). Batch 25 pairs, 50k steps,
Adam lr 1e-4 x0.1 every 15k, weight decay 1e-4, lambda = (0.05, 1, 1, 0.05). Node features are the
data set's precomputed 2048-d detector region features.
"""

from asmp_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "asiw"
  config.data.builder_config = ""
  config.graph.feature_extractor = "precomputed"
  config.model.num_direction_classes = 10
  return config
