"""Convolution and pooling kernels tuned for XLA:CPU (chosen on CPU by asmp_jax.models.layers).

Each has the value and gradients of the plain JAX operation it replaces; only how XLA:CPU runs
them differs (measured on a 2-core CPU; nothing here was measured on GPU or TPU).

Transposed convolution, its custom VJP and stride-2 input gradients
-------------------------------------------------------------------
`conv_transpose_4x4s2(x, kernel)` is the 4x4, stride-2 transposed convolution that maps
``[N, H, W, Ci] -> [N, 2H, 2W, Co]`` (the shape behaviour of PyTorch's
``ConvTranspose2d(k=4, s=2, p=1)``). The kernel follows Flax's ``nn.ConvTranspose`` convention
(``transpose_kernel=False``, layout ``[4, 4, Ci, Co]``): the value equals
``lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)))``, i.e. a stride-1 correlation of the
2x-dilated input, padded by 2 on each side, with ``kernel``.

XLA:CPU differentiates that expression with respect to the kernel through a slow generic
convolution path (jax-ml/jax#31662, openxla/xla#34273). We supply the gradients ourselves, using
the fact that a transposed convolution is the input-gradient of a strided forward convolution.
In one spatial dimension (the 2D case applies the same on both axes) with the dilated input
``xd[2i] = x[i]`` (zero elsewhere):

    y[p, o] = sum_{k, c} xd[p + k - 2, c] K[k, c, o]            p in [0, 2H), k in [0, 4)
            = sum_{i, k : p = 2i - k + 2} x[i, c] K[k, c, o].

Write ``Kf[k', o, c] = K[3 - k', c, o]`` (spatial flip, input/output channels swapped) and let
``F(g; W)[i, c] = sum_{k', o} g[2i - 1 + k', o] W[k', o, c]`` be the ordinary 4x4 convolution with
stride 2 and padding 1 (``[N, 2H, 2W, Co] -> [N, H, W, Ci]``). With cotangent ``g = dL/dy``:

* input gradient: ``dL/dx[i, c] = sum_k g[2i + 2 - k, o] K[k, c, o] = F(g; Kf)[i, c]`` -- the
  forward strided convolution of the cotangent with the flipped, channel-swapped kernel;
* kernel gradient: ``dL/dK[k, c, o] = sum_{n, i} x[n, i, c] g[n, 2i + 2 - k, o]``. Substituting
  ``k = 3 - k'`` gives ``sum_{n, i} g[n, 2i - 1 + k', o] x[n, i, c]``, which is exactly the kernel
  gradient of ``F(g; W)`` evaluated with *input* ``g`` and *cotangent* ``x`` (the roles of the
  layer input and the output cotangent are swapped), flipped back and channel-swapped:
  ``dL/dK = flipswap(dF/dW^T x)``.

Both are computed with the strided forward convolution and its standard weight gradient, which
XLA:CPU runs on its fast path. The bias is added outside the custom VJP (autodiff sums ``g``).

The forward value is computed by the sub-pixel (phase) decomposition: from the sum above, the
even outputs ``y[2m] = x[m-1] K[0] + x[m] K[2]`` and the odd outputs ``y[2m+1] = x[m] K[1] +
x[m+1] K[3]`` are stride-1 correlations with two taps each, so in 2D the four output phases are
2x2 stride-1 convolutions of ``x`` that are interleaved. They run as one convolution: ``x`` padded
by 1 on every side, convolved with the four 2x2 sub-kernels stacked along the output channels
(``[2, 2, Ci, 4 Co]``), phase ``(rh, rw)`` read at offset ``(rh, rw)`` of its channel block. This is
`stride2_input_grad` (the input gradient of a stride-2 convolution, which is what a transposed
convolution is) with the flipped, channel-swapped kernel. Same multiplications as the transposed
convolution without the 3/4 zeros of the dilated input, on XLA:CPU's regular convolution path,
where ``lax.conv_transpose`` (an lhs-dilated convolution) takes a generic one.

The input gradient of a stride-2 convolution is a transposed convolution too, and JAX's autodiff
gives it the same dilated form; `conv2d`'s custom VJP computes it with `stride2_input_grad` (one
convolution for even kernels; four for odd kernels, on maps of at least
`STRIDE2_PHASES_MIN_SIZE`, below which the dilated form was as fast or faster). Measured on the
2-core dev CPU at the synthetic benchmark's shapes (batch 8, 48 decoded maps, U-Net width 0.25;
medians of 5 alternating rounds, dilated / four phases / one convolution, ms): up1 18.1 / 2.5 /
1.8, up6 338 / 95 / 64, up7 (1 output channel) 71 / 50 / 18; the input gradient of down2 99 /
8.4 / 4.8, of the classifier's 7x7 stem (48 maps of 256 x 256) 215 / 128 (``python
bench/stride2_kernels_bench.py``).

Convolution weight gradients in batch chunks
--------------------------------------------
XLA:CPU computes a convolution's kernel gradient as one convolution whose "kernel" is the whole
output cotangent (window = the output's spatial size, contraction over the batch), and its
YNNPACK path slows down much more than linearly as that cotangent grows: on the dev CPU the
kernel gradient of a 3x3, 64 -> 64 convolution on 48 maps of 64 x 64 takes 430 ms in one piece
and 180 ms as eight sums over 6 maps each; the U-Net's up6 kernel gradient (48 maps) 1845 ms ->
697 ms in chunks of 3. In the batch-8 train step kernel gradients were 41% of the op time.
`conv2d` (run by ``layers.Conv``, a drop-in for ``nn.Conv``) and the transposed convolution's
custom VJP therefore sum the kernel gradient over contiguous batch chunks whose cotangent holds
about `DW_CHUNK_BYTES` (6 MiB: the best measured sizes were 3.5-12 MiB); forward and input
gradient are untouched (chunking them measured no gain). Same value up to summation order.

Max pooling
-----------
`max_pool_3x3s2` is the ResNet stem's 3x3 stride-2 max pool (padding 1) with a custom VJP. JAX
differentiates ``reduce_window(max)`` through ``select_and_gather_add`` /
``select_and_scatter_add``, which XLA:CPU lowers to variadic reduce-windows carrying iota index
arrays (0.7 s forward+backward for 24 x 128 x 128 x 64 on the dev CPU). The custom VJP records, per
output, the index (0..8, in window order) of the first input equal to the maximum, and scatters the
cotangent back with nine strided pads (0.17 s). Ties go to the first maximum in window order, as in
``select_and_scatter_add`` with ``ge`` and PyTorch's ``max_pool2d``, so gradients are identical.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array
Dtype = Any

_DN = ("NHWC", "HWIO", "NHWC")
# Padding of the dilated input in the transposed convolution (k - 1 - p with k=4, p=1).
_TRANSPOSE_PAD = ((2, 2), (2, 2))
# Padding of the equivalent strided forward convolution (PyTorch's p=1).
_FORWARD_PAD = ((1, 1), (1, 1))


def _check_conv_transpose_args(x: Array, kernel: Array) -> None:
  if x.ndim != 4:
    raise ValueError(f"conv_transpose_4x4s2: x must be [N, H, W, C], got shape {x.shape}")
  if kernel.ndim != 4 or kernel.shape[:2] != (4, 4):
    raise ValueError(
        f"conv_transpose_4x4s2: kernel must be [4, 4, Ci, Co], got shape {kernel.shape}")
  if kernel.shape[2] != x.shape[-1]:
    raise ValueError(
        f"conv_transpose_4x4s2: kernel input channels {kernel.shape[2]} != x channels "
        f"{x.shape[-1]}")


def conv_transpose_4x4s2_plain(x: Array, kernel: Array) -> Array:
  """Reference 4x4 stride-2 transposed convolution, differentiated by plain autodiff.

  Args:
    x: ``[N, H, W, Ci]`` input.
    kernel: ``[4, 4, Ci, Co]`` kernel in ``nn.ConvTranspose`` layout (not flipped).

  Returns:
    ``[N, 2H, 2W, Co]``.
  """
  _check_conv_transpose_args(x, kernel)
  return lax.conv_transpose(x, kernel, (2, 2), _TRANSPOSE_PAD, dimension_numbers=_DN)


def _flipswap(kernel: Array) -> Array:
  """``[4, 4, A, B] -> [4, 4, B, A]`` with both spatial axes reversed."""
  return jnp.swapaxes(kernel[::-1, ::-1], 2, 3)


def _strided_conv(g: Array, w: Array) -> Array:
  """4x4 stride-2 padding-1 convolution, ``[N, 2H, 2W, A] x [4, 4, A, B] -> [N, H, W, B]``."""
  return lax.conv_general_dilated(g, w, (2, 2), _FORWARD_PAD, dimension_numbers=_DN)


def conv_transpose_4x4s2_phases(x: Array, kernel: Array) -> Array:
  """`conv_transpose_4x4s2_plain`'s value from its four output phases, as one stride-1
  convolution (module docstring).

  Args:
    x: ``[N, H, W, Ci]`` input.
    kernel: ``[4, 4, Ci, Co]`` kernel in ``nn.ConvTranspose`` layout.

  Returns:
    ``[N, 2H, 2W, Co]``.
  """
  _check_conv_transpose_args(x, kernel)
  return stride2_input_grad(x, _flipswap(kernel), (2 * x.shape[1], 2 * x.shape[2]),
                            _FORWARD_PAD)


@jax.custom_vjp
def conv_transpose_4x4s2(x: Array, kernel: Array) -> Array:
  """4x4 stride-2 transposed convolution with a fast custom VJP (see the module docstring).

  Same value as `conv_transpose_4x4s2_plain` (computed by `conv_transpose_4x4s2_phases`);
  gradients are computed with strided forward convolutions.

  Args:
    x: ``[N, H, W, Ci]`` input.
    kernel: ``[4, 4, Ci, Co]`` kernel in ``nn.ConvTranspose`` layout.

  Returns:
    ``[N, 2H, 2W, Co]`` with the dtype of ``x``/``kernel``.
  """
  return conv_transpose_4x4s2_phases(x, kernel)


def _ct_fwd(x: Array, kernel: Array) -> tuple[Array, tuple[Array, Array]]:
  return conv_transpose_4x4s2_phases(x, kernel), (x, kernel)


def _ct_bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
  x, kernel = res
  kf = _flipswap(kernel)  # [4, 4, Co, Ci]: the kernel of the equivalent strided conv.
  dx = _strided_conv(g, kf)
  # Kernel gradient of the strided conv with input g and cotangent x, in batch chunks.
  dkf = _chunked_kernel_grad(_strided_conv, g, kf, x, DW_CHUNK_BYTES)
  return dx.astype(x.dtype), _flipswap(dkf).astype(kernel.dtype)


conv_transpose_4x4s2.defvjp(_ct_fwd, _ct_bwd)


# Target size of the output cotangent per kernel-gradient chunk (module docstring).
DW_CHUNK_BYTES = 6 * 2**20


def batch_chunks(n: int, bytes_per_example: int, chunk_bytes: int = DW_CHUNK_BYTES
                 ) -> list[tuple[int, int]]:
  """Contiguous ``(start, stop)`` ranges covering ``range(n)``, each about ``chunk_bytes``.

  The ``ceil(n / per_chunk)`` ranges have near-equal sizes (they differ by at most one).
  """
  per_chunk = max(1, min(n, round(chunk_bytes / max(bytes_per_example, 1))))
  k = -(-n // per_chunk)
  bounds = [round(i * n / k) for i in range(k + 1)]
  return [(bounds[i], bounds[i + 1]) for i in range(k) if bounds[i + 1] > bounds[i]]


def _chunked_kernel_grad(fn: Callable[[Array, Array], Array], inputs: Array, kernel: Array,
                         cotangent: Array, chunk_bytes: int) -> Array:
  """``d/dkernel <cotangent, fn(inputs, kernel)>`` summed over batch chunks.

  ``fn`` must be linear in ``kernel`` and act on each example (leading axis) independently.
  """
  per_example = int(np.prod(cotangent.shape[1:])) * cotangent.dtype.itemsize
  total = None
  for start, stop in batch_chunks(inputs.shape[0], per_example, chunk_bytes):
    _, vjp = jax.vjp(lambda k, a=inputs[start:stop]: fn(a, k), kernel)
    (part,) = vjp(cotangent[start:stop])
    total = part if total is None else total + part
  return total


def _conv_nhwc(x: Array, kernel: Array, strides: tuple[int, int],
               padding: tuple[tuple[int, int], tuple[int, int]]) -> Array:
  return lax.conv_general_dilated(x, kernel, strides, padding, dimension_numbers=_DN)


def _phase_plan(size_in: int, size_out: int, k: int, lo: int, r: int
                ) -> tuple[np.ndarray, tuple[int, int], int]:
  """One axis of `stride2_input_grad`: for the input positions ``2m + r``, the kernel taps that
  reach them (reversed, so the sum is a correlation), the cotangent's (low, high) padding (negative
  crops) and the phase's length ``ceil((size_in - r) / 2)``.

  With stride 2 and low padding ``lo``, output ``i`` reads input ``2i + t - lo`` through tap ``t``,
  so input ``2m + r`` is reached by taps ``t = 2u + q`` (``q = (r + lo) % 2``) from output
  ``i = m + c - u`` (``c = (r + lo - q) / 2``): a stride-1 correlation of the cotangent with taps
  ``q, q + 2, ...`` in reverse order.
  """
  q = (r + lo) % 2
  taps = np.arange(q, k, 2)[::-1]
  n = (size_in - r + 1) // 2
  low = len(taps) - 1 - (r + lo - q) // 2
  high = n + len(taps) - 1 - size_out - low
  return taps, (low, high), n


def stride2_input_grad(g: Array, kernel: Array, in_hw: Sequence[int],
                       padding: tuple[tuple[int, int], tuple[int, int]], *,
                       merge: bool = True) -> Array:
  """Input gradient of a stride-2 convolution computed from its four phases, without dilation.

  JAX differentiates ``lax.conv_general_dilated(x, kernel, (2, 2), padding)`` with respect to
  ``x`` as a convolution of the 2x-dilated cotangent, which XLA:CPU runs on a generic path. Each
  parity ``(rh, rw)`` of the input positions is instead reached by a fixed subset of the kernel's
  taps (`_phase_plan`), so it is an ordinary stride-1 convolution of the cotangent with that
  sub-kernel, spatially reversed and with its channel axes swapped: the same products as the
  dilated form without its zeros. Where the four sub-kernels have the same size (even kernels, such
  as the U-Net's 4x4) they run as one convolution with four times the output channels, each phase
  read from it at its own offset; otherwise as four convolutions. The phases are then interleaved.

  Args:
    g: ``[N, Ho, Wo, Co]``, the output cotangent.
    kernel: ``[kh, kw, Ci, Co]``.
    in_hw: ``(H, W)`` of the convolution's input.
    padding: the convolution's ``((top, bottom), (left, right))``.
    merge: run equal-size sub-kernels as one convolution (False: always four; for benchmarks).

  Returns:
    ``[N, H, W, Ci]``, equal to the autodiff input gradient up to summation order.
  """
  n_batch, ho, wo, _ = g.shape
  kh, kw, ci, _ = kernel.shape
  h, w = (int(v) for v in in_hw)
  plans_h = [_phase_plan(h, ho, kh, padding[0][0], r) for r in (0, 1)]
  plans_w = [_phase_plan(w, wo, kw, padding[1][0], r) for r in (0, 1)]
  mh, mw = plans_h[0][2], plans_w[0][2]  # the even phases are the longer ones
  zero = jnp.zeros((), g.dtype)

  def sub_kernel(taps_h, taps_w):
    return jnp.swapaxes(kernel[taps_h][:, taps_w], 2, 3)     # [th, tw, Co, Ci]

  if merge and len({len(p[0]) for p in plans_h}) == 1 and len({len(p[0]) for p in plans_w}) == 1:
    # One convolution: pad by the largest low padding, so phase r starts at offset
    # low_max - low_r of the output; channels ordered (rh, rw, Ci).
    def merged_axis(plans, size_out):
      low = max(p[1][0] for p in plans)
      offsets = [low - p[1][0] for p in plans]
      length = max(o + p[2] for o, p in zip(offsets, plans))
      return (low, length + len(plans[0][0]) - 1 - size_out - low, 0), offsets
    pad_h, off_h = merged_axis(plans_h, ho)
    pad_w, off_w = merged_axis(plans_w, wo)
    k4 = jnp.stack([sub_kernel(ph[0], pw[0]) for ph in plans_h for pw in plans_w], axis=3)
    k4 = k4.reshape(k4.shape[:3] + (4 * ci,))
    out = lax.conv_general_dilated(lax.pad(g, zero, ((0, 0, 0), pad_h, pad_w, (0, 0, 0))), k4,
                                   (1, 1), "VALID", dimension_numbers=_DN)
    out = out.reshape(out.shape[:3] + (2, 2, ci))

    def phase(rh, rw):
      nh, nw = plans_h[rh][2], plans_w[rw][2]
      return out[:, off_h[rh]:off_h[rh] + nh, off_w[rw]:off_w[rw] + nw, rh, rw]
  else:
    def phase(rh, rw):
      (taps_h, pad_h, nh), (taps_w, pad_w, nw) = plans_h[rh], plans_w[rw]
      if not (len(taps_h) and len(taps_w) and nh and nw):
        return jnp.zeros((n_batch, nh, nw, ci), g.dtype)
      gp = lax.pad(g, zero, ((0, 0, 0), pad_h + (0,), pad_w + (0,), (0, 0, 0)))
      return lax.conv_general_dilated(gp, sub_kernel(taps_h, taps_w), (1, 1), "VALID",
                                      dimension_numbers=_DN)

  rows = []
  for rh in (0, 1):
    cols = []
    for rw in (0, 1):
      p = phase(rh, rw)
      cols.append(jnp.pad(p, ((0, 0), (0, mh - p.shape[1]), (0, mw - p.shape[2]), (0, 0))))
    rows.append(jnp.stack(cols, axis=3))                          # [N, mh, mw, 2, Ci]
  dx = jnp.stack(rows, axis=2).reshape(n_batch, 2 * mh, 2 * mw, ci)
  return dx[:, :h, :w]


# Odd kernels' input gradients are four separate phase convolutions, slower than autodiff's
# dilated form on small maps; from this input size up they are faster (module docstring).
STRIDE2_PHASES_MIN_SIZE = 32


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4))
def _conv2d(x: Array, kernel: Array, strides: tuple[int, int],
            padding: tuple[tuple[int, int], tuple[int, int]], chunk_bytes: int) -> Array:
  return _conv_nhwc(x, kernel, strides, padding)


def _conv2d_fwd(x, kernel, strides, padding, chunk_bytes):
  return _conv_nhwc(x, kernel, strides, padding), (x, kernel)


def _conv2d_bwd(strides, padding, chunk_bytes, res, g):
  x, kernel = res
  if strides == (2, 2) and (kernel.shape[0] % 2 == kernel.shape[1] % 2 == 0
                            or min(x.shape[1:3]) >= STRIDE2_PHASES_MIN_SIZE):
    dx = stride2_input_grad(g, kernel, x.shape[1:3], padding)
  else:
    _, vjp_x = jax.vjp(lambda a: _conv_nhwc(a, kernel, strides, padding), x)
    (dx,) = vjp_x(g)
  dk = _chunked_kernel_grad(lambda a, k: _conv_nhwc(a, k, strides, padding), x, kernel, g,
                            chunk_bytes)
  return dx, dk


_conv2d.defvjp(_conv2d_fwd, _conv2d_bwd)


def conv2d(x: Array, kernel: Array, strides: Sequence[int] = (1, 1), padding: Any = "SAME", *,
           dw_chunk_bytes: int = DW_CHUNK_BYTES) -> Array:
  """2-D convolution (NHWC, HWIO) whose kernel gradient is summed over batch chunks.

  Same value and gradients as ``lax.conv_general_dilated(x, kernel, strides, padding,
  dimension_numbers=("NHWC", "HWIO", "NHWC"))``; see the module docstring for the chunking.

  Args:
    x: ``[N, H, W, Ci]``.
    kernel: ``[kh, kw, Ci, Co]``.
    strides: ``(sh, sw)``.
    padding: ``((top, bottom), (left, right))`` or ``"SAME"`` / ``"VALID"``.
    dw_chunk_bytes: target output-cotangent bytes per kernel-gradient chunk.

  Returns:
    ``[N, H', W', Co]``.
  """
  if x.ndim != 4 or kernel.ndim != 4 or kernel.shape[2] != x.shape[-1]:
    raise ValueError(f"conv2d: x must be [N, H, W, Ci] and kernel [kh, kw, Ci, Co]; got "
                     f"{x.shape} and {kernel.shape}")
  strides = tuple(int(v) for v in strides)
  if isinstance(padding, str):
    padding = lax.padtype_to_pads(x.shape[1:3], kernel.shape[:2], strides, padding)
  padding = tuple((int(lo), int(hi)) for lo, hi in padding)
  return _conv2d(x, kernel, strides, padding, int(dw_chunk_bytes))


def _pool_out(size: int) -> int:
  return (size - 1) // 2 + 1      # 3x3 window, stride 2, padding 1


def _pool_taps(xp: Array, ho: int, wo: int) -> list[Array]:
  """The nine strided views ``xp[:, a + 2i, b + 2j]`` of the padded input, in window order."""
  return [xp[:, a:a + 2 * ho - 1:2, b:b + 2 * wo - 1:2, :] for a in range(3) for b in range(3)]


def _max_pool_fwd(x: Array) -> tuple[Array, tuple[Array, tuple[int, ...]]]:
  if x.ndim != 4:
    raise ValueError(f"max_pool_3x3s2: x must be [N, H, W, C], got shape {x.shape}")
  ho, wo = _pool_out(x.shape[1]), _pool_out(x.shape[2])
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
  taps = _pool_taps(xp, ho, wo)
  y = taps[0]
  for t in taps[1:]:
    y = jnp.maximum(y, t)
  first = jnp.full(y.shape, 8, jnp.int8)            # index of the first maximum in window order
  for k in range(7, -1, -1):
    first = jnp.where(taps[k] == y, jnp.int8(k), first)
  return y, (first, x.shape)


@jax.custom_vjp
def max_pool_3x3s2(x: Array) -> Array:
  """3x3 max pool, stride 2, padding 1 (ResNet stem), with a fast custom VJP.

  Same value as ``nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))`` and the same
  gradient (module docstring: the first maximum in window order takes the cotangent).

  Args:
    x: ``[N, H, W, C]`` float.

  Returns:
    ``[N, (H - 1) // 2 + 1, (W - 1) // 2 + 1, C]``.
  """
  return _max_pool_fwd(x)[0]


def _max_pool_bwd(res: tuple[Array, tuple[int, ...]], g: Array) -> tuple[Array]:
  first, shape = res
  _, h, w, _ = shape
  ho, wo = first.shape[1:3]
  zero = jnp.zeros((), g.dtype)
  dxp = None
  for k in range(9):
    a, b = divmod(k, 3)
    # Put the cotangents that tap k selected at padded positions (a + 2i, b + 2j).
    term = lax.pad(jnp.where(first == k, g, zero), zero,
                   ((0, 0, 0), (a, h + 2 - a - (2 * ho - 1), 1), (b, w + 2 - b - (2 * wo - 1), 1),
                    (0, 0, 0)))
    dxp = term if dxp is None else dxp + term
  return (dxp[:, 1:1 + h, 1:1 + w, :],)


max_pool_3x3s2.defvjp(_max_pool_fwd, _max_pool_bwd)
