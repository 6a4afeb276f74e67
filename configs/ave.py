"""ASMP on the Audio-Visual Event data set (AVE), paper settings (NeurIPS 2022 §4.1).

  python launch.py --config=configs/ave.py --workdir=runs/ave --config.data.manual_dir=PATH

K = 18 event classes used + background = 19 (filled from the data set); otherwise as ASIW.
"""

from asmp_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "ave"
  config.data.builder_config = ""
  config.graph.feature_extractor = "precomputed"
  config.model.num_direction_classes = 10
  return config
