"""Shared layers: convolutions whose kernels are chosen per backend, and small blocks.

Kernels
-------
The convolutions and the ResNet stem's max pool come in two implementations with the same
parameters (checkpoints are interchangeable) and the same values and gradients up to float
summation order:

* ``"cpu_tuned"``: the custom-VJP transposed convolution, the batch-chunked kernel gradients and
  the custom-VJP max pool of asmp_jax.models.cpu_kernels, each measured faster on XLA:CPU (that
  module's docstring gives the figures);
* ``"plain"``: ``lax.conv_general_dilated`` (``nn.Conv``), ``lax.conv_transpose``
  (``nn.ConvTranspose``) and ``nn.max_pool``, differentiated by JAX, which is what GPU and TPU
  compilers are built for (the CPU kernels were never measured there).

``"auto"`` (``config.model.kernels``' default) takes ``cpu_tuned`` when JAX's default backend is
the CPU and ``plain`` otherwise; training logs the choice at start.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from asmp_jax.models import cpu_kernels

Array = jax.Array
Dtype = Any

KERNELS = ("auto", "cpu_tuned", "plain")


def resolve_kernels(kernels: str, backend: str | None = None) -> str:
  """``"cpu_tuned"`` or ``"plain"`` for ``kernels`` (one of `KERNELS`) on ``backend`` (default:
  JAX's default backend)."""
  if kernels not in KERNELS:
    raise ValueError(f"config.model.kernels must be one of {KERNELS}, got {kernels!r}")
  if kernels != "auto":
    return kernels
  return "cpu_tuned" if (backend or jax.default_backend()) == "cpu" else "plain"


def max_pool_3x3s2(x: Array, kernels: str = "auto") -> Array:
  """3x3 max pool, stride 2, padding 1 (ResNet stem): ``[N, H, W, C] -> [N, (H - 1) // 2 + 1,
  (W - 1) // 2 + 1, C]``, with `cpu_kernels.max_pool_3x3s2` or ``nn.max_pool``."""
  if resolve_kernels(kernels) == "cpu_tuned":
    return cpu_kernels.max_pool_3x3s2(x)
  return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))


