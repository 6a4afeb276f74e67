"""ASMP train and inference step: ours (JAX/Flax) against the PyTorch twin, side by side.

Ours: `asmp_jax.train.train_step` jitted with the train state donated (as `train_and_evaluate`
does), on a batch with the input pipeline's layout (`bench/train_step_bench.py`'s
``random_batch``: waveform crops, padded 23-node graphs, labels). Theirs: `bench/torch_twin.py`
(the same model written like the public PyTorch code: the mixture re-encoded per conditioning)
with the same losses, ``backward()`` and ``torch.optim.Adam``. Both start from the same weights
(ours are initialised, saved and ported into the twin) and see the same batch, so their first
losses agree; the script prints both.

Measurement: for each batch size a fresh *pair of worker processes* (one JAX, one PyTorch) is
started; each compiles / warms up, then the driver asks them for one step at a time, alternating
A B, B A, ... (the order flips every round), so that the machine's drifting load hits both alike
and the two runtimes never compete for the cores (and their idle thread pools do not spin against
each other). Printed per batch size and step kind: medians, the speed-up ``twin / ours`` (> 1
means ours is faster), peak resident memory of each process (``getrusage``), XLA's FLOP count of
our step (``compiled.cost_analysis()``) and its buffer plan (``memory_analysis()``), the twin's
FLOPs (``torch.utils.flop_counter``), the achieved FLOP/s and, on a GPU, the fraction of the
device's peak (`PEAK_TFLOPS`). The load average is printed before and after.

The same script runs unchanged on a GPU: JAX uses its default backend, the twin CUDA when
``torch.cuda.is_available()``; GPU memory is then reported from the allocators.

  python bench/torch_vs_jax.py                                  # batch 4 and 8, 5 rounds each
  python bench/torch_vs_jax.py --batches=8 --repeats=3 --results_file=
  python bench/torch_vs_jax.py --encoder_once_twin              # twin that encodes once too

Results are written between markers in the "## Train step against a PyTorch twin" section of
``--results_file`` (default docs/RESULTS.md; the section is appended if absent; text outside
the markers is left alone). ``--results_file=`` writes nothing.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import pathlib
import resource
import statistics
import sys
import tempfile
import time
import traceback
from typing import Any

import numpy as np

BENCH_DIR = pathlib.Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
SECTION = "## Train step against a PyTorch twin"
BEGIN, END = "<!-- torch_vs_jax:begin -->", "<!-- torch_vs_jax:end -->"

# Dense peak TFLOP/s per device kind (vendor data sheets; SXM parts): (float32, tf32, bf16).
PEAK_TFLOPS = {
    "H200": (67.0, 495.0, 989.0),
    "H100": (67.0, 495.0, 989.0),
    "A100": (19.5, 156.0, 312.0),
    "L4": (30.3, 60.0, 121.0),
    "V100": (15.7, None, None),
    "TPU v5p": (None, None, 459.0),
    "TPU v5 lite": (None, None, 197.0),
    "TPU v4": (None, None, 275.0),
}


def peak_for(device_kind: str) -> tuple[float | None, float | None, float | None] | None:
  for key, peak in PEAK_TFLOPS.items():
    if key.lower() in device_kind.lower():
      return peak
  return None


def load_config(path: str, feature_dim: int, num_classes: int, width_mult: float, cls_width: int):
  sys.path.insert(0, str(BENCH_DIR))
  from train_step_bench import load_config as _load  # pylint: disable=import-outside-toplevel
  config = _load(path)
  config.model.node_feature_dim = feature_dim
  config.model.num_classes = num_classes
  config.model.unet_width_mult = width_mult
  config.model.cls_width = cls_width
  return config


def peak_rss_bytes() -> int:
  """Peak resident set size of this process (Linux reports KiB)."""
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _flatten(tree: dict, prefix: str = "") -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    if hasattr(v, "items"):
      out.update(_flatten(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = np.asarray(v)
  return out


def _unflatten(flat: dict[str, np.ndarray]) -> dict:
  tree: dict = {}
  for key, v in flat.items():
    node = tree
    parts = key.split("/")
    for p in parts[:-1]:
      node = node.setdefault(p, {})
    node[parts[-1]] = v
  return tree


# ----------------------------------------------------------------------------- workers


class JaxSide:
  """Our jitted, donated train step and the jitted inference forward pass."""

  name = "ours (JAX)"

  def __init__(self, config, batch_np: dict[str, np.ndarray], weights_path: str):
    import jax  # pylint: disable=import-outside-toplevel
    from jax.sharding import (  # pylint: disable=import-outside-toplevel
        NamedSharding, PartitionSpec as P)
    from asmp_jax import optimizer, train  # pylint: disable=import-outside-toplevel
    from asmp_jax.models import asmp as asmp_model  # pylint: disable=import-outside-toplevel
    import functools  # pylint: disable=import-outside-toplevel
    self.jax = jax
    mesh = train.make_mesh()
    data, repl = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    model = asmp_model.create_model(config.model)
    tx = optimizer.create_optimizer(config.train)
    self.batch = jax.device_put(batch_np, data)
    self.state = jax.jit(lambda b, r: train.create_train_state(config, model, tx, b, r),
                         out_shardings=repl)(self.batch, jax.random.key(0))
    np.savez(weights_path, **{f"params/{k}": v for k, v in _flatten(self.state.params).items()},
             **{f"batch_stats/{k}": v for k, v in _flatten(self.state.batch_stats).items()})
    self.info: dict[str, Any] = {"device": f"{jax.devices()[0].platform}: "
                                           f"{jax.devices()[0].device_kind}"}
    step = jax.jit(functools.partial(train.train_step, model=model, tx=tx, config=config),
                   in_shardings=(repl, data), out_shardings=(repl, repl), donate_argnums=(0,))
    t0 = time.perf_counter()
    self.train_c = step.lower(self.state, self.batch).compile()
    self.info["compile_train_s"] = time.perf_counter() - t0
    self.info["flops_train"] = _xla_flops(self.train_c)
    self.info["xla_mem_train"] = _xla_memory(self.train_c)

    def infer(state, batch):
      mb = train._model_batch(batch, config.data.normalise_mix)  # pylint: disable=protected-access
      return model.apply({"params": state.params, "batch_stats": state.batch_stats}, mb,
                         train=False)

    t0 = time.perf_counter()
    self.infer_c = jax.jit(infer).lower(self.state, self.batch).compile()
    self.info["compile_infer_s"] = time.perf_counter() - t0
    self.info["flops_infer"] = _xla_flops(self.infer_c)
    self.state, metrics = self.train_c(self.state, self.batch)   # warm-up (donates the state)
    self.info["first_loss"] = float(metrics["loss"])
    jax.block_until_ready(self.infer_c(self.state, self.batch))

  def train(self) -> float:
    t0 = time.perf_counter()
    self.state, metrics = self.train_c(self.state, self.batch)
    self.jax.block_until_ready(metrics)
    return time.perf_counter() - t0

  def infer(self) -> float:
    t0 = time.perf_counter()
    self.jax.block_until_ready(self.infer_c(self.state, self.batch))
    return time.perf_counter() - t0

  def memory(self) -> dict[str, float]:
    out = {"peak_rss": peak_rss_bytes()}
    stats = self.jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
      out["device_peak"] = stats["peak_bytes_in_use"]
    return out


def _xla_flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else {}
  return float((cost or {}).get("flops", float("nan")))


def _xla_memory(compiled) -> dict[str, float]:
  try:
    m = compiled.memory_analysis()
  except Exception:  # pylint: disable=broad-except
    return {}
  if m is None:
    return {}
  return {k: float(getattr(m, f"{k}_size_in_bytes", float("nan")))
          for k in ("argument", "output", "temp", "alias")}


class TorchSide:
  """The twin's train step (forward, losses, backward, Adam) and ``inference_mode`` forward."""

  name = "twin (PyTorch)"

  def __init__(self, config, batch_np: dict[str, np.ndarray], weights_path: str,
               encoder_once: bool, count_flops: bool):
    import torch  # pylint: disable=import-outside-toplevel
    sys.path.insert(0, str(BENCH_DIR))
    import torch_twin as tt  # pylint: disable=import-outside-toplevel
    self.torch, self.tt, self.config = torch, tt, config
    self.device = "cuda" if torch.cuda.is_available() else "cpu"
    self.info: dict[str, Any] = {
        "device": (torch.cuda.get_device_name() if self.device == "cuda" else
                   f"cpu, {torch.get_num_threads()} threads"),
        "torch": torch.__version__}
    self.twin = tt.ASMPTwin(config.model, encoder_once=encoder_once).to(self.device)
    flat = dict(np.load(weights_path))
    tt.port_flax_variables(self.twin, {
        "params": _unflatten({k[len("params/"):]: v for k, v in flat.items()
                              if k.startswith("params/")}),
        "batch_stats": _unflatten({k[len("batch_stats/"):]: v for k, v in flat.items()
                                   if k.startswith("batch_stats/")})})
    self.opt = tt.make_optimizer(self.twin, config.train)
    self.batch = tt.to_torch(batch_np, self.device)
    self.info["first_loss"] = float(tt.train_step(self.twin, self.opt, self.batch, config))
    if count_flops:
      from torch.utils.flop_counter import (  # pylint: disable=import-outside-toplevel
          FlopCounterMode)
      with FlopCounterMode(display=False) as counter:
        tt.train_step(self.twin, self.opt, self.batch, config)
      self.info["flops_train"] = float(counter.get_total_flops())
      with FlopCounterMode(display=False) as counter:
        tt.inference_step(self.twin, self.batch, config)
      self.info["flops_infer"] = float(counter.get_total_flops())
    self.infer()                                                 # warm-up

  def _sync(self):
    if self.device == "cuda":
      self.torch.cuda.synchronize()

  def train(self) -> float:
    self._sync()
    t0 = time.perf_counter()
    self.tt.train_step(self.twin, self.opt, self.batch, self.config)
    self._sync()
    return time.perf_counter() - t0

  def infer(self) -> float:
    self._sync()
    t0 = time.perf_counter()
    self.tt.inference_step(self.twin, self.batch, self.config)
    self._sync()
    return time.perf_counter() - t0

  def memory(self) -> dict[str, float]:
    out = {"peak_rss": peak_rss_bytes()}
    if self.device == "cuda":
      out["device_peak"] = self.torch.cuda.max_memory_allocated()
    return out


