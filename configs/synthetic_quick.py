"""The synthetic benchmark in one sitting: separation and 10-class direction, build included.

  python launch.py --config=configs/synthetic_quick.py --workdir=runs/synthetic_quick \\
      --run_record=docs/benchmark_run.json

configs/synthetic_benchmark.py (U-Net width 0.25 on the paper's grid, each window's own graph for
the direction head, the direction loss matched per clip, the test evaluation with the public
code's 0.05 s hop) with the settings measured to reach quality in less time (docs/RESULTS.md,
"Schedule, mask loss, rate, U-Net grid and conditioning in the first 400 and 1000 steps" and "The
benchmark in one sitting"):

  * data.builder_config = "octant_large": 1600 training clips, whose build from nothing takes
    about half as long as `octant_xlarge`'s 3200;
  * model.cls_freq_pool = 4: the classifiers read the log-magnitude averaged over 4 frequency
    bins (0.6x the step's time; no loss of quality at 700 steps);
  * a cosine learning rate from 1e-3 to 0 over 4500 steps after 100 steps of linear warm-up,
    instead of the staircase with warm restarts over 10000.

At about 1.1 s per step on a 2-core CPU the whole run (build, training, evaluation) is planned to
fit in 150 min. The run writes its own record with --run_record (asmp_jax/run_record.py): build,
training and evaluation wall times, the test-split gains over the mixture with standard errors.
docs/benchmark_run.json is that record for this file; docs/RESULTS.md cites it.
"""

import os

from asmp_jax import config_lib


def get_config():
  config = config_lib.config_from_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic_benchmark.py"))
  config.data.builder_config = "octant_large"
  config.model.cls_freq_pool = 4

  t = config.train
  t.num_train_steps = 4500
  t.lr_boundaries = ()
  t.lr_values = ()
  t.lr_schedule = "cosine"
  t.learning_rate = 1e-3
  t.warmup_steps = 100
  return config
