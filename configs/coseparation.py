"""The Co-Separation baseline as published, on ASIW: configs/asiw.py with one object per source,
no graph, and each object embedded by a ResNet-18 on its pixels.

  python -c "import torch, torchvision; torch.save(torchvision.models.resnet18(
      weights='IMAGENET1K_V1').state_dict(), 'resnet18.pth')"   # once, where downloading is fine
  ASMP_CROP_ENCODER_WEIGHTS=$PWD/resnet18.pth python launch.py --config=configs/coseparation.py \\
      --workdir=runs/coseparation --config.data.manual_dir=PATH

PATH holds ASIW's videos and per-video detection files (the "raw" layout of configs/asiw.py's
data set; node features are computed from the pixels, so the released region features are not
used). The weight file is a torchvision ``resnet18`` ``state_dict``; the same variable names it
for building the data set (builder config ``raw_resnet18_crops``) and for
``config.graph.crop_encoder_weights`` (inference and separation re-embed crops with it).

Co-Separation (Gao & Grauman, ICCV 2019) separates each detected object's sound with a 7-layer
U-Net conditioned on the object's appearance: the object's crop, 224x224, through an
ImageNet-pretrained ResNet-18 (supplementary §C), with no graph, no motion and two losses, the
co-separation loss (the masks of a video's objects summed against that video's mask) and the
object-consistency loss (a classifier names each separated sound's object). Here:

* ``graph.feature_extractor = "resnet18_crops"``: each object's crop of the window's reference
  frame, 224x224, through a ResNet-18 (asmp_jax/vision/crops.py);
* ``model.graph_mode = "single_node"``: slot i is conditioned on auditory object i alone (no
  message passing, no GRU), the last slot on the background node;
* ``loss.lambda_dir = 0`` (no motion; the direction head is untrained and its accuracy is not a
  result of this baseline) and ``loss.lambda_ortho = 0`` (the orthogonality loss is AVSGS's and
  ASMP's); L_cyc (L1 between the sum of a video's masks and its target) and L_cons (the
  consistency classifier) stay, at ASMP's weights (1 and 0.05).

Where it differs from the original:

* the ResNet-18 is fixed and globally average-pooled to 512-d in preprocessing; the original
  keeps its 7x7x512 map, reduces it with a learned 1x1 convolution (128 channels) and a fully
  connected layer (512) trained with the separator. Here the learned part is the node MLP, whose
  output is unit-normalised before the U-Net tiles it;
* the objects are those of the detection files (the top two auditory classes of the clip, as the
  original's filtering keeps), not Co-Separation's own detector (Faster R-CNN on 15 Open Images
  instrument classes);
* L_cons takes the minimum over slot permutations, where the original ties each separation to
  its object's detected class;
* the last slot separates the background (ASMP's background node: a crop that overlaps no box).
"""

import os

from asmp_jax import config_lib


def get_config():
  config = config_lib.config_from_file(
      os.path.join(os.path.dirname(os.path.abspath(__file__)), "asiw.py"))
  config.data.builder_config = "raw_resnet18_crops"  # node features from the videos' pixels
  config.graph.feature_extractor = "resnet18_crops"  # ResNet-18 on each object's crop, 512-d
  config.graph.crop_encoder_weights = os.environ.get("ASMP_CROP_ENCODER_WEIGHTS", "")
  config.model.graph_mode = "single_node"  # one object per source, no graph, no GRU
  config.loss.lambda_dir = 0.0  # no motion
  config.loss.lambda_ortho = 0.0  # no orthogonality loss
  return config
