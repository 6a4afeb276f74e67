"""Scene-graph construction: pseudo-3D geometry, rectification, motion labels and graphs.

Modules:
  geometry: back-projection of boxes to pseudo-3D, Chamfer distances, RBF edge weights,
    similarity fitting (Umeyama) and trimmed ICP.
  rectify: Lucas–Kanade tracking and per-window rectification to the reference frame.
  motion: flow composition, per-object 3D displacement and 10/28-way direction classes.
  build: IoU, context selection, background crop, graph construction and static padding.
"""

from asmp_jax.graph.build import background_box
from asmp_jax.graph.build import build_window_graph
from asmp_jax.graph.build import DEFAULT_MAX_NODES
from asmp_jax.graph.build import default_max_edges
from asmp_jax.graph.build import EDGE_MODES
from asmp_jax.graph.build import iou
from asmp_jax.graph.build import NODE_AUDITORY
from asmp_jax.graph.build import NODE_BACKGROUND
from asmp_jax.graph.build import NODE_CONTEXT
from asmp_jax.graph.build import pad_graph
from asmp_jax.graph.build import select_context
from asmp_jax.graph.geometry import apply_similarity
from asmp_jax.graph.geometry import bilinear_sample
from asmp_jax.graph.geometry import box_points
from asmp_jax.graph.geometry import chamfer_distance
from asmp_jax.graph.geometry import fit_similarity
from asmp_jax.graph.geometry import icp
from asmp_jax.graph.geometry import lift_points
from asmp_jax.graph.geometry import normalized_distances
from asmp_jax.graph.geometry import pairwise_chamfer
from asmp_jax.graph.geometry import rbf_edge_weights
from asmp_jax.graph.motion import BACKGROUND_CLASS
from asmp_jax.graph.motion import compose_flow
from asmp_jax.graph.motion import cube_directions
from asmp_jax.graph.motion import DEFAULT_THRESHOLDS
from asmp_jax.graph.motion import direction_class
from asmp_jax.graph.motion import direction_names
from asmp_jax.graph.motion import INVALID_CLASS
from asmp_jax.graph.motion import NO_MOTION_CLASS
from asmp_jax.graph.motion import object_displacement
from asmp_jax.graph.motion import window_displacements
from asmp_jax.graph.rectify import rectify_window
from asmp_jax.graph.rectify import track_points
from asmp_jax.graph.rectify import WindowRectification