def _worker(kind: str, conn, args: dict[str, Any]) -> None:
  """Builds one side, then serves ``train`` / ``infer`` / ``info`` / ``stop`` requests."""
  try:
    sys.path.insert(0, str(BENCH_DIR))
    from train_step_bench import random_batch  # pylint: disable=import-outside-toplevel
    config = load_config(args["config"], args["feature_dim"], args["num_classes"],
                         args["width_mult"], args["cls_width"])
    batch = random_batch(config, args["batch"], seed=0)
    if kind == "jax":
      side = JaxSide(config, batch, args["weights"])
    else:
      side = TorchSide(config, batch, args["weights"], args["encoder_once_twin"],
                       args["count_flops"])
    conn.send(("ready", side.info))
    while True:
      cmd = conn.recv()
      if cmd == "stop":
        break
      if cmd == "memory":
        conn.send(("ok", side.memory()))
      else:
        conn.send(("ok", getattr(side, cmd)()))
  except Exception:  # pylint: disable=broad-except
    conn.send(("error", traceback.format_exc()))
  finally:
    conn.close()


class Worker:
  def __init__(self, kind: str, args: dict[str, Any]):
    ctx = mp.get_context("spawn")
    self.kind = kind
    self.conn, child = ctx.Pipe()
    self.proc = ctx.Process(target=_worker, args=(kind, child, args), daemon=True)
    self.proc.start()
    self.info = self._recv("ready")

  def _recv(self, expect: str = "ok"):
    status, payload = self.conn.recv()
    if status == "error":
      raise RuntimeError(f"{self.kind} worker failed:\n{payload}")
    assert status == expect, status
    return payload

  def ask(self, cmd: str):
    self.conn.send(cmd)
    return self._recv()

  def close(self):
    try:
      self.conn.send("stop")
    except (BrokenPipeError, OSError):
      pass
    self.proc.join(timeout=60)


