"""The resnet18_crops node-feature extractor (asmp_jax.vision.crops) and its use by preprocess."""
import numpy as np
import pytest

from asmp_jax import preprocess
from asmp_jax.graph import features
from asmp_jax.graph.providers import Detections

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
crops = pytest.importorskip("asmp_jax.vision.crops")
weights_lib = pytest.importorskip("asmp_jax.vision.weights")


def _frame(h=48, w=64):
  return (np.random.default_rng(0).uniform(size=(h, w, 3)) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory):
  """A torchvision resnet18 state_dict with a 10-class fc, at a seeded random init."""
  torch.manual_seed(1)
  model = torchvision.models.resnet18(weights=None, num_classes=10)
  path = tmp_path_factory.mktemp("w") / "resnet18.pth"
  torch.save(model.state_dict(), path)
  return str(path), model.eval()


def test_features_equal_torchvision_resnet18_on_the_same_crops(weights_file):
  path, model = weights_file
  frame = _frame()
  boxes = np.array([[4, 4, 30, 40], [20.5, 10, 64, 48], [70, 5, 90, 20]], np.float32)
  feats = features.extract(features.RESNET18_CROPS, frame, boxes, weights=path)
  assert feats.shape == (3, features.feature_dim(features.RESNET18_CROPS)) == (3, 512)
  assert feats.dtype == np.float32
  x, keep = crops.preprocess_crops(frame, boxes)
  np.testing.assert_array_equal(keep, [0, 1])  # the third box lies outside the frame
  assert x.shape == (2, 3, 224, 224)
  # Crop 0 by hand: pixels [4:40, 4:30], bilinear to 224, ImageNet normalisation.
  import cv2  # pylint: disable=g-import-not-at-top
  ref = cv2.resize(frame[4:40, 4:30], (224, 224), interpolation=cv2.INTER_LINEAR) / 255.0
  np.testing.assert_allclose(x[0], ((ref - crops.MEAN) / crops.STD).transpose(2, 0, 1), atol=1e-6)
  # torchvision's network, fc bypassed: global average pool of the last stage.
  with torch.no_grad():
    t = torch.from_numpy(x)
    for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
      t = getattr(model, name)(t)
    want = t.mean(dim=(2, 3)).numpy()
  np.testing.assert_allclose(feats[:2], want, rtol=1e-4, atol=1e-5)
  assert not feats[2].any()
  assert np.abs(feats[0] - feats[1]).max() > 1e-3  # different crops, different features


def test_random_init_only_when_asked_and_is_reproducible(caplog):
  frame, boxes = _frame(), np.array([[0, 0, 32, 32]], np.float32)
  with caplog.at_level("WARNING"):
    a = crops.CropEncoder(crops.RANDOM)(frame, boxes)
  assert "random initialisation" in caplog.text
  crops.encoder.cache_clear()
  b = features.extract(features.RESNET18_CROPS, frame, boxes, weights=crops.RANDOM)
  np.testing.assert_array_equal(a, b)
  with pytest.raises(weights_lib.WeightsError, match="crop_encoder_weights"):
    features.extract(features.RESNET18_CROPS, frame, boxes, weights="")


def test_bad_weight_file_is_one_line_naming_it(tmp_path):
  frame, boxes = _frame(), np.array([[0, 0, 32, 32]], np.float32)
  garbage = tmp_path / "garbage.pth"
  garbage.write_bytes(b"not a torch file")
  other = tmp_path / "resnet34.pth"
  torch.save(torchvision.models.resnet34(weights=None, num_classes=2).state_dict(), other)
  for path in (garbage, other, tmp_path / "missing.pth"):
    with pytest.raises(weights_lib.WeightsError) as e:
      features.extract(features.RESNET18_CROPS, frame, boxes, weights=str(path))
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_preprocess_clip_gives_512_d_node_features(weights_file):
  path, _ = weights_file
  t, h, w = 8, 40, 48
  frames = np.stack([_frame(h, w)] * t)
  dets = Detections(np.array([0, 0]), np.array([[4, 4, 24, 30], [14, 8, 34, 32]], np.float32),
                    np.array([1, 5]), np.array([0.9, 0.8]))
  cfg = preprocess.PreprocessConfig(window_frames=8, num_windows=1, rectify=False,
                                    feature_extractor=features.RESNET18_CROPS,
                                    crop_encoder_weights=path)
  ex = preprocess.preprocess_clip(frames, np.full(40, 0.1, np.float32), dets,
                                  np.full((t, h, w), 4.0, np.float32),
                                  np.zeros((t, h, w, 2), np.float32), np.array([0, 1, 2]), cfg)
  assert ex["node_features"].shape == (1, preprocess.MAX_NODES, 512)
  mask = ex["node_mask"][0]
  assert mask[0] and mask[2] and mask[-1] and mask.sum() == 3  # source, context, background
  want = features.extract(features.RESNET18_CROPS, frames[0], dets.box, weights=path)
  np.testing.assert_allclose(ex["node_features"][0, [0, 2]].astype(np.float32), want,
                             rtol=1e-2, atol=1e-2)  # stored as float16
  assert not ex["node_features"][0, ~mask].any()


