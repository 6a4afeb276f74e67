"""The separation recipe on the synthetic set: configs/synthetic.py with the U-Net twice as wide,
3200 training clips (the `xlarge` build) and 10000 steps with warm restarts.

  python launch.py --config=configs/synthetic_wide.py --workdir=runs/synthetic_wide

About 5.5 h of training on a 2-core CPU, after the first-use build of `xlarge` (about 36 min).
The same recipe in two stages, the first on the 1600-clip `large` build, the second continued in
a new workdir on `xlarge` (how the figures of docs/RESULTS.md, "3200 training clips", were made):

  python launch.py --config=configs/synthetic_wide.py --workdir=runs/wide_large \
    --config.data.builder_config=large --config.train.num_train_steps=8000
  python launch.py --config=configs/synthetic_wide.py --workdir=runs/wide_xlarge \
    --config.train.init_from=runs/wide_large

The schedule: 1e-3, x0.1 at steps 1500 and 3000 (configs/synthetic.py's), then from step 4000 a
warm restart every 2000 steps to 1e-4, dropping to 1e-5 for the last 500 steps of each cycle.
The boundaries are fixed for 10000 steps: a longer run (--config.train.num_train_steps) stays at
1e-5 after step 9500 unless --config.train.lr_boundaries and lr_values are set as well.
"""

import os

from asmp_jax import config_lib


def get_config():
  config = config_lib.config_from_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "synthetic.py"))
  config.data.builder_config = "xlarge"  # 3200 training clips; validation/test as the default's
  config.model.unet_width_mult = 0.25  # 3.4 M parameters against the default's 1.3 M

  t = config.train
  t.num_train_steps = 10_000
  # Warm restarts: (1500, 1e-3 -> 1e-4), (3000, -> 1e-5), then each cycle of 2000 steps from
  # step 4000 runs 1500 steps at 1e-4 and 500 at 1e-5.
  restarts = tuple(range(4000, t.num_train_steps, 2000))
  t.lr_boundaries = (1500, 3000) + tuple(b for s in restarts for b in (s, s + 1500))
  t.lr_values = (1e-3, 1e-4, 1e-5) + (1e-4, 1e-5) * len(restarts)
  return config
