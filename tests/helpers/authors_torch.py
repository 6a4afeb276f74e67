"""A plain-PyTorch re-implementation of the ASMP public code's test-time networks.

Written from the released code's structure (``metro-smiles/asmp``, torch_geometric 2.0.3), not
copied, and without torch_geometric: the GATConv (``edge_dim=1``, self loops re-added with the mean
incoming edge attribute) and EdgeConv (max aggregation) sums are spelled out. The module and
parameter names reproduce the release's ``state_dict`` keys, so ``torch.save(net.state_dict())``
writes files in the release's format (shared tensors included). Sizes are arguments so that
tests can use small networks; the defaults are the released ones.
"""
from __future__ import annotations

import os

import torch
from torch import nn
import torch.nn.functional as F

RELEASE_FILES = ("unet_final.pth", "graph_net_final.pth", "map_net_final.pth", "rnn_final.pth",
                 "fusion_enc_final.pth", "dir_classifier_final.pth", "classifier_final.pth")


def _down(cin, cout):
  return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2))


def _up(cin, cout, last=False):
  if last:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.Sigmoid())
  return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU())


class UNet7(nn.Module):
  """AudioVisual7layerUNet(ngf, input_nc=1, output_nc=1)."""

  def __init__(self, ngf=64):
    super().__init__()
    w = [ngf, ngf * 2, ngf * 4, ngf * 8, ngf * 8, ngf * 8, ngf * 8]
    cin = 1
    for i, c in enumerate(w):
      setattr(self, f"audionet_convlayer{i + 1}", _down(cin, c))
      cin = c
    ins = [ngf * 16, ngf * 16, ngf * 16, ngf * 16, ngf * 8, ngf * 4, ngf * 2]
    outs = [ngf * 8, ngf * 8, ngf * 8, ngf * 4, ngf * 2, ngf, 1]
    for i, (a, b) in enumerate(zip(ins, outs)):
      setattr(self, f"audionet_upconvlayer{i + 1}", _up(a, b, last=i == 6))

  def forward(self, x, visual):
    feats = []
    for i in range(7):
      x = getattr(self, f"audionet_convlayer{i + 1}")(x)
      feats.append(x)
    v = visual.repeat(1, 1, x.shape[2], x.shape[3])
    y = self.audionet_upconvlayer1(torch.cat((v, x), 1))
    for i in range(1, 7):
      y = getattr(self, f"audionet_upconvlayer{i + 1}")(torch.cat((y, feats[6 - i]), 1))
    return y


class _Linear(nn.Module):
  """torch_geometric's bias-free ``Linear``: only a ``weight`` parameter."""

  def __init__(self, cin, cout):
    super().__init__()
    self.weight = nn.Parameter(torch.empty(cout, cin))
    nn.init.xavier_uniform_(self.weight)

  def forward(self, x):
    return x @ self.weight.t()


class GATConvEdge(nn.Module):
  """GATConv(cin, head_dim, heads, edge_dim=1): self loops removed, re-added with the mean
  attribute of each node's incoming edges; softmax over each target's edges; concat + bias."""

  def __init__(self, cin, head_dim, heads):
    super().__init__()
    self.heads, self.head_dim = heads, head_dim
    self.lin_src = _Linear(cin, heads * head_dim)
    self.lin_dst = self.lin_src
    self.att_src = nn.Parameter(torch.empty(1, heads, head_dim))
    self.att_dst = nn.Parameter(torch.empty(1, heads, head_dim))
    self.lin_edge = _Linear(1, heads * head_dim)
    self.att_edge = nn.Parameter(torch.empty(1, heads, head_dim))
    self.bias = nn.Parameter(torch.empty(heads * head_dim))
    for p in (self.att_src, self.att_dst, self.att_edge):
      nn.init.xavier_uniform_(p)
    nn.init.normal_(self.bias, 0.0, 0.1)

  def forward(self, x, edge_index, edge_attr):
    n = x.shape[0]
    h, c = self.heads, self.head_dim
    z = self.lin_src(x).view(n, h, c)
    keep = edge_index[0] != edge_index[1]
    src, dst, attr = edge_index[0][keep], edge_index[1][keep], edge_attr[keep]
    total = torch.zeros(n).index_add_(0, dst, attr)
    count = torch.zeros(n).index_add_(0, dst, torch.ones_like(attr))
    loop_attr = total / count.clamp(min=1)
    loops = torch.arange(n)
    src, dst = torch.cat([src, loops]), torch.cat([dst, loops])
    attr = torch.cat([attr, loop_attr])
    a = (z * self.att_src).sum(-1)[src] + (z * self.att_dst).sum(-1)[dst]
    a = a + (self.lin_edge(attr.view(-1, 1)).view(-1, h, c) * self.att_edge).sum(-1)
    a = F.leaky_relu(a, 0.2)
    out = torch.zeros(n, h, c)
    for i in range(n):  # softmax over the edges into node i
      sel = dst == i
      alpha = torch.softmax(a[sel], dim=0)
      out[i] = (z[src[sel]] * alpha.unsqueeze(-1)).sum(0)
    return out.reshape(n, h * c) + self.bias


class EdgeConvMax(nn.Module):
  """EdgeConv(Seq(Seq(Linear(2*cin, cout), ReLU(), BatchNorm1d(cout))), aggr='max')."""

  def __init__(self, cin, cout):
    super().__init__()
    self.nn = nn.Sequential(nn.Sequential(nn.Linear(2 * cin, cout), nn.ReLU(),
                                          nn.BatchNorm1d(cout)))

  def forward(self, x, edge_index):
    src, dst = edge_index
    m = self.nn(torch.cat([x[dst], x[src] - x[dst]], -1))
    out = torch.zeros(x.shape[0], m.shape[1])
    for i in range(x.shape[0]):
      sel = dst == i
      if sel.any():
        out[i] = m[sel].max(0).values
    return out


