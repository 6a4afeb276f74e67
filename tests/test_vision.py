"""Learned providers (asmp_jax.vision) with the real architectures at random initialisation:
weights saved in the libraries' formats to a temp dir and loaded by the providers; outputs
against the libraries called directly; variants read from the weights; bad weight files."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")

from torchvision import ops  # pylint: disable=g-import-not-at-top,wrong-import-position
from torchvision.models import detection, optical_flow  # pylint: disable=g-import-not-at-top

from asmp_jax import vision  # pylint: disable=g-import-not-at-top,wrong-import-position
from asmp_jax.graph import providers as graph_providers
from asmp_jax.vision import depth as depth_lib
from asmp_jax.vision import detector as detector_lib
from asmp_jax.vision import flow as flow_lib
from asmp_jax.vision import labels as labels_lib
from asmp_jax.vision import weights as weights_lib

# Small inputs keep the full-size networks cheap on a CPU.
DET_KW = {"min_size": 64, "max_size": 96, "rpn_pre_nms_top_n_test": 50,
          "rpn_post_nms_top_n_test": 20, "box_detections_per_img": 6}


def small_dpt_config():
  return transformers.DPTConfig(
      image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
      intermediate_size=64, backbone_out_indices=[0, 1, 2, 3], neck_hidden_sizes=[16, 32, 64, 64],
      fusion_hidden_size=16)


def save_weights(d):
  """Random-init real architectures saved as the libraries publish them; returns the paths."""
  torch.manual_seed(0)
  paths = {}
  det = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
  paths["detector"] = str(d / "fasterrcnn.pth")
  torch.save(det.state_dict(), paths["detector"])
  paths["raft_small"] = str(d / "raft_small.pth")
  torch.save(optical_flow.raft_small(weights=None).state_dict(), paths["raft_small"])
  dpt = transformers.DPTForDepthEstimation(small_dpt_config())
  with torch.no_grad():  # the default init gives a near-constant output; spread it
    for p in dpt.parameters():
      p.normal_(0, 0.2) if p.ndim > 1 else p.uniform_(0, 0.1)
  paths["depth"] = str(d / "dpt")
  dpt.save_pretrained(paths["depth"])
  return paths


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  return save_weights(tmp_path_factory.mktemp("vision_weights"))


def frames(t=3, h=48, w=64, seed=0):
  rng = np.random.default_rng(seed)
  base = rng.integers(0, 255, (h + 8, w + 8, 3), dtype=np.uint8)
  return np.stack([base[k:k + h, 2 * k:2 * k + w] for k in range(t)])  # a moving texture


# ----------------------------------------------------------------------------- detector


def test_detector_matches_torchvision_and_gives_2048d_region_features(weights):
  det = detector_lib.FasterRCNNDetector(weights["detector"], score_threshold=0.0, batch_size=2,
                                        **DET_KW)
  assert det.name == "fasterrcnn_resnet50_fpn" and det.num_classes == 91
  assert det.class_names[1] == "person"
  x = frames(3)
  out = det.detect(x, "clip")
  assert out.feature.shape == (len(out), 2048) and out.feature.dtype == np.float32
  assert out.box.dtype == np.float32 and len(out) > 0
  assert set(out.frame.tolist()) <= {0, 1, 2}
  # The library called directly on the same frames.
  ref = detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None,
                                          box_score_thresh=0.0, **DET_KW)
  ref.load_state_dict(torch.load(weights["detector"], weights_only=True))
  ref.eval()
  imgs = [detector_lib.to_tensor(f[None])[0] for f in x]
  lib, c5, sizes = [], [], []
  with torch.no_grad():  # in the detector's batches (2, then 1): the same kernels, the same sums
    for batch in (imgs[:2], imgs[2:]):
      lib += ref(batch)
      images, _ = ref.transform(batch)
      c5.append(ref.backbone.body(images.tensors)["3"])  # layer4: 2048 channels, stride 32
      sizes += images.image_sizes
  c5 = torch.cat(c5)
  assert c5.shape[1] == 2048
  for t, d in enumerate(lib):
    sel = out.frame == t
    np.testing.assert_allclose(out.box[sel], d["boxes"].numpy(), rtol=1e-4, atol=1e-3)
    np.testing.assert_array_equal(out.label[sel], d["labels"].numpy())
    np.testing.assert_allclose(out.score[sel], d["scores"].numpy(), rtol=1e-4, atol=1e-6)
    rh, rw = (sizes[t][0] / 48, sizes[t][1] / 64)
    boxes = d["boxes"] * torch.tensor([rw, rh, rw, rh])
    pooled = ops.roi_align(c5[t:t + 1], [boxes], 7, spatial_scale=1 / 32, sampling_ratio=2,
                           aligned=True).mean((2, 3))
    np.testing.assert_allclose(out.feature[sel], pooled.numpy(), rtol=1e-3, atol=1e-4)


def test_detector_variant_is_read_from_the_weights(tmp_path):
  path = str(tmp_path / "v2.pth")
  model = detection.fasterrcnn_resnet50_fpn_v2(weights=None, weights_backbone=None,
                                               num_classes=5)
  torch.save(model.state_dict(), path)
  det = detector_lib.FasterRCNNDetector(path, **DET_KW)
  assert det.name == "fasterrcnn_resnet50_fpn_v2" and det.num_classes == 5
  assert det.class_names == [f"class {i}" for i in range(5)]
  assert det.record()["sha256"] == weights_lib.sha256_file(path)


# ----------------------------------------------------------------------------- flow


@pytest.mark.parametrize("variant", ["raft_small", "raft_large"])
def test_flow_matches_torchvision_raft(variant, tmp_path):
  path = str(tmp_path / f"{variant}.pth")
  torch.manual_seed(1)
  model = getattr(optical_flow, variant)(weights=None).eval()
  torch.save(model.state_dict(), path)
  prov = flow_lib.RAFTFlow(path, batch_size=2, num_flow_updates=2)
  assert prov.name == variant
  x = frames(3, 128, 128)
  out = prov.flow(x)
  assert out.shape == (3, 128, 128, 2) and out.dtype == np.float32
  np.testing.assert_array_equal(out[-1], 0.0)
  pre = 2.0 * detector_lib.to_tensor(x) - 1.0  # the library's OpticalFlow preset
  with torch.no_grad():
    ref = model(pre[:-1], pre[1:], num_flow_updates=2)[-1].permute(0, 2, 3, 1).numpy()
  np.testing.assert_allclose(out[:-1], ref, rtol=1e-4, atol=1e-4)


def test_flow_is_rescaled_to_frames_of_any_size(weights):
  prov = flow_lib.RAFTFlow(weights["raft_small"], num_flow_updates=1)
  assert flow_lib.model_size(60, 200) == (128, 200)
  out = prov.flow(frames(2, 60, 90))
  assert out.shape == (2, 60, 90, 2) and np.isfinite(out).all()


# ----------------------------------------------------------------------------- depth


def test_depth_matches_transformers_dpt_and_is_converted(weights):
  prov = depth_lib.DPTDepth(weights["depth"], batch_size=2)
  x = frames(3)
  inv = prov.inverse_depth(x)
  model = transformers.DPTForDepthEstimation.from_pretrained(weights["depth"],
                                                             use_safetensors=True).eval()
  # The reference runs in the provider's batches (2, then 1): CPU kernels chosen by batch size
  # sum in different orders, which moved single pixels by 3e-4 with these spread weights.
  ref = []
  with torch.no_grad():
    for s in (slice(0, 2), slice(2, 3)):
      pred = model(pixel_values=prov.preprocess(x[s])).predicted_depth[:, None]
      ref.append(torch.nn.functional.interpolate(pred, size=(48, 64), mode="bicubic",
                                                 align_corners=False)[:, 0].numpy())
  np.testing.assert_allclose(inv, np.concatenate(ref), rtol=1e-4, atol=1e-4)
  z = prov.depth(x)
  assert z.shape == (3, 48, 64) and z.dtype == np.float32
  assert z.min() >= 0.0 and z.max() <= 1.0 and z.std() > 0
  np.testing.assert_array_equal(z, depth_lib.pseudo_depth(inv))
  pre = prov.preprocess(x)
  assert tuple(pre.shape) == (3, 3, 64, 64) and float(pre.min()) >= -1 and float(pre.max()) <= 1


def test_pseudo_depth_turns_inverse_depth_into_normalised_depth():
  ramp = np.linspace(1.0, 11.0, 101)[None, None, :].repeat(4, 1)  # nearer to the right
  z = depth_lib.pseudo_depth(np.concatenate([ramp, np.full_like(ramp, 3.0)]))
  assert z[0, 0, 0] == 1.0 and z[0, 0, -1] == 0.0  # farthest 1, nearest 0
  assert (np.diff(z[0, 0]) <= 0).all() and (np.diff(z[0, 0, 3:-3]) < 0).all()
  np.testing.assert_allclose(z[0, 0, 50], 0.5, atol=1e-6)  # linear between the percentiles
  np.testing.assert_array_equal(z[1], 1.0)  # a flat frame: the flat-depth value
  # MiDaS's inverse depth is known up to scale and shift per frame: the result is not.
  np.testing.assert_allclose(depth_lib.pseudo_depth(7.0 * ramp + 2.0), z[:1], atol=1e-6)


# ----------------------------------------------------------------------------- labels


def test_relabel_maps_coco_to_the_data_set_and_keeps_unknown_classes_named():
  names = detector_lib.default_class_names(91)
  dets = graph_providers.Detections([0, 0, 1], np.zeros((3, 4)),
                                    [names.index("dog"), names.index("person"),
                                     names.index("kite")], [0.9, 0.8, 0.7])
  asiw = ["baby", "bell", "bird", "camera", "clock", "dog", "toilet", "horse", "people",
          "sheep_goat", "telephone", "train", "vehicle", "water"]
  out, got = labels_lib.relabel(dets, names, asiw)
  assert out.label.tolist() == [5, 8, 14 + names.index("kite")]
  assert got[5] == "dog" and got[8] == "people" and got[out.label[2]] == "detector: kite"
  lines = labels_lib.vocabulary_lines(names, "asiw", {"people": ["man", "woman"]})
  assert lines[1] == "person,man,woman" and lines[names.index("kite")] == "kite"


# ----------------------------------------------------------------------------- bad weights


class _Evil:
  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, "w"))


def test_bad_weight_files_are_refused_in_one_line(weights, tmp_path):
  marker = str(tmp_path / "pwned")
  evil = str(tmp_path / "evil.pth")
  torch.save({"x": _Evil(marker)}, evil)
  garbage = str(tmp_path / "garbage.pth")
  with open(garbage, "wb") as f:
    f.write(os.urandom(1000))
  cases = [
      (lambda: detector_lib.FasterRCNNDetector(str(tmp_path / "nope.pth")), "not found"),
      (lambda: detector_lib.FasterRCNNDetector(garbage), "unreadable"),
      (lambda: detector_lib.FasterRCNNDetector(evil), "unsafe"),
      (lambda: detector_lib.FasterRCNNDetector(weights["raft_small"]), "fasterrcnn_resnet50_fpn"),
      (lambda: flow_lib.RAFTFlow(weights["detector"]), "raft_small or raft_large"),
      (lambda: depth_lib.DPTDepth(weights["detector"]), "save_pretrained"),
  ]
  for make, part in cases:
    with pytest.raises(weights_lib.WeightsError) as e:
      make()
    msg = str(e.value)
    assert part in msg and "\n" not in msg and ("expected" in msg or "not found" in msg), msg
  assert not os.path.exists(marker)  # the pickle's code never ran


def test_bad_dpt_directories_are_refused(weights, tmp_path):
  import shutil  # pylint: disable=g-import-not-at-top
  only_bin = tmp_path / "bin"
  shutil.copytree(weights["depth"], only_bin)
  os.rename(only_bin / "model.safetensors", only_bin / "pytorch_model.bin")
  other = tmp_path / "other"
  shutil.copytree(weights["depth"], other)
  cfg = small_dpt_config()
  cfg.fusion_hidden_size = 24  # the weights no longer fit the config
  cfg.save_pretrained(str(other))
  for d, part in ((only_bin, "found only pytorch_model.bin"), (other, "cannot load")):
    with pytest.raises(weights_lib.WeightsError, match=part) as e:
      depth_lib.DPTDepth(str(d))
    assert str(d) in str(e.value) and "safetensors" in str(e.value)


def test_vision_providers_bundle_records_names_and_hashes(weights):
  none = vision.VisionProviders.load()
  assert not none and none.records() == {"detections": None, "depth": None, "flow": None}
  both = vision.VisionProviders.load(depth_weights=weights["depth"],
                                     flow_weights=weights["raft_small"])
  rec = both.records()
  assert rec["detections"] is None and rec["flow"]["name"] == "raft_small"
  assert rec["flow"]["sha256"] == weights_lib.sha256_file(weights["raft_small"])
  assert rec["depth"]["sha256"] == weights_lib.sha256_file(
      os.path.join(weights["depth"], "model.safetensors"))
  assert graph_providers.is_frame_model(both.depth) and graph_providers.is_frame_model(both.flow)


class _StubDetector:
  """Stands in for the detector: fixed detections with COCO class ids."""
  name, path, score_threshold, feature_dim = "stub", "stub.pth", 0.5, 2048

  def __init__(self, dets):
    self.dets = dets
    self.class_names = detector_lib.default_class_names(91)

  def detect(self, frames, label=""):
    del frames, label
    return self.dets

  def record(self):
    return {"name": self.name}


def test_learned_detections_fallbacks_are_logged_and_unknown_classes_become_candidates():
  from asmp_jax.vision import separation  # pylint: disable=g-import-not-at-top
  names = detector_lib.default_class_names(91)
  synthetic = ["violin", "flute", "bell", "car", "bird", "drum", "siren", "clock", "bee",
               "person", "table", "plant", "lamp"]
  aud = np.arange(9)
  empty = graph_providers.Detections(np.zeros(0), np.zeros((0, 4)), np.zeros(0), np.zeros(0))
  dets, ids, _, _, warns = separation.learned_detections(_StubDetector(empty), None, synthetic,
                                                         aud)
  assert len(dets) == 0 and list(ids) == list(aud)
  assert len(warns) == 1 and "found no object above score 0.5" in warns[0]
  # Only classes the checkpoint does not know: the best-scoring ones become the sources.
  kite, dog, person = names.index("kite"), names.index("dog"), names.index("person")
  some = graph_providers.Detections([0, 1, 1, 2], np.ones((4, 4)), [kite, dog, dog, person],
                                    [0.9, 0.6, 0.6, 0.99])
  dets, ids, got, used, warns = separation.learned_detections(_StubDetector(some), None,
                                                              synthetic, aud)
  assert list(ids) == [13 + dog, 13 + kite]  # summed scores 1.2 and 0.9; person is context
  assert used["auditory_candidates"] == ["detector: dog", "detector: kite"]
  assert "detector: dog" in warns[0] and got[9] == "person"
  # A known auditory class present: the checkpoint's own ids, no warning.
  car = graph_providers.Detections([0], np.ones((1, 4)), [names.index("car")], [0.8])
  dets, ids, _, used, warns = separation.learned_detections(_StubDetector(car), None, synthetic,
                                                            aud)
  assert dets.label.tolist() == [3] and list(ids) == list(aud) and not warns
