"""The default configuration tree shared by every file in `configs/`.

Each `configs/<name>.py` calls :func:`base_config` and overrides what differs, following the
flax/examples convention of one `get_config()` per file. Every key that the code reads exists here,
so `--config.<key>=<value>` on the command line can override it and a misspelt key is refused by
name (the config is locked by `launch.py`).
"""

from __future__ import annotations

import ml_collections

# Source slots per video: 2 auditory objects + 1 background (paper §4.1).
MAX_AUDITORY = 2
NUM_SLOTS = MAX_AUDITORY + 1
# Nodes per graph: 2 auditory + 20 context + 1 background (paper §4.1).
MAX_CONTEXT = 20
MAX_NODES = MAX_AUDITORY + MAX_CONTEXT + 1


# Keys that saved configs may hold but this code no longer has, because what they set is now
# implied by something else; they are dropped when a saved config is read (`drop_retired_keys`).
# model.num_videos: the model takes the number of videos per mixture from its input batch
# (config.data.num_videos decides it). data.max_nodes, data.max_auditory: never read (the graph
# sizes are the constants above). model.conv_transpose_impl: model.kernels.
RETIRED_KEYS = ("model.num_videos", "data.max_nodes", "data.max_auditory",
                "model.conv_transpose_impl")


def drop_retired_keys(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """``config`` without the `RETIRED_KEYS` (in place; returned for chaining)."""
  for key in RETIRED_KEYS:
    section, leaf = key.split(".")
    if section in config and leaf in config[section]:
      del config[section][leaf]
  return config


def base_config() -> ml_collections.ConfigDict:
  """Paper settings (ASMP, NeurIPS 2022, §4.1; docs/design.md) on the synthetic data set."""
  c = ml_collections.ConfigDict()
  c.seed = 0

  # ---------------------------------------------------------------- data
  c.data = d = ml_collections.ConfigDict()
  d.name = "synthetic"  # synthetic | asiw | ave
  d.data_dir = ""  # TFDS data_dir; "" -> ~/tensorflow_datasets or $TFDS_DATA_DIR
  # synthetic: default | large | xlarge | persistent | octant | octant_large | octant_xlarge | tiny
  d.builder_config = "default"
  d.manual_dir = ""  # ASIW/AVE: where the user put the downloaded files
  d.sample_rate = 11025
  d.crop_samples = 65535  # ~5.94 s crops (paper and public code)
  d.window_frames = 8  # l = 8 frames per window (1 s at 8 fps)
  d.num_videos = 2  # mix-and-separate of U = 2 clips
  d.gain_range = (0.5, 1.5)
  d.normalise_mix = False  # public code divides the mixture by N; the paper does not
  d.worker_count = 0  # grain worker processes (0 = in the training process)
  d.prefetch_buffer = 2

  # ---------------------------------------------------------------- preprocessing (graph building)
  c.graph = g = ml_collections.ConfigDict()
  g.feature_extractor = "hog_color"  # hog_color | precomputed | resnet18_crops
  g.crop_encoder_weights = ""  # resnet18_crops: torchvision resnet18 state_dict (.pth) | random
  g.detections = "noisy"  # synthetic: noisy (simulated detector) | exact (ground-truth boxes)
  g.depth = "provider"  # provider (sidecar/MiDaS files) | flat
  g.flow = "provider"  # provider (sidecar/RAFT files) | opencv (DIS on decoded frames)
  g.iou_threshold = 0.1  # gamma, context nodes (paper §4.1)
  g.min_context_score = 0.4  # public code
  # Stored edge weights: chamfer (ASMP) | equal (AVSGS). The multiscale-Chamfer ablation is a model
  # switch on the chamfer data (model.graph_mode = "multiscale").
  g.edge_mode = "chamfer"
  g.rbf_percentile = 25.0
  g.rectify = True  # LK + ICP rectification to the window's reference frame
  g.no_motion_thresholds = (0.02, 0.02, 0.1)  # (u/W, v/H, depth) per window, see graph.motion

  # ---------------------------------------------------------------- model
  c.model = m = ml_collections.ConfigDict()
  m.node_feature_dim = 0  # filled from the data set's feature size at run time
  m.node_hidden = 1024
  m.embed_dim = 512
  m.gat_heads = 4
  m.gat_head_dim = 64
  m.edgeconv_dim = 256
  m.num_slots = NUM_SLOTS
  m.unet_width_mult = 1.0
  m.num_classes = 0  # K = auditory classes + background; filled from the data set
  m.num_direction_classes = 10  # 10 or 28
  m.dir_window_cols = 46
  m.dir_window_stride = 42
  m.num_dir_windows = 6
  m.cls_width = 64
  m.cls_blocks = (2, 2, 2, 2)
  # asmp | equal (AVSGS) | multiscale (multiscale-Chamfer ablation) | single_node (Co-Separation)
  # | no_vision (control) | class_label (audio-only, conditioned on the true class labels).
  # Paper ablations also: loss.lambda_dir = 0 (graph only),
  # loss.lambda_cons = lambda_cyc = lambda_ortho = 0 (direction only).
  m.graph_mode = "asmp"
  # graph_mode="authors" only: whether a converted release holds the direction networks and the
  # consistency classifier (asmp_jax.convert_authors sets both from the files it read).
  m.authors_direction = True
  m.authors_classifier = True
  # Masked BatchNorm of the node features at the graph input (standardises each feature
  # dimension over the batch's valid nodes; the running statistics serve inference).
  m.node_batch_norm = False
  # Factor on the unit conditioning vectors where the U-Net tiles them (sqrt(embed_dim) gives
  # them unit RMS per channel, like the BatchNormed bottleneck channels beside them).
  m.unet_cond_scale = 1.0
  # U-Net normalisation: "batch" (paper) | "group" (GroupNorm: each mask independent of the rest
  # of the batch, the same in training and inference).
  m.unet_norm = "batch"
  # Where the slot embedding enters the U-Net's decoder: "bottleneck" (paper: tiled and
  # concatenated at the bottleneck) | "film" (also a zero-initialised scale and shift of every
  # decoder layer's channels; asmp_jax.models.unet).
  m.unet_conditioning = "bottleneck"
  # The U-Net's grid: the 256x256 log-magnitude averaged over unet_pool x unet_pool bins, its mask
  # logits resized back (1 = paper; 2 = a quarter of the convolution work; asmp_jax.models.unet).
  m.unet_pool = 1
  # The classifiers' input: the separated log-magnitude averaged over cls_freq_pool adjacent
  # frequency bins, time untouched (1 = paper; 4 = a quarter of their convolution work).
  m.cls_freq_pool = 1
  # Direction head conditioning: False = every 1 s slice of a crop sees the embedding of the
  # crop's first window's graph (the one conditioning the U-Net); True = each slice sees the
  # embedding of its own window's graph (same encoder; the pipeline then emits window_* arrays).
  m.dir_window_graphs = False
  m.dtype = "float32"  # float32 | bfloat16 (compute only; params and metrics stay float32)
  # BatchNorm after the U-Net's first encoder convolution (Co-Separation public U-Net: yes;
  # False gives the pix2pix variant).
  m.unet_first_layer_norm = True
  # Which implementation runs the convolutions and the max pool (same parameters, values and
  # gradients): "cpu_tuned" (custom gradients measured faster on XLA:CPU) | "plain" (nn.Conv,
  # nn.ConvTranspose, nn.max_pool) | "auto" (cpu_tuned on CPU, plain on GPU/TPU); see
  # asmp_jax.models.layers. Logged at the start of training.
  m.kernels = "auto"
  # Added inside the log of the separated magnitude: bounds the log's gradient where a mask is ~0.
  m.sep_log_eps = 1e-4
  # GRU step k conditions the k-th *valid* source slot (True) or slot k whatever its validity.
  m.compact_slots = True

  # ---------------------------------------------------------------- losses
  c.loss = lo = ml_collections.ConfigDict()
  lo.lambda_cons = 0.05
  lo.lambda_cyc = 1.0
  lo.lambda_ortho = 1.0
  lo.lambda_dir = 0.05
  lo.mask_target = "ibm"  # ibm (paper) | ratio (public code)
  # Per-bin weight of L_cyc: "" (the target's own: none for ibm, log1p for ratio) | none | log1p |
  # mag (see asmp_jax.losses.MASK_WEIGHTS).
  lo.mask_weight = ""
  # How L_cyc scores the masks: l1 (paper) | bce (binary cross-entropy from the logits; needs
  # mask_target="ibm"; see asmp_jax.losses.cyclic_bce_loss).
  lo.mask_loss = "l1"
  # L_dir's slot matching: False = eq. 3's minimum over permutations in every window (paper);
  # True = the permutation L_cons chose for the clip, so each slot's direction head answers for
  # the source that slot separates (the matching the evaluation uses).
  lo.share_direction_permutation = False

  # ---------------------------------------------------------------- optimisation
  c.train = t = ml_collections.ConfigDict()
  t.batch_size = 25  # global batch of mixtures (public code: 25 pairs on one GPU)
  t.num_train_steps = 50_000  # public code: 50k iterations
  t.learning_rate = 1e-4
  t.lr_decay_every = 15_000  # x0.1 every 15k steps
  t.lr_decay_factor = 0.1
  # An explicit piecewise-constant rate instead of the three keys above, when lr_values is set:
  # lr_values[0] until step lr_boundaries[0], lr_values[i] from lr_boundaries[i-1] until
  # lr_boundaries[i], the last value after the last boundary (one value more than boundaries).
  # Lets one config hold a schedule with warm restarts (configs/synthetic_wide.py).
  t.lr_boundaries = ()
  t.lr_values = ()
  # The schedule when lr_values is empty (asmp_jax.optimizer.SCHEDULES): "staircase" (the three
  # keys above) | "cosine" (half a cosine from learning_rate to learning_rate * lr_end_fraction
  # at num_train_steps) | "piecewise" (lr_boundaries/lr_values, which select it when set).
  t.lr_schedule = "staircase"
  t.lr_end_fraction = 0.0
  # Linear warm-up from 0 over the first warmup_steps steps, on top of any schedule.
  t.warmup_steps = 0
  t.weight_decay = 1e-4
  t.b1 = 0.9
  t.b2 = 0.999
  t.log_every = 50
  t.eval_every = 2_000
  t.checkpoint_every = 1_000
  t.max_to_keep = 3
  # Workdir of another run whose latest checkpoint starts this one (model, optimizer state and
  # step; not the data position), when this workdir has none: continues a run into a new
  # workdir, e.g. on a larger build of the same data. "" = a fresh initialisation.
  t.init_from = ""
  # Append each step's clip indices to <workdir>/examples_seen.jsonl (process 0): lets one check
  # that a resumed run sees exactly the examples an uninterrupted one would.
  t.record_examples = False

  # ---------------------------------------------------------------- evaluation
  c.eval = e = ml_collections.ConfigDict()
  e.split = "test"
  e.num_pairs = 200  # fixed, seeded test pairs
  e.seed = 1234
  e.window_hop_s = 1.0  # sliding-window hop for whole clips (public code: 0.05 s)
  e.batch_size = 8
  e.val_batches = 4  # batches of the validation split per periodic evaluation
  e.num_audio_summaries = 2
  return c


def config_from_file(path: str) -> ml_collections.ConfigDict:
  """``get_config()`` of a config file, loaded by path (configs/ is not a package), so that one
  config file can start from another: ``config_from_file(os.path.join(os.path.dirname(
  __file__), "synthetic.py"))``."""
  import importlib.util  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  name = "_asmp_config_" + os.path.splitext(os.path.basename(path))[0]
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


# Ranges of numeric settings: key -> (lowest, highest, whether the lowest itself is allowed).
# Every other number must be finite (float32: |x| < 3.4e38) too.
_FLOAT32_MAX = 3.4028234e38
_RANGES = {
    "data.sample_rate": (1, None, True), "data.crop_samples": (1, None, True),
    "data.window_frames": (1, None, True), "data.num_videos": (1, None, True),
    "data.gain_range": (0, None, False), "data.worker_count": (0, None, True),
    "data.prefetch_buffer": (0, None, True),
    "loss.lambda_cons": (0, None, True), "loss.lambda_cyc": (0, None, True),
    "loss.lambda_ortho": (0, None, True), "loss.lambda_dir": (0, None, True),
    "train.batch_size": (1, None, True), "train.num_train_steps": (1, None, True),
    "train.learning_rate": (0, None, False), "train.lr_decay_every": (1, None, True),
    "train.lr_decay_factor": (0, None, False), "train.lr_values": (0, None, True),
    "train.lr_end_fraction": (0, 1, True), "train.warmup_steps": (0, None, True),
    "train.weight_decay": (0, None, True), "train.b1": (0, 1, True), "train.b2": (0, 1, True),
    "train.log_every": (1, None, True), "train.eval_every": (1, None, True),
    "train.checkpoint_every": (1, None, True), "train.max_to_keep": (1, None, True),
    "eval.num_pairs": (0, None, True), "eval.window_hop_s": (0, None, False),
    "eval.batch_size": (1, None, True), "eval.val_batches": (0, None, True),
    "eval.num_audio_summaries": (0, None, True),
}


def _numbers(tree, prefix=""):
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, ml_collections.ConfigDict):
      yield from _numbers(value, name + ".")
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
      yield name, value
    elif isinstance(value, (tuple, list)):
      for x in value:
        if isinstance(x, (int, float)) and not isinstance(x, bool):
          yield name, x