class GraphNet3(nn.Module):
  """GraphNet_3: GAT -> ReLU; EdgeConv on it -> ReLU; each pooled [max || mean]; summed."""

  def __init__(self, feat_dim=512, nhid=256, heads=4):
    super().__init__()
    self.node_conv = GATConvEdge(feat_dim, nhid // heads, heads)
    self.edge_conv = EdgeConvMax(nhid, nhid)

  def forward(self, x, edge_index, edge_attr):
    edge_attr = torch.where(torch.isnan(edge_attr), torch.zeros_like(edge_attr), edge_attr)
    xn = F.relu(self.node_conv(x, edge_index, edge_attr))
    xe = F.relu(self.edge_conv(xn, edge_index))
    pool = lambda t: torch.cat([t.max(0, keepdim=True).values, t.mean(0, keepdim=True)], 1)
    return pool(xn) + pool(xe)


class BasicBlock(nn.Module):

  def __init__(self, cin, cout, stride):
    super().__init__()
    self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
    self.bn1 = nn.BatchNorm2d(cout)
    self.relu = nn.ReLU()
    self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
    self.bn2 = nn.BatchNorm2d(cout)
    self.downsample = None
    if stride != 1 or cin != cout:
      self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                      nn.BatchNorm2d(cout))

  def forward(self, x):
    y = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
    return self.relu(y + (x if self.downsample is None else self.downsample(x)))


class Resnet18(nn.Module):
  """Resnet18(pool_type='maxpool', input_channel=1, with_fc=True): torchvision's ResNet-18 body
  behind a 1-channel ``conv1`` that is also ``feature_extraction.0`` (one shared tensor)."""

  def __init__(self, fc_out, width=64):
    super().__init__()
    self.conv1 = nn.Conv2d(1, width, 7, 2, 3, bias=False)
    layers = [self.conv1, nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
    cin = width
    for stage in range(4):
      cout = width * 2**stage
      stride = 1 if stage == 0 else 2
      layers.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
      cin = cout
    self.feature_extraction = nn.Sequential(*layers)
    self.fc = nn.Linear(cin, fc_out)

  def forward(self, x):
    x = F.adaptive_max_pool2d(self.feature_extraction(x), 1)
    return self.fc(x.view(x.shape[0], -1))


def map_net(feat_dim=2048, embed=512):
  return nn.Sequential(nn.Linear(feat_dim, feat_dim // 2), nn.LeakyReLU(0.2),
                       nn.Linear(feat_dim // 2, embed))


def dir_classifier(hidden=512, num_dir=28):
  return nn.Sequential(nn.Linear(hidden, hidden // 2), nn.BatchNorm1d(hidden // 2),
                       nn.LeakyReLU(0.2), nn.Linear(hidden // 2, num_dir),
                       nn.BatchNorm1d(num_dir))


class Release(nn.Module):
  """The seven released networks at one size (defaults: the released sizes)."""

  def __init__(self, feat_dim=2048, ngf=64, heads=4, nhid=256, res_width=64, num_classes=15,
               num_dir=28):
    super().__init__()
    embed = ngf * 8
    self.unet = UNet7(ngf)
    self.graph_net = GraphNet3(embed, nhid, heads)
    self.map_net = map_net(feat_dim, embed)
    self.rnn = nn.GRU(embed, embed, 1)
    self.fusion_enc = Resnet18(embed, res_width)
    self.dir_classifier = dir_classifier(embed, num_dir)
    self.classifier = Resnet18(num_classes, res_width)

  def randomize_statistics(self, generator):
    """Non-trivial BatchNorm running statistics and affine parameters (deterministic)."""
    for m in self.modules():
      if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        c = m.num_features
        m.running_mean.copy_(torch.randn(c, generator=generator) * 0.1)
        m.running_var.copy_(torch.rand(c, generator=generator) + 0.5)
        m.weight.data.copy_(torch.rand(c, generator=generator) + 0.5)
        m.bias.data.copy_(torch.randn(c, generator=generator) * 0.1)
        m.num_batches_tracked.fill_(7)

  def save(self, directory, files=RELEASE_FILES):
    os.makedirs(directory, exist_ok=True)
    for f in files:
      torch.save(getattr(self, f[:-len("_final.pth")]).state_dict(), os.path.join(directory, f))

  def embedding(self, node_features, edge_index, edge_attr):
    """GRU step 0 from a zero state on the graph embedding: ``[1, embed]`` (test scripts)."""
    zeta = self.graph_net(self.map_net(node_features), edge_index, edge_attr)
    out, _ = self.rnn(zeta.unsqueeze(0), torch.zeros(1, 1, self.rnn.hidden_size))
    return out.squeeze(0)

  def forward(self, mix_log_mag, node_features, edge_index, edge_attr, window):
    """The test scripts' reconstruct + dir_pred steps for one video: (mask, class logits,
    direction logits of the time window ``window``)."""
    emb = self.embedding(node_features, edge_index, edge_attr)
    mask = self.unet(mix_log_mag, emb[:, :, None, None])
    sep = torch.log(torch.exp(mix_log_mag) * mask + 1e-10)
    logits = self.classifier(sep)
    cols = sep[..., window * 42:window * 42 + 46]
    return mask, logits, self.dir_classifier(self.fusion_enc(cols))
