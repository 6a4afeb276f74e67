"""Conditioned U-Net (the Acoustic Separator Network, paper §3.3; Co-Separation's 7-layer U-Net).

Encoder: 7 x [4x4 conv stride 2 (padding 1) -> BatchNorm -> LeakyReLU 0.2] with widths
64, 128, 256, 512, 512, 512, 512 (times ``width_mult``): 256x256 -> 2x2. The first layer has
BatchNorm by default, as in the Co-Separation / AVSGS public U-Net (``unet_conv`` always applies
it); ``first_layer_norm=False`` gives the pix2pix variant.

Bottleneck: the conditioning vector tiled over the encoder's last spatial grid (2x2) and
concatenated to it. Decoder: 7 x [4x4 transposed conv stride 2 -> BatchNorm -> ReLU], each with the
skip of the mirrored encoder layer concatenated to its input; the last layer has 1 channel and a
sigmoid.

Encoder once, decoder per conditioning: the mixture is encoded once per example and only the
decoder runs for each of the ``C`` conditionings (``C = U * S = 6`` in ASMP); the public code
re-encodes the mixture every time. Beyond that, a decoder layer's input is
``concat(decoder_state [B, C, ...], skip [B, 1, ...])`` and a convolution is linear in its input
channels, so `ConvTranspose4x4s2` convolves the skip part once per mixture and broadcasts it: the
result is identical to convolving the concatenation (same parameters), with roughly half the
decoder FLOPs. BatchNorm statistics in the decoder are over all ``B * C`` decoded maps.

Conditioning (``conditioning``, one of `CONDITIONINGS`): ``"bottleneck"`` (the paper's: the
tiled vector concatenated at the bottleneck only) or ``"film"`` (the same, and in addition every
decoder layer but the last scales and shifts its normalised channels by ``1 + gamma(c)`` and
``beta(c)``, two linear maps of the conditioning vector initialised to zero, so that training
starts from the paper's network; Perez et al., FiLM, AAAI 2018). FiLM adds ``2 (E + 1)``
parameters per channel of those six layers and no convolution work.

Resolution (``pool``): with ``pool = p > 1`` the U-Net runs on the log-magnitude averaged over
``p x p`` bins (`pool_grid`) and its mask logits are resized back bilinearly (`unpool_grid`):
about ``p**2`` times less convolution work, masks smooth over ``p x p`` bins (what that costs a
perfect mask: ``bench/warp_oracle.py --pool=p``). The input must then be divisible by
``128 * p``.

Normalisation (``norm``): ``"batch"`` (the paper's BatchNorm) or ``"group"`` (GroupNorm, up to 32
groups, statistics of each decoded map alone). With BatchNorm a mask depends in training on the
other mixtures and conditionings of the batch (the decoder subtracts their mean), in inference on
the running statistics instead; with GroupNorm a mask depends on its own mixture and conditioning
only, identically in training and inference.
"""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from asmp_jax.models.layers import Conv, ConvTranspose4x4s2, batch_norm, leaky_relu_02

Array = jax.Array
Dtype = Any

BASE_WIDTHS = (64, 128, 256, 512, 512, 512, 512)
NORMS = ("batch", "group")
CONDITIONINGS = ("bottleneck", "film")