class Conv(nn.Module):
  """Drop-in for the ``nn.Conv`` subset used here (same parameters): the chunked-gradient
  `cpu_kernels.conv2d` or ``lax.conv_general_dilated``, as ``kernels`` chooses.

  Attributes:
    features: output channels.
    kernel_size: ``(kh, kw)``.
    strides: ``(sh, sw)``.
    padding: explicit pairs or ``"SAME"`` / ``"VALID"`` (``nn.Conv``'s default is ``"SAME"``).
    use_bias: add a learned bias.
    dtype: computation dtype; parameters stay ``param_dtype``.
    kernels: one of `KERNELS` (module docstring).
  """
  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: Any = "SAME"
  use_bias: bool = True
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Array] = nn.initializers.zeros
  kernels: str = "auto"

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """``[N, H, W, Ci] -> [N, H', W', features]``."""
    kernel = self.param("kernel", self.kernel_init,
                        tuple(self.kernel_size) + (x.shape[-1], self.features), self.param_dtype)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_kernels(self.kernels) == "cpu_tuned":
      y = cpu_kernels.conv2d(x, kernel, self.strides, self.padding)
    else:
      padding = self.padding
      if not isinstance(padding, str):
        padding = tuple((int(lo), int(hi)) for lo, hi in padding)
      y = lax.conv_general_dilated(x, kernel, tuple(int(v) for v in self.strides), padding,
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


def _flatten_leading(x: Array) -> tuple[Array, tuple[int, ...]]:
  lead = x.shape[:-3]
  return x.reshape((-1,) + x.shape[-3:]), lead


class ConvTranspose4x4s2(nn.Module):
  """4x4 stride-2 transposed convolution (H -> 2H) over one or several concatenated inputs.

  ``__call__(*inputs)`` behaves like the convolution of ``concatenate(inputs, axis=-1)`` with a
  single ``[4, 4, sum(Ci), features]`` kernel, but each part is convolved separately and the
  results are summed with broadcasting over the leading axes. A skip connection shared by
  several conditionings (leading shape ``[B, 1, 1]`` against ``[B, U, S]``) is therefore
  convolved once, not once per conditioning. The parameter layout equals ``nn.ConvTranspose``'s.

  Attributes:
    features: output channels.
    use_bias: add a learned bias.
    impl: one of `KERNELS`: the custom-VJP `cpu_kernels.conv_transpose_4x4s2` (``"cpu_tuned"``)
      or autodiff of ``lax.conv_transpose`` (``"plain"``, nn.ConvTranspose's operation).
    dtype: computation dtype (inputs and kernel are cast to it); params stay ``param_dtype``.
  """
  features: int
  use_bias: bool = True
  impl: str = "auto"
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  kernel_init: Callable[..., Array] = nn.initializers.lecun_normal()
  bias_init: Callable[..., Array] = nn.initializers.zeros

  @nn.compact
  def __call__(self, *inputs: Array) -> Array:
    """Args: inputs ``[..., H, W, Ci]`` with the same H, W and broadcastable leading axes.

    Returns:
      ``[..., 2H, 2W, features]`` (leading axes broadcast together).
    """
    if not inputs:
      raise ValueError("ConvTranspose4x4s2 needs at least one input")
    spatial = inputs[0].shape[-3:-1]
    for x in inputs:
      if x.ndim < 4 or x.shape[-3:-1] != spatial:
        raise ValueError(
            f"ConvTranspose4x4s2: inputs must be [..., H, W, C] with equal H, W; got "
            f"{[tuple(v.shape) for v in inputs]}")
    channels = [x.shape[-1] for x in inputs]
    kernel = self.param("kernel", self.kernel_init, (4, 4, sum(channels), self.features),
                        self.param_dtype)
    kernel = kernel.astype(self.dtype)
    fn = (cpu_kernels.conv_transpose_4x4s2 if resolve_kernels(self.impl) == "cpu_tuned"
          else cpu_kernels.conv_transpose_4x4s2_plain)
    out = None
    start = 0
    for x, c in zip(inputs, channels):
      flat, lead = _flatten_leading(x.astype(self.dtype))
      y = fn(flat, kernel[:, :, start:start + c])
      y = y.reshape(lead + y.shape[1:])
      out = y if out is None else out + y
      start += c
    if self.use_bias:
      bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
      out = out + bias.astype(self.dtype)
    return out


class ConvBNAct(nn.Module):
  """Conv -> BatchNorm (optional) -> activation, NHWC.

  Attributes:
    features: output channels.
    kernel_size / strides / padding: as ``nn.Conv`` (padding is explicit pairs or a string).
    use_norm: apply BatchNorm (PyTorch momentum 0.1 == Flax momentum 0.9, eps 1e-5).
    act: activation applied last (``None`` for identity).
  """
  features: int
  kernel_size: tuple[int, int] = (3, 3)
  strides: tuple[int, int] = (1, 1)
  padding: Any = ((1, 1), (1, 1))
  use_norm: bool = True
  use_bias: bool = True
  act: Callable[[Array], Array] | None = nn.relu
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: Array, train: bool) -> Array:
    x = Conv(self.features, self.kernel_size, self.strides, padding=self.padding,
             use_bias=self.use_bias, dtype=self.dtype)(x)
    if self.use_norm:
      x = batch_norm(train, self.dtype)(x)
    if self.act is not None:
      x = self.act(x)
    return x


def batch_norm(train: bool, dtype: Dtype = jnp.float32, name: str | None = None,
               scale_init: Callable[..., Array] = nn.initializers.ones) -> nn.BatchNorm:
  """BatchNorm with PyTorch's defaults (momentum 0.1 -> Flax 0.9, eps 1e-5)."""
  return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype,
                      scale_init=scale_init, name=name)


def leaky_relu_02(x: Array) -> Array:
  """LeakyReLU with slope 0.2 (pix2pix / Sound-of-Pixels U-Net)."""
  return nn.leaky_relu(x, negative_slope=0.2)


def l2_normalize(x: Array, axis: int = -1, eps: float = 1e-6) -> Array:
  """``x / max(||x||, eps)`` along ``axis`` (a zero vector stays zero; no NaN gradient)."""
  sq = jnp.sum(jnp.square(x), axis=axis, keepdims=True)
  return x * lax.rsqrt(jnp.maximum(sq, eps * eps))


def resolve_dtype(name: Any) -> Dtype:
  """Maps ``"float32" | "bfloat16" | "float16"`` (or a dtype) to a jnp dtype."""
  table = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}
  if isinstance(name, str):
    if name not in table:
      raise ValueError(f"config.model.dtype must be one of {sorted(table)}, got {name!r}")
    return table[name]
  return jnp.dtype(name)


__all__: Sequence[str] = (
    "KERNELS",
    "Conv",
    "ConvBNAct",
    "ConvTranspose4x4s2",
    "batch_norm",
    "l2_normalize",
    "leaky_relu_02",
    "max_pool_3x3s2",
    "resolve_dtype",
    "resolve_kernels",
)
