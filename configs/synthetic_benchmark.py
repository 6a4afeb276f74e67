"""The synthetic benchmark: separation and 10-class motion direction from one run.

  python launch.py --config=configs/synthetic_benchmark.py --workdir=runs/synthetic_benchmark \\
      --run_record=docs/benchmark_run.json

(--run_record: the finished run writes its record, asmp_jax/run_record.py.)

configs/synthetic_wide.py's recipe (the U-Net twice as wide, 3200 training clips, the same
10000-step learning-rate schedule) with the data and the settings that let the direction head
learn the 10-class labels (docs/RESULTS.md, "Direction labels set by the motion"):

  * data.builder_config = "octant_xlarge": 3200 training clips in which every moving window of a
    sounding object moves along all three axes, so that its 10-class label (an octant) is set by
    the motion rather than by the sign of the preprocessing's noise on an axis it does not move
    along; validation and test clips are `octant`'s and `octant_large`'s;
  * model.dir_window_graphs = True: the direction head reads each 1 s window's own scene graph;
  * loss.share_direction_permutation = True: the direction loss matches slots to sources once per
    clip (the consistency permutation), as the evaluation does, instead of eq. 3's per window;

and the test evaluation at the end with the public code's 0.05 s sliding-window hop
(eval.window_hop_s; about 13 min for the 100 test pairs on a 2-core CPU, against 1.5 min at the
1 s default; `python -m asmp_jax.evaluate --workdir=DIR --window_hop_s=1` gives the other).

The whole run (the `octant_xlarge` build, 30-45 min, then 10000 steps at about 0.55 steps/s)
takes 5-6 h on a 2-core CPU. What it gives: docs/RESULTS.md, "The benchmark config".
"""

import os

from asmp_jax import config_lib


def get_config():
  config = config_lib.config_from_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic_wide.py"))
  config.data.builder_config = "octant_xlarge"
  config.model.dir_window_graphs = True
  config.loss.share_direction_permutation = True
  config.eval.window_hop_s = 0.05  # the public code's protocol
  return config