# ----------------------------------------------------------------------------- driver


def run_batch(batch: int, cli) -> dict[str, Any]:
  """One fresh worker pair for ``batch``; alternating rounds of train, then inference steps."""
  with tempfile.TemporaryDirectory() as tmp:
    args = dict(config=cli.config, feature_dim=cli.feature_dim, num_classes=cli.num_classes,
                width_mult=cli.width_mult, cls_width=cli.cls_width, batch=batch,
                weights=os.path.join(tmp, "weights.npz"),
                encoder_once_twin=cli.encoder_once_twin, count_flops=cli.count_flops)
    ours = Worker("jax", args)            # writes the initial weights the twin ports
    theirs = Worker("torch", args)
    try:
      sides = {"ours": ours, "twin": theirs}
      times: dict[str, dict[str, list[float]]] = {k: {"train": [], "infer": []} for k in sides}
      memory = {}
      for kind in ("train", "infer"):
        for r in range(cli.repeats):
          order = ("ours", "twin") if r % 2 == 0 else ("twin", "ours")
          for name in order:
            times[name][kind].append(sides[name].ask(kind))
          print(f"  batch {batch} {kind} round {r + 1}/{cli.repeats}: ours "
                f"{times['ours'][kind][-1]:.2f} s, twin {times['twin'][kind][-1]:.2f} s",
                flush=True)
        if kind == "train":
          memory = {name: w.ask("memory") for name, w in sides.items()}
      return dict(batch=batch, times=times, memory=memory, info_ours=ours.info,
                  info_twin=theirs.info)
    finally:
      ours.close()
      theirs.close()


