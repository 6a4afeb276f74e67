"""Tests for asmp_jax.models.layers: the custom-VJP transposed convolution."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from asmp_jax.models import cpu_kernels, layers


def _rel_err(a, b):
  a = np.asarray(a, np.float64)
  b = np.asarray(b, np.float64)
  return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300)


@pytest.mark.parametrize("shape", [(2, 5, 3, 3, 7), (1, 4, 6, 1, 2), (3, 1, 1, 5, 4)])
def test_custom_vjp_matches_plain_float64(shape):
  n, h, w, ci, co = shape
  with jax.enable_x64(True):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=(n, h, w, ci)), jnp.float64)
    k = jnp.asarray(rng.normal(size=(4, 4, ci, co)), jnp.float64)
    g = jnp.asarray(rng.normal(size=(n, 2 * h, 2 * w, co)), jnp.float64)

    y_plain, vjp_plain = jax.vjp(cpu_kernels.conv_transpose_4x4s2_plain, x, k)
    y_fast, vjp_fast = jax.vjp(cpu_kernels.conv_transpose_4x4s2, x, k)
    assert y_fast.shape == (n, 2 * h, 2 * w, co)
    assert y_fast.dtype == jnp.float64
    assert _rel_err(y_fast, y_plain) <= 1e-12
    for a, b in zip(vjp_fast(g), vjp_plain(g)):
      assert a.shape == b.shape
      assert _rel_err(a, b) <= 1e-6


@pytest.mark.parametrize("shape", [(2, 3, 5, 4, 9), (1, 1, 1, 3, 8), (2, 2, 2, 16, 12),
                                   (2, 4, 3, 5, 1)])
def test_phase_forward_and_custom_vjp_match_plain_float64(shape):
  """The sub-pixel forward (four phases as one convolution) and the custom VJP == autodiff of
  lax.conv_transpose, for any number of channels (the U-Net's last layer has 1 output)."""
  n, h, w, ci, co = shape
  with jax.enable_x64(True):
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(n, h, w, ci)), jnp.float64)
    k = jnp.asarray(rng.normal(size=(4, 4, ci, co)), jnp.float64)
    g = jnp.asarray(rng.normal(size=(n, 2 * h, 2 * w, co)), jnp.float64)
    y_plain, vjp_plain = jax.vjp(cpu_kernels.conv_transpose_4x4s2_plain, x, k)
    assert _rel_err(cpu_kernels.conv_transpose_4x4s2_phases(x, k), y_plain) <= 1e-12
    y_fast, vjp_fast = jax.vjp(cpu_kernels.conv_transpose_4x4s2, x, k)
    assert y_fast.dtype == jnp.float64
    assert _rel_err(y_fast, y_plain) <= 1e-12
    for a, b in zip(vjp_fast(g), vjp_plain(g)):
      assert _rel_err(a, b) <= 1e-6


@pytest.mark.parametrize("shape", [(2, 9, 7, 3), (3, 8, 8, 2), (1, 1, 2, 1)])
def test_max_pool_value_and_gradient_equal_flax_float64(shape):
  """Including ties (ReLU zeros, constant regions): the first maximum takes the cotangent."""
  def ref(x):
    return nn.max_pool(x, (3, 3), (2, 2), padding=((1, 1), (1, 1)))

  with jax.enable_x64(True):
    rng = np.random.default_rng(5)
    x = np.maximum(rng.normal(size=shape), 0.0)
    x[:, : shape[1] // 2, : shape[2] // 2] = 0.5
    x = jnp.asarray(x, jnp.float64)
    y_ref, vjp_ref = jax.vjp(ref, x)
    y, vjp = jax.vjp(cpu_kernels.max_pool_3x3s2, x)
    assert y.shape == y_ref.shape and y.dtype == jnp.float64
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float64)
    assert _rel_err(vjp(g)[0], vjp_ref(g)[0]) <= 1e-6
    # Exactly: each input gets the sum of the cotangents of the windows it is the first max of.
    assert _rel_err(vjp(g)[0], vjp_ref(g)[0]) <= 1e-15


