"""Tests for asmp_jax.schema: the stored example's features and the direction-label key."""
import ml_collections
import numpy as np
import pytest

from asmp_jax import datasets, preprocess, schema


def test_direction_key_names_the_stored_labels_and_refuses_other_counts():
  assert schema.direction_key(10) == "dir10" and schema.direction_key(28) == "dir28"
  spec = schema.example_spec(6, 66150, 32)
  assert {schema.direction_key(n) for n in (10, 28)} <= set(spec)
  for bad in (5, 27, None):
    with pytest.raises(ValueError, match="config.model.num_direction_classes must be one of"):
      schema.direction_key(bad)


def test_features_hold_the_example_spec():
  spec = schema.example_spec(6, 66150, 32)
  feats = schema.features(6, 66150, 32)
  assert set(feats.keys()) == set(spec) | {"clip_id"}
  for key, (shape, dtype) in spec.items():
    assert feats[key].shape == shape and feats[key].np_dtype == np.dtype(dtype), key
  assert spec["adjacency"][0] == (6, preprocess.MAX_NODES, preprocess.MAX_NODES)
  assert spec["dir10"][0] == (6, preprocess.MAX_AUDITORY)


@pytest.mark.parametrize("name,config", [("synthetic", "tiny"), ("synthetic", "default"),
                                         ("asiw", ""), ("ave", "")])
def test_every_builder_declares_the_schema(name, config, tmp_path):
  builder = datasets.get_builder(ml_collections.ConfigDict(
      dict(name=name, builder_config=config, data_dir=str(tmp_path))))
  info = builder.info
  meta = info.metadata
  nw, fdim = meta["num_windows"], meta["feature_dim"]
  ns = info.features["audio"].shape[0]
  assert ns == nw * meta["window_samples"]
  assert info.features.to_json() == schema.features(nw, ns, fdim).to_json()