def _gb(x: float | None) -> str:
  return "–" if x is None or not np.isfinite(x) else f"{x / 2**30:.2f} GiB"


def _tflop(x: float) -> str:
  return f"{x / 1e12:.3f} T" if np.isfinite(x) else "–"


def summarise(results: list[dict[str, Any]], cli, load_before, load_after) -> tuple[str, str]:
  """Console text and the markdown block for RESULTS.md."""
  lines, md = [], []
  first = results[0]
  dev_ours, dev_twin = first["info_ours"]["device"], first["info_twin"]["device"]
  peak = peak_for(dev_ours)
  lines.append(f"ours: {dev_ours}; twin: {dev_twin}, torch {first['info_twin']['torch']}")
  md.append(f"Measured on {dev_ours} (twin: {dev_twin}, "
            f"torch {first['info_twin']['torch']}); load average (1/5/15 min) "
            f"{'/'.join(f'{x:.1f}' for x in load_before)} before, "
            f"{'/'.join(f'{x:.1f}' for x in load_after)} after. Model: unet_width_mult "
            f"{cli.width_mult}, cls_width {cli.cls_width}, {cli.repeats} alternating rounds per "
            f"figure, medians. Twin: "
            + ("encoder once (ablation)" if cli.encoder_once_twin
               else "public-code style (mixture re-encoded per conditioning)")
            + ".")
  md.append("")
  md.append("| batch | step | ours median | twin median | speed-up (twin / ours) | ours FLOPs "
            "(XLA) | twin FLOPs | ours achieved | peak RSS ours / twin |")
  md.append("|---|---|---|---|---|---|---|---|---|")
  for res in results:
    b = res["batch"]
    io, it = res["info_ours"], res["info_twin"]
    lines.append(f"batch {b}: first-step loss ours {io['first_loss']:.5f}, twin "
                 f"{it['first_loss']:.5f}; compile train {io['compile_train_s']:.1f} s, infer "
                 f"{io['compile_infer_s']:.1f} s; XLA buffers (train): "
                 + ", ".join(f"{k} {_gb(v)}" for k, v in io["xla_mem_train"].items()))
    for kind in ("train", "infer"):
      to = statistics.median(res["times"]["ours"][kind])
      tt_ = statistics.median(res["times"]["twin"][kind])
      fo = io.get(f"flops_{kind}", float("nan"))
      ft = it.get(f"flops_{kind}", float("nan"))
      achieved = fo / to / 1e12
      mem = res["memory"]
      rss = f"{_gb(mem['ours']['peak_rss'])} / {_gb(mem['twin']['peak_rss'])}"
      if "device_peak" in mem["ours"] or "device_peak" in mem["twin"]:
        rss += (f" (device {_gb(mem['ours'].get('device_peak'))} / "
                f"{_gb(mem['twin'].get('device_peak'))})")
      ach = f"{achieved:.3f} TFLOP/s"
      if peak is not None and peak[0]:
        ach += f" ({100 * achieved / peak[0]:.0f}% of fp32 peak {peak[0]:g}"
        ach += f", {100 * achieved / peak[2]:.0f}% of bf16 {peak[2]:g})" if peak[2] else ")"
      rng_o = f"{min(res['times']['ours'][kind]):.2f}–{max(res['times']['ours'][kind]):.2f}"
      rng_t = f"{min(res['times']['twin'][kind]):.2f}–{max(res['times']['twin'][kind]):.2f}"
      lines.append(f"  {kind:5s}: ours {to:.3f} s [{rng_o}]  twin {tt_:.3f} s [{rng_t}]  "
                   f"speed-up twin/ours = {tt_ / to:.2f}x  FLOPs ours {_tflop(fo)}, twin "
                   f"{_tflop(ft)}  achieved {ach}  peak RSS (after train) {rss}")
      md.append(f"| {b} | {kind} | {to:.2f} s | {tt_:.2f} s | **{tt_ / to:.2f}×** | "
                f"{_tflop(fo)} | {_tflop(ft)} | {ach} | {rss} |")
  lines.append(f"load average before {load_before}, after {load_after}")
  md.append("")
  md.append("Peak RSS is the process high-water mark after the train rounds (it includes the "
            "compiler for ours). Command: `python bench/torch_vs_jax.py "
            + " ".join(a for a in sys.argv[1:]) + "`.")
  return "\n".join(lines), "\n".join(md)