class ConfigError(ValueError):
  """A config value the code cannot run with."""


def validate(config: ml_collections.ConfigDict) -> None:
  """Refuses (ConfigError, one line naming the key) a number that is not finite in float32 or
  outside its range (``_RANGES``; b1 and b2 below 1), before any work starts."""
  for name, x in _numbers(config):
    if not abs(x) < _FLOAT32_MAX:  # also NaN
      raise ConfigError(f"config.{name}={x!r} is not a finite float32 number")
    if name not in _RANGES:
      continue
    low, high, low_ok = _RANGES[name]
    if x < low or (x == low and not low_ok) or (high is not None and x >= high):
      bound = f">= {low}" if low_ok else f"> {low}"
      raise ConfigError(f"config.{name}={x!r} is out of range (must be {bound}"
                       + (f" and < {high})" if high is not None else ")"))
  if "loss" in config:
    from asmp_jax import losses  # pylint: disable=g-import-not-at-top
    try:
      losses.mask_settings(config.loss)
    except ValueError as e:
      raise ConfigError(str(e)) from None
  if "train" in config:
    from asmp_jax import optimizer  # pylint: disable=g-import-not-at-top
    try:
      optimizer.learning_rate_schedule(config.train)
    except ValueError as e:
      raise ConfigError(str(e)) from None
