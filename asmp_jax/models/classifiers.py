"""Classifiers on separated spectrograms: consistency (sound class) and direction h_Lambda.

Both use a ResNet-18-style backbone (`ResNetBackbone`): 7x7/2 stem conv + BatchNorm + ReLU,
3x3/2 max-pool, four stages of basic blocks (default 2-2-2-2) of widths ``w, 2w, 4w, 8w`` with
stride 2 at the start of stages 2-4, and global average pooling -> ``8w`` features (512 for
``w = 64``). Input is one channel (a log-magnitude spectrogram).

Direction classifier (paper §3.3, "Direction Prediction Network"): the separated spectrogram is cut
into ``num_windows`` time slices of ``window_cols`` columns every ``window_stride`` columns (public
code: 46 columns, stride 42 -> 6 slices over 256 columns, each ~1 s at 11025 Hz / hop 256), each
slice is a separate sample for the backbone, and the paper's "it also sees y_i" is implemented by
concatenating the source's unit embedding to the pooled backbone feature before the hidden layer:
``[backbone(slice) (8w) || y_i (E)] -> Linear 256 -> ReLU -> Linear D``. By default one y_i (from
the crop's first window's scene graph) serves all slices; ``config.model.dir_window_graphs`` gives
each slice the y_i of its own window's graph (asmp_jax.models.asmp).
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asmp_jax.models.layers import Conv, batch_norm, max_pool_3x3s2

Array = jax.Array
Dtype = Any


class BasicBlock(nn.Module):
  """ResNet basic block: 3x3 conv-BN-ReLU, 3x3 conv-BN, (projected) shortcut, ReLU."""
  features: int
  strides: int = 1
  dtype: Dtype = jnp.float32
  kernels: str = "auto"  # layers.KERNELS

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    s = (self.strides, self.strides)
    y = Conv(self.features, (3, 3), s, padding=((1, 1), (1, 1)), use_bias=False,
             dtype=self.dtype, kernels=self.kernels, name="conv1")(x)
    y = nn.relu(batch_norm(train, self.dtype, name="bn1")(y))
    y = Conv(self.features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
             dtype=self.dtype, kernels=self.kernels, name="conv2")(y)
    # Zero-init the last BN scale: each block starts as identity (Goyal et al. 2017).
    y = batch_norm(train, self.dtype, name="bn2", scale_init=nn.initializers.zeros)(y)
    if x.shape[-1] != self.features or self.strides != 1:
      x = Conv(self.features, (1, 1), s, use_bias=False, dtype=self.dtype,
               kernels=self.kernels, name="proj")(x)
      x = batch_norm(train, self.dtype, name="proj_bn")(x)
    return nn.relu(x + y)


class ResNetBackbone(nn.Module):
  """ResNet-18-style feature extractor. ``[N, H, W] or [N, H, W, 1] -> [N, 8 * width]``.

  Attributes:
    width: stem / first-stage width (64 = ResNet-18).
    blocks: basic blocks per stage (ResNet-18: (2, 2, 2, 2)).
  """
  width: int = 64
  blocks: Sequence[int] = (2, 2, 2, 2)
  dtype: Dtype = jnp.float32
  kernels: str = "auto"  # layers.KERNELS

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    if self.width < 1 or not self.blocks or any(int(b) < 1 for b in self.blocks):
      raise ValueError(f"config.model.cls_width must be >= 1 and cls_blocks a non-empty tuple of "
                       f"positive ints; got {self.width}, {tuple(self.blocks)}")
    if x.ndim == 3:
      x = x[..., None]
    x = x.astype(self.dtype)
    x = Conv(self.width, (7, 7), (2, 2), padding=((3, 3), (3, 3)), use_bias=False,
             dtype=self.dtype, kernels=self.kernels, name="stem")(x)
    x = nn.relu(batch_norm(train, self.dtype, name="stem_bn")(x))
    x = max_pool_3x3s2(x, self.kernels)  # == nn.max_pool(x, (3, 3), (2, 2), ((1, 1), (1, 1)))
    for stage, n_blocks in enumerate(self.blocks):
      for j in range(int(n_blocks)):
        strides = 2 if (stage > 0 and j == 0) else 1
        x = BasicBlock(self.width * 2**stage, strides, dtype=self.dtype, kernels=self.kernels,
                       name=f"stage{stage + 1}_block{j + 1}")(x, train)
    return jnp.mean(x, axis=(1, 2))


class ConsistencyClassifier(nn.Module):
  """Sound-class logits of a separated spectrogram. ``[N, H, W] -> [N, num_classes]`` float32."""
  num_classes: int
  width: int = 64
  blocks: Sequence[int] = (2, 2, 2, 2)
  dtype: Dtype = jnp.float32
  kernels: str = "auto"  # layers.KERNELS

  @nn.compact
  def __call__(self, spec: Array, train: bool) -> Array:
    feat = ResNetBackbone(self.width, self.blocks, dtype=self.dtype, kernels=self.kernels,
                          name="backbone")(spec, train)
    return nn.Dense(self.num_classes, dtype=self.dtype, name="head")(feat).astype(jnp.float32)


def time_windows(spec: Array, window_cols: int, window_stride: int, num_windows: int) -> Array:
  """Static time slices ``[..., H, T] -> [..., num_windows, H, window_cols]``.

  Raises:
    ValueError: if the last window would run past ``T``.
  """
  t = spec.shape[-1]
  last = (num_windows - 1) * window_stride + window_cols
  if window_cols < 1 or window_stride < 1 or num_windows < 1 or last > t:
    raise ValueError(
        f"config.model: {num_windows} direction windows of dir_window_cols={window_cols} every "
        f"dir_window_stride={window_stride} columns need {last} time columns, spectrogram has {t}")
  return jnp.stack(
      [spec[..., k * window_stride:k * window_stride + window_cols] for k in range(num_windows)],
      axis=-3)


class DirectionClassifier(nn.Module):
  """Per-window motion-direction logits h_Lambda (module docstring).

  ``__call__(spec [N, H, T], embed [N, E] or [N, num_windows, E], train) -> [N, num_windows,
  num_directions]`` float32; a 3-d ``embed`` gives each time slice its own embedding.
  """
  num_directions: int
  window_cols: int = 46
  window_stride: int = 42
  num_windows: int = 6
  width: int = 64
  blocks: Sequence[int] = (2, 2, 2, 2)
  hidden: int = 256
  dtype: Dtype = jnp.float32
  kernels: str = "auto"  # layers.KERNELS

  @nn.compact
  def __call__(self, spec: Array, embed: Array, train: bool) -> Array:
    n = spec.shape[0]
    slices = time_windows(spec, self.window_cols, self.window_stride, self.num_windows)
    slices = slices.reshape((n * self.num_windows,) + slices.shape[-2:])
    feat = ResNetBackbone(self.width, self.blocks, dtype=self.dtype, kernels=self.kernels,
                          name="backbone")(slices, train)
    feat = feat.reshape(n, self.num_windows, -1)
    if embed.ndim == 2:  # one embedding for every window
      embed = embed[:, None, :]
    emb = jnp.broadcast_to(embed.astype(self.dtype), (n, self.num_windows, embed.shape[-1]))
    x = jnp.concatenate([feat, emb], axis=-1)
    x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name="fc1")(x))
    return nn.Dense(self.num_directions, dtype=self.dtype, name="head")(x).astype(jnp.float32)