@pytest.mark.parametrize("n,stride,padding,kernel", [
    (5, 1, ((1, 1), (1, 1)), 3), (4, 2, ((1, 1), (1, 1)), 4), (3, 2, "SAME", 1),
    (7, 2, ((3, 3), (3, 3)), 7)])
def test_conv2d_chunked_kernel_gradient_matches_lax_float64(n, stride, padding, kernel):
  """Kernel gradient summed over batch chunks (forced small) == autodiff of the plain conv."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(6)
    x = jnp.asarray(rng.normal(size=(n, 9, 8, 3)), jnp.float64)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float64)
    pads = (lax.padtype_to_pads(x.shape[1:3], k.shape[:2], (stride, stride), padding)
            if isinstance(padding, str) else padding)

    def plain(x, k):
      return lax.conv_general_dilated(x, k, (stride, stride), pads,
                                      dimension_numbers=("NHWC", "HWIO", "NHWC"))

    def fast(x, k):   # ~2 examples per chunk -> several chunks, the last one shorter for odd n
      return cpu_kernels.conv2d(x, k, (stride, stride), padding,
                           dw_chunk_bytes=2 * 8 * int(np.prod(plain(x, k).shape[1:])))

    y_plain, vjp_plain = jax.vjp(plain, x, k)
    y_fast, vjp_fast = jax.vjp(fast, x, k)
    assert _rel_err(y_fast, y_plain) <= 1e-12
    g = jnp.asarray(rng.normal(size=y_plain.shape), jnp.float64)
    for a, b in zip(vjp_fast(g), vjp_plain(g)):
      assert a.shape == b.shape
      assert _rel_err(a, b) <= 1e-6


@pytest.mark.parametrize("k", [1, 2, 3, 4, 7])
def test_stride2_input_grad_equals_autodiff_for_any_padding_and_parity_float64(k):
  """The phase form of a stride-2 convolution's input gradient == JAX's, for every low/high
  padding below the kernel size and odd and even input sizes (phases of unequal length, phases no
  tap reaches, e.g. a 1x1 kernel's odd positions)."""
  rng = np.random.default_rng(k)
  with jax.enable_x64(True):
    checked = 0
    for lo in range(k):
      for hi in range(k):
        for h, w in ((6, 5), (9, 8), (4, 7)):
          pads = ((lo, hi), (hi, lo))
          if (h + lo + hi - k) < 0 or (w + lo + hi - k) < 0:
            continue
          x = jnp.asarray(rng.normal(size=(2, h, w, 3)), jnp.float64)
          kern = jnp.asarray(rng.normal(size=(k, k, 3, 4)), jnp.float64)
          y, vjp = jax.vjp(lambda a, kern=kern, pads=pads: lax.conv_general_dilated(
              a, kern, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")), x)
          g = jnp.asarray(rng.normal(size=y.shape), jnp.float64)
          for merge in (True, False):   # one convolution (even kernels) or four
            got = cpu_kernels.stride2_input_grad(g, kern, (h, w), pads, merge=merge)
            assert got.shape == x.shape
            assert _rel_err(got, vjp(g)[0]) <= 1e-12, (lo, hi, h, w, merge)
          checked += 1
    assert checked >= 3 * k * k // 2


@pytest.mark.parametrize("kernel,padding", [(3, 1), (7, 3), (1, 0), (4, 1)])
def test_conv2d_stride2_gradients_on_large_maps_match_lax_float64(kernel, padding):
  """Maps of at least STRIDE2_PHASES_MIN_SIZE take the phase input gradient for odd kernels too
  (the classifiers' 7x7, 3x3 and 1x1 stride-2 convolutions)."""
  size = cpu_kernels.STRIDE2_PHASES_MIN_SIZE + 1
  with jax.enable_x64(True):
    rng = np.random.default_rng(kernel)
    x = jnp.asarray(rng.normal(size=(2, size, size + 1, 3)), jnp.float64)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 4)), jnp.float64)
    pads = ((padding, padding), (padding, padding))
    y, vjp = jax.vjp(lambda a, b: cpu_kernels.conv2d(a, b, (2, 2), pads), x, k)
    y_ref, vjp_ref = jax.vjp(lambda a, b: lax.conv_general_dilated(
        a, b, (2, 2), pads, dimension_numbers=("NHWC", "HWIO", "NHWC")), x, k)
    assert _rel_err(y, y_ref) <= 1e-12
    g = jnp.asarray(rng.normal(size=y.shape), jnp.float64)
    for a, b in zip(vjp(g), vjp_ref(g)):
      assert _rel_err(a, b) <= 1e-12


