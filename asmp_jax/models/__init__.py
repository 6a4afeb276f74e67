"""ASMP model components (Flax linen): layers, graph encoder, U-Net, classifiers, the full model."""
from asmp_jax.models import authors  # noqa: F401  (registers graph_mode "authors")
from asmp_jax.models import conditioners
from asmp_jax.models.asmp import (ASMP, BATCH_DTYPES, ModelSpec, batch_shapes, create_model,
                                  init_variables, spec_from_config)
from asmp_jax.models.conditioners import assign_steps_to_slots, select_slot_nodes
from asmp_jax.models.classifiers import (ConsistencyClassifier, DirectionClassifier,
                                         ResNetBackbone, time_windows)
from asmp_jax.models.graph_encoder import GraphEncoder, flatten_graphs, masked_max_mean_pool
from asmp_jax.models.cpu_kernels import conv_transpose_4x4s2, conv_transpose_4x4s2_plain
from asmp_jax.models.layers import ConvTranspose4x4s2, l2_normalize
from asmp_jax.models.unet import ConditionedUNet

__all__ = [
    "ASMP", "BATCH_DTYPES", "ModelSpec", "conditioners", "assign_steps_to_slots", "batch_shapes",
    "create_model", "init_variables", "select_slot_nodes", "spec_from_config",
    "ConsistencyClassifier", "DirectionClassifier", "ResNetBackbone", "time_windows",
    "GraphEncoder", "flatten_graphs", "masked_max_mean_pool",
    "ConvTranspose4x4s2", "conv_transpose_4x4s2", "conv_transpose_4x4s2_plain", "l2_normalize",
    "ConditionedUNet",
]
