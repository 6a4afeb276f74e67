"""A tiny ASMP on the `tiny` synthetic build: 6 steps, for tests and CI (a few minutes on a
2-core CPU, most of it compiling).

  python launch.py --config=configs/synthetic_tiny.py --workdir=/tmp/asmp_tiny
"""

from asmp_jax import config_lib


def get_config():
  config = config_lib.base_config()
  config.data.name = "synthetic"
  config.data.builder_config = "tiny"

  m = config.model
  m.node_hidden = 32
  m.embed_dim = 32
  m.gat_heads = 2
  m.gat_head_dim = 8
  m.edgeconv_dim = 16
  m.unet_width_mult = 0.125
  m.cls_width = 8
  m.cls_blocks = (1, 1, 1, 1)
  # Not in the paper; as in configs/synthetic.py (the graph -> GRU conditioning collapses
  # without them on this data).
  m.node_batch_norm = True
  m.unet_cond_scale = m.embed_dim ** 0.5

  t = config.train
  t.batch_size = 2
  t.num_train_steps = 6
  t.learning_rate = 1e-3
  t.log_every = 2
  t.eval_every = 6
  t.checkpoint_every = 3
  t.max_to_keep = 2

  e = config.eval
  e.num_pairs = 2
  e.batch_size = 2
  e.val_batches = 1
  e.num_audio_summaries = 1
  return config