def test_stride2_conv_gradient_has_no_dilated_convolution():
  """What the phase form is for: the backward pass of a stride-2 `conv2d` has no lhs-dilated
  convolution (XLA:CPU's generic path), where autodiff of the plain convolution has one."""
  x = jnp.ones((2, 16, 16, 8))
  k = jnp.ones((4, 4, 8, 8))

  def dilations(fn):
    jaxpr = jax.make_jaxpr(jax.grad(lambda a: jnp.sum(fn(a, k) ** 2)))(x)
    text = str(jaxpr)
    return [line for line in text.splitlines()
            if "conv_general_dilated" in line or "lhs_dilation" in line]

  plain = lambda a, k: lax.conv_general_dilated(a, k, (2, 2), ((1, 1), (1, 1)),
                                                dimension_numbers=("NHWC", "HWIO", "NHWC"))
  fast = lambda a, k: cpu_kernels.conv2d(a, k, (2, 2), ((1, 1), (1, 1)))
  assert any("lhs_dilation=(2, 2)" in line for line in dilations(plain))
  assert dilations(fast) and not any("lhs_dilation=(2, 2)" in line for line in dilations(fast))


def test_batch_chunks_cover_the_batch_in_near_equal_pieces():
  assert cpu_kernels.batch_chunks(48, 2**20, 6 * 2**20) == [(i, i + 6) for i in range(0, 48, 6)]
  assert cpu_kernels.batch_chunks(7, 10, 25) == [(0, 2), (2, 4), (4, 5), (5, 7)]
  assert cpu_kernels.batch_chunks(3, 10**9) == [(0, 1), (1, 2), (2, 3)]
  assert cpu_kernels.batch_chunks(5, 1) == [(0, 5)]
  for n, b, c in ((13, 3, 10), (288, 196_608, 6 * 2**20), (1, 5, 1)):
    chunks = cpu_kernels.batch_chunks(n, b, c)
    sizes = [hi - lo for lo, hi in chunks]
    assert chunks[0][0] == 0 and chunks[-1][1] == n
    assert all(a[1] == b_[0] for a, b_ in zip(chunks, chunks[1:]))
    assert max(sizes) - min(sizes) <= 1


