"""The synthetic benchmark in one sitting: separation and 10-class direction, build included.

  python launch.py --config=configs/synthetic_quick.py --workdir=runs/synthetic_quick \\
      --run_record=docs/benchmark_run.json

configs/synthetic_benchmark.py (U-Net width 0.25, each window's own graph for the direction head,
the direction loss matched per clip, the test evaluation with the public code's 0.05 s hop) with
the settings measured to reach quality in less time (docs/RESULTS.md, "Schedule, mask loss, rate,
U-Net grid and conditioning in the first 400 and 1000 steps"):

  * data.builder_config = "octant_large": 1600 training clips, whose build from nothing takes
    about half as long as `octant_xlarge`'s 3200;
  * model.unet_pool = 2: the U-Net runs on the log-magnitude averaged over 2x2 bins, its mask
    logits resized back (0.55x the benchmark step's time);
  * model.unet_conditioning = "film": the slot embedding also scales and shifts the first six
    decoder layers (zero-initialised, so training starts from the paper's network);
  * a cosine learning rate from 1e-3 to 0 over 3600 steps after 100 steps of linear warm-up,
    instead of the staircase with warm restarts.

The run writes its own record with --run_record (asmp_jax/run_record.py): build, training and
evaluation wall times, the test-split gains over the mixture with standard errors.
docs/benchmark_run.json is that record for this file; docs/RESULTS.md cites it.
"""

import os

from asmp_jax import config_lib


def get_config():
  config = config_lib.config_from_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic_benchmark.py"))
  config.data.builder_config = "octant_large"
  config.model.unet_pool = 2
  config.model.unet_conditioning = "film"

  t = config.train
  t.num_train_steps = 3600
  t.lr_boundaries = ()
  t.lr_values = ()
  t.lr_schedule = "cosine"
  t.learning_rate = 1e-3
  t.warmup_steps = 100
  return config