def test_unknown_extractor_names_the_registered_ones():
  with pytest.raises(ValueError, match="resnet18_crops"):
    features.feature_dim("resnet50")


def test_raw_crop_builder_carries_the_weights_and_refuses_a_bad_file_first(tmp_path, monkeypatch):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from asmp_data import real_builder, real_common  # pylint: disable=g-import-not-at-top
  from asmp_data.asiw import asiw_dataset_builder as asiw  # pylint: disable=g-import-not-at-top
  bad = tmp_path / "bad.pth"
  bad.write_bytes(b"not a torch file")
  monkeypatch.setenv(real_builder.CROP_WEIGHTS_ENV, str(bad))
  cfg = {c.name: c for c in real_builder.DEFAULT_CONFIGS}["raw_resnet18_crops"]
  pcfg = real_common._preprocess_config(cfg.settings())  # pylint: disable=protected-access
  assert (pcfg.feature_extractor, pcfg.crop_encoder_weights) == (features.RESNET18_CROPS, str(bad))
  manual = tmp_path / "manual"
  (manual / "videos").mkdir(parents=True)
  builder = asiw.Builder(data_dir=str(tmp_path / "tfds"), config="raw_resnet18_crops",
                         file_format="array_record")
  assert builder.info.metadata["feature_dim"] == 512
  with pytest.raises(weights_lib.WeightsError) as e:  # before the split lists are even read
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=str(manual)),
        file_format="array_record")
  assert str(e.value).startswith(str(bad)) and "\n" not in str(e.value)


def test_coseparation_config_builds_its_data_with_the_extractor_it_infers_with(monkeypatch):
  import pathlib  # pylint: disable=g-import-not-at-top
  from asmp_data import real_builder  # pylint: disable=g-import-not-at-top
  from asmp_jax import config_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv(real_builder.CROP_WEIGHTS_ENV, "/w/resnet18.pth")
  path = pathlib.Path(__file__).resolve().parents[1] / "configs" / "coseparation.py"
  config = config_lib.config_from_file(str(path))
  data_cfg = {c.name: c for c in real_builder.DEFAULT_CONFIGS}[config.data.builder_config]
  assert data_cfg.feature_extractor == config.graph.feature_extractor == features.RESNET18_CROPS
  assert data_cfg.settings().crop_encoder_weights == config.graph.crop_encoder_weights
  assert preprocess.PreprocessConfig.from_config(config).crop_encoder_weights == "/w/resnet18.pth"
  assert config.model.graph_mode == "single_node" and config.loss.lambda_dir == 0


def test_a_crop_checkpoint_with_a_missing_weight_file_is_refused_before_any_video(tmp_path):
  import ml_collections  # pylint: disable=g-import-not-at-top
  from asmp_jax import vision  # pylint: disable=g-import-not-at-top
  missing = str(tmp_path / "gone.pth")
  config = ml_collections.ConfigDict({"graph": {"feature_extractor": features.RESNET18_CROPS,
                                                "crop_encoder_weights": missing},
                                      "model": {"node_feature_dim": 512}})
  with pytest.raises(weights_lib.WeightsError, match="gone.pth: weight file not found"):
    vision.check_checkpoint(config, vision.VisionProviders(), None)
  config.graph.crop_encoder_weights = crops.RANDOM
  vision.check_checkpoint(config, vision.VisionProviders(), None)  # no detector needed