def pool_grid(x: Array, pool: int) -> Array:
  """Mean of ``x [..., H, W]`` over ``pool x pool`` blocks: ``[..., H / pool, W / pool]``."""
  if pool == 1:
    return x
  *lead, h, w = x.shape
  return x.reshape(*lead, h // pool, pool, w // pool, pool).mean(axis=(-3, -1))


def unpool_grid(x: Array, shape: tuple[int, int]) -> Array:
  """``x [..., h, w]`` resized bilinearly (half-pixel centres) to ``[..., *shape]``."""
  if x.shape[-2:] == tuple(shape):
    return x
  return jax.image.resize(x, x.shape[:-2] + tuple(shape), "bilinear")


def unet_widths(width_mult: float) -> tuple[int, ...]:
  """Encoder widths scaled by ``width_mult`` (at least 1 channel each)."""
  if width_mult <= 0:
    raise ValueError(f"config.model.unet_width_mult must be > 0, got {width_mult}")
  return tuple(max(1, int(round(w * width_mult))) for w in BASE_WIDTHS)


class ConditionedUNet(nn.Module):
  """7-down / 7-up U-Net producing one mask per conditioning vector.

  Attributes:
    width_mult: scales every width (1.0 = paper; 0.125 for tiny configs).
    first_layer_norm: BatchNorm after the first encoder conv (Co-Separation public code: yes).
    conv_impl: which kernels run the convolutions, one of `layers.KERNELS` (config.model.kernels).
    cond_scale: factor on the conditioning vectors where they are tiled (1.0: the unit vectors
      as they are; ``sqrt(E)`` gives them unit RMS per channel, like the BatchNormed encoder
      channels they are concatenated to).
    norm: ``"batch"`` (BatchNorm, as the paper) or ``"group"`` (GroupNorm; module docstring).
    cond_first: the tiled conditioning comes before the bottleneck's audio channels in the first
      decoder layer's input (the public code's order, `asmp_jax.models.authors`); after by default.
    conditioning: where the conditioning enters the decoder, one of `CONDITIONINGS` (module
      docstring).
    pool: the U-Net's grid is the input's averaged over ``pool x pool`` bins (module docstring).
    dtype: compute dtype; the returned masks are float32.
  """
  width_mult: float = 1.0
  first_layer_norm: bool = True
  conv_impl: str = "auto"
  cond_scale: float = 1.0
  norm: str = "batch"
  cond_first: bool = False
  conditioning: str = "bottleneck"
  pool: int = 1
  dtype: Dtype = jnp.float32

  def _norm(self, x: Array, train: bool, name: str) -> Array:
    if self.norm == "batch":
      return batch_norm(train, self.dtype, name=f"{name}_bn")(x)
    # GroupNorm over the spatial axes and channel groups of each map: flatten [B, (C,) h, w, f].
    lead, feats = x.shape[:-3], x.shape[-1]
    groups = math.gcd(feats, 32)
    y = nn.GroupNorm(num_groups=groups, epsilon=1e-5, dtype=self.dtype, name=f"{name}_gn")(
        x.reshape((-1,) + x.shape[-3:]))
    return y.reshape(lead + y.shape[1:])

  def _film(self, y: Array, cond: Array, name: str) -> Array:
    """``y [B, C, h, w, f] * (1 + gamma(cond)) + beta(cond)``, gamma and beta zero at init."""
    gamma_beta = nn.Dense(2 * y.shape[-1], kernel_init=nn.initializers.zeros, dtype=self.dtype,
                          name=f"{name}_film")(cond.astype(self.dtype) * self.cond_scale)
    gamma, beta = jnp.split(gamma_beta[:, :, None, None, :], 2, axis=-1)
    return y * (1 + gamma) + beta

  @nn.compact
  def __call__(self, spec: Array, cond: Array, train: bool, logits: bool = False) -> Array:
    """Separates one mixture spectrogram under ``C`` conditionings.

    Args:
      spec: ``[B, H, W]`` log-magnitude mixture spectrogram (H, W divisible by 128).
      cond: ``[B, C, E]`` conditioning vectors (unit-normalised embeddings).
      train: BatchNorm uses batch statistics (and updates ``batch_stats``) when True.
      logits: return the masks' logits (before the sigmoid) instead of the masks.

    Returns:
      masks ``[B, C, H, W]`` float32 in [0, 1] (or their float32 logits).
    """
    if spec.ndim != 3:
      raise ValueError(f"ConditionedUNet: spec must be [B, H, W], got shape {spec.shape}")
    if cond.ndim != 3 or cond.shape[0] != spec.shape[0]:
      raise ValueError(f"ConditionedUNet: cond must be [B, C, E] with B={spec.shape[0]}, got "
                       f"{cond.shape}")
    if self.norm not in NORMS:
      raise ValueError(f"ConditionedUNet: norm must be one of {NORMS} (config.model.unet_norm), "
                       f"got {self.norm!r}")
    if self.conditioning not in CONDITIONINGS:
      raise ValueError(f"ConditionedUNet: conditioning must be one of {CONDITIONINGS} "
                       f"(config.model.unet_conditioning), got {self.conditioning!r}")
    b, h, w = spec.shape
    n_layers = len(BASE_WIDTHS)
    if isinstance(self.pool, bool) or not isinstance(self.pool, int) or self.pool < 1:
      raise ValueError(f"ConditionedUNet: pool must be an int >= 1 (config.model.unet_pool), got "
                       f"{self.pool!r}")
    if h % (2**n_layers * self.pool) or w % (2**n_layers * self.pool):
      raise ValueError(f"ConditionedUNet: H, W must be divisible by {2**n_layers * self.pool} "
                       f"(pool {self.pool}), got {h}x{w}")
    spec = pool_grid(spec, self.pool)
    widths = unet_widths(self.width_mult)

    # Encoder, once per mixture: [B, H, W, 1] -> 7 maps.
    x = spec[..., None].astype(self.dtype)
    skips = []
    for i, width in enumerate(widths):
      x = Conv(width, (4, 4), (2, 2), padding=((1, 1), (1, 1)), dtype=self.dtype,
               kernels=self.conv_impl, name=f"down{i + 1}")(x)
      if i > 0 or self.first_layer_norm:
        x = self._norm(x, train, f"down{i + 1}")
      x = leaky_relu_02(x)
      skips.append(x[:, None])                      # [B, 1, h, w, c]: shared by every conditioning

    # Bottleneck: conditioning tiled over the last grid.
    c = cond.shape[1]
    bottom = skips[-1]
    tiled = jnp.broadcast_to((cond[:, :, None, None, :] * self.cond_scale).astype(self.dtype),
                             (b, c) + bottom.shape[2:4] + (cond.shape[-1],))
    up_widths = tuple(reversed(widths[:-1])) + (1,)  # 512, 512, 512, 256, 128, 64, 1
    y = None
    for i, width in enumerate(up_widths):
      conv = ConvTranspose4x4s2(width, impl=self.conv_impl, dtype=self.dtype, name=f"up{i + 1}")
      if i == 0:
        y = conv(tiled, bottom) if self.cond_first else conv(bottom, tiled)  # [B, C, 2h, 2w, w]
      else:
        y = conv(y, skips[n_layers - 1 - i])
      if i < n_layers - 1:
        y = self._norm(y, train, f"up{i + 1}")
        if self.conditioning == "film":
          y = self._film(y, cond, f"up{i + 1}")
        y = nn.relu(y)
    y = unpool_grid(y[..., 0].astype(jnp.float32), (h, w))
    return y if logits else jax.nn.sigmoid(y)