def write_results(path: pathlib.Path, block: str) -> None:
  """Replaces the marked block of the section (appending the section or block if absent)."""
  text = path.read_text() if path.exists() else "# Results\n"
  marked = f"{BEGIN}\n{block}\n{END}"
  if BEGIN in text and END in text:
    head, rest = text.split(BEGIN, 1)
    text = head + marked + rest.split(END, 1)[1]
  elif SECTION in text:
    head, rest = text.split(SECTION, 1)
    nxt = rest.find("\n## ")
    body, tail = (rest, "") if nxt < 0 else (rest[:nxt], rest[nxt:])
    text = head + SECTION + body.rstrip("\n") + "\n\n" + marked + "\n" + tail
  else:
    text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{marked}\n"
  tmp = path.with_suffix(path.suffix + ".tmp")
  tmp.write_text(text)
  tmp.replace(path)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--config", default=str(REPO / "configs" / "asiw.py"))
  parser.add_argument("--batches", default="4,8", help="comma-separated batch sizes")
  parser.add_argument("--repeats", type=int, default=5, help="alternating rounds per figure")
  parser.add_argument("--width_mult", type=float, default=1.0, help="unet_width_mult (paper: 1)")
  parser.add_argument("--cls_width", type=int, default=64, help="classifier width (paper: 64)")
  parser.add_argument("--feature_dim", type=int, default=2048, help="node feature size")
  parser.add_argument("--num_classes", type=int, default=15, help="K (ASIW: 14 + background)")
  parser.add_argument("--encoder_once_twin", action="store_true",
                      help="ablation: the twin encodes each mixture once too")
  parser.add_argument("--no_count_flops", dest="count_flops", action="store_false",
                      help="skip the twin's FLOP count (one extra step per side)")
  parser.add_argument("--results_file", default=str(REPO / "docs" / "RESULTS.md"),
                      help="markdown file to update ('' = none)")
  cli = parser.parse_args()
  batches = [int(b) for b in cli.batches.split(",") if b]
  load_before = os.getloadavg()
  print(f"load average {load_before}; batches {batches}, {cli.repeats} rounds", flush=True)
  results = [run_batch(b, cli) for b in batches]
  load_after = os.getloadavg()
  text, block = summarise(results, cli, load_before, load_after)
  print(text)
  if cli.results_file:
    write_results(pathlib.Path(cli.results_file), block)
    print(f"updated {cli.results_file}")


if __name__ == "__main__":
  main()