def test_conv_module_equals_nn_conv():
  """Same parameter tree, initial values, outputs and gradients as nn.Conv."""
  rng = np.random.default_rng(7)
  x = jnp.asarray(rng.normal(size=(3, 8, 8, 2)), jnp.float32)
  for kwargs in (dict(features=5, kernel_size=(3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),
                 dict(features=4, kernel_size=(1, 1), strides=(2, 2), use_bias=False)):
    ours, ref = layers.Conv(**kwargs), nn.Conv(**kwargs)
    v_ours, v_ref = ours.init(jax.random.key(3), x), ref.init(jax.random.key(3), x)
    assert jax.tree.structure(v_ours) == jax.tree.structure(v_ref)
    for a, b in zip(jax.tree.leaves(v_ours), jax.tree.leaves(v_ref)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    y_ours, y_ref = ours.apply(v_ours, x), ref.apply(v_ref, x)
    assert _rel_err(y_ours, y_ref) <= 1e-6
    g_ours = jax.grad(lambda v: jnp.sum(ours.apply(v, x) ** 2))(v_ours)
    g_ref = jax.grad(lambda v: jnp.sum(ref.apply(v, x) ** 2))(v_ref)
    for a, b in zip(jax.tree.leaves(g_ours), jax.tree.leaves(g_ref)):
      assert _rel_err(a, b) <= 1e-5


def test_conv_transpose_kernel_gradient_in_chunks_float64(monkeypatch):
  """The transposed conv's custom VJP with several kernel-gradient chunks == plain autodiff."""
  monkeypatch.setattr(cpu_kernels, "DW_CHUNK_BYTES", 2 * 4 * 4 * 3 * 8)   # 2 examples per chunk
  with jax.enable_x64(True):
    rng = np.random.default_rng(8)
    x = jnp.asarray(rng.normal(size=(5, 4, 4, 3)), jnp.float64)
    k = jnp.asarray(rng.normal(size=(4, 4, 3, 9)), jnp.float64)
    g = jnp.asarray(rng.normal(size=(5, 8, 8, 9)), jnp.float64)
    _, vjp_plain = jax.vjp(cpu_kernels.conv_transpose_4x4s2_plain, x, k)
    _, vjp_fast = jax.vjp(cpu_kernels.conv_transpose_4x4s2, x, k)
    for a, b in zip(vjp_fast(g), vjp_plain(g)):
      assert _rel_err(a, b) <= 1e-6


def test_plain_equals_flax_conv_transpose_and_torch_shape():
  """The plain formulation is nn.ConvTranspose(k=4, s=2, 'SAME') and doubles H, W."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(2, 4, 5, 3)), jnp.float64)
    ref = nn.ConvTranspose(5, (4, 4), strides=(2, 2), padding="SAME", param_dtype=jnp.float64,
                           dtype=jnp.float64)
    variables = ref.init(jax.random.key(0), x)
    y_ref = ref.apply(variables, x)
    kernel, bias = variables["params"]["kernel"], variables["params"]["bias"]
    y = cpu_kernels.conv_transpose_4x4s2_plain(x, kernel) + bias
    assert y.shape == (2, 8, 10, 5)
    assert _rel_err(y, y_ref) <= 1e-12


def test_module_grads_with_bias_and_split_inputs_match_flax_float64():
  """Module (custom VJP, 2 broadcast parts) == nn.ConvTranspose on the concatenation."""
  with jax.enable_x64(True):
    rng = np.random.default_rng(2)
    a = jnp.asarray(rng.normal(size=(2, 3, 4, 4, 3)), jnp.float64)   # [B, C6, H, W, 3]
    b = jnp.asarray(rng.normal(size=(2, 1, 4, 4, 5)), jnp.float64)   # shared over axis 1
    mod = layers.ConvTranspose4x4s2(7, dtype=jnp.float64, param_dtype=jnp.float64,
                                    bias_init=nn.initializers.normal(1.0))
    params = mod.init(jax.random.key(1), a, b)["params"]
    ref = nn.ConvTranspose(7, (4, 4), strides=(2, 2), padding="SAME", dtype=jnp.float64,
                           param_dtype=jnp.float64)
    target = jnp.asarray(rng.normal(size=(2, 3, 8, 8, 7)), jnp.float64)

    def loss_mod(p, a, b):
      return jnp.sum(jnp.sin(mod.apply({"params": p}, a, b)) * target)

    def loss_ref(p, a, b):
      cat = jnp.concatenate([a, jnp.broadcast_to(b, a.shape[:-1] + (5,))], -1)
      y = ref.apply({"params": p}, cat.reshape((-1, 4, 4, 8))).reshape(2, 3, 8, 8, 7)
      return jnp.sum(jnp.sin(y) * target)

    v1, g1 = jax.value_and_grad(loss_mod, argnums=(0, 1, 2))(params, a, b)
    v2, g2 = jax.value_and_grad(loss_ref, argnums=(0, 1, 2))(params, a, b)
    assert abs(float(v1) - float(v2)) <= 1e-9 * abs(float(v2))
    for x1, x2 in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
      assert x1.shape == x2.shape
      assert _rel_err(x1, x2) <= 1e-6


def test_custom_vjp_bfloat16_runs_and_is_close():
  rng = np.random.default_rng(3)
  x = jnp.asarray(rng.normal(size=(2, 4, 4, 8)), jnp.bfloat16)
  k = jnp.asarray(rng.normal(size=(4, 4, 8, 6)) * 0.1, jnp.bfloat16)
  gk_fast = jax.grad(
      lambda k: jnp.sum(cpu_kernels.conv_transpose_4x4s2(x, k).astype(jnp.float32)))(k)
  gk_plain = jax.grad(
      lambda k: jnp.sum(cpu_kernels.conv_transpose_4x4s2_plain(x, k).astype(jnp.float32)))(k)
  assert gk_fast.dtype == jnp.bfloat16
  assert _rel_err(gk_fast, gk_plain) < 2e-2


def test_bad_shapes_raise():
  with pytest.raises(ValueError, match="kernel"):
    cpu_kernels.conv_transpose_4x4s2(jnp.zeros((1, 2, 2, 3)), jnp.zeros((3, 3, 3, 2)))
  with pytest.raises(ValueError, match="config.model.kernels"):
    layers.ConvTranspose4x4s2(2, impl="fast").init(jax.random.key(0), jnp.zeros((1, 2, 2, 1)))


def test_l2_normalize_unit_and_zero_safe():
  x = jnp.array([[3.0, 4.0], [0.0, 0.0]])
  y = layers.l2_normalize(x)
  np.testing.assert_allclose(np.asarray(y), [[0.6, 0.8], [0.0, 0.0]], atol=1e-7)
  g = jax.grad(lambda x: jnp.sum(layers.l2_normalize(x)))(x)
  assert np.all(np.isfinite(np.asarray(g)))


def test_kernel_choice_resolves_per_backend():
  assert layers.resolve_kernels("auto", "cpu") == "cpu_tuned"
  assert layers.resolve_kernels("auto", "gpu") == layers.resolve_kernels("auto", "tpu") == "plain"
  assert layers.resolve_kernels("plain", "cpu") == "plain"
  with pytest.raises(ValueError, match="config.model.kernels"):
    layers.resolve_kernels("custom")


def test_cpu_tuned_and_plain_kernels_are_interchangeable():
  """Same parameter tree, and the same values and gradients to float32 tolerance, for the U-Net
  (strided and transposed convolutions) and the ResNet backbone (convolutions, max pool)."""
  from asmp_jax.models import classifiers, unet  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(5)
  spec = jnp.asarray(rng.normal(size=(2, 128, 128)), jnp.float32)
  cond = jnp.asarray(rng.normal(size=(2, 2, 8)), jnp.float32)
  cases = [(lambda k: unet.ConditionedUNet(0.0625, conv_impl=k), (spec, cond)),
           (lambda k: classifiers.ResNetBackbone(4, (1, 1), kernels=k), (spec[:, :64, :64],))]
  for make, args in cases:
    tuned, plain = make("cpu_tuned"), make("plain")
    variables = tuned.init(jax.random.key(0), *args, train=True)
    assert (jax.tree.structure(variables)
            == jax.tree.structure(plain.init(jax.random.key(0), *args, train=True)))

    def loss(params, module):
      out, _ = module.apply({**variables, "params": params}, *args, train=True,
                            mutable=["batch_stats"])
      return jnp.sum(jnp.sin(out)), out
    (v1, out1), g1 = jax.value_and_grad(loss, has_aux=True)(variables["params"], tuned)
    (v2, out2), g2 = jax.value_and_grad(loss, has_aux=True)(variables["params"], plain)
    np.testing.assert_allclose(out1, out2, rtol=1e-4, atol=1e-5)
    # Per parameter to 1e-4 of the largest gradient (BatchNorm makes some gradients sums that
    # nearly cancel, whose own relative error is meaningless), and 1e-4 relative overall.
    scale = max(float(jnp.max(jnp.abs(a))) for a in jax.tree.leaves(g2))
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
      np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)
    flat = [jnp.concatenate([x.ravel() for x in jax.tree.leaves(g)]) for g in (g1, g2)]
    assert _rel_err(*flat) <= 1e-4
