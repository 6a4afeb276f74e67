"""safe_io reads data and nothing else: hostile pickles, object arrays and torch files with code
are refused before any of their callables runs, and the error names the file."""
import collections
import os
import pickle
import sys

import numpy as np
import pytest

from asmp_jax import safe_io

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "helpers"))
import hostile  # pylint: disable=g-import-not-at-top,wrong-import-position


def _data():
  return {"ids": ("Z3wDry8nnJs", np.int64(0), 4, "rBUCIK8JRLg", np.int64(2), 5),
          "object_context": [(0, 1, 0), (0, 0, 1), (-1, -1, 0)],
          "dist_mat": np.arange(9, dtype=np.float64).reshape(3, 3),
          "f32": np.float32(0.5), "set": {1, 2}, "frozen": frozenset("ab"), "bytes": b"\x00\xff",
          "empty": b"", "none": None, "flag": True, "complex": 1 + 2j,
          "ordered": collections.OrderedDict(a=1), "default": collections.defaultdict(list, b=[1]),
          "records": np.array([(1, 2.5)], dtype=[("a", "<i4"), ("b", "<f4")]),
          "strings": np.array(["x", "yz"]), "objects": np.array([1, "a", None], dtype=object)}


def _assert_same(a, b):
  assert type(a) is type(b), (a, b)
  if isinstance(a, np.ndarray):
    assert a.dtype == b.dtype and a.shape == b.shape and a.tolist() == b.tolist()
  elif isinstance(a, dict):
    assert list(a) == list(b)
    for k in a:
      _assert_same(a[k], b[k])
  elif isinstance(a, (list, tuple)):
    assert len(a) == len(b)
    for x, y in zip(a, b):
      _assert_same(x, y)
  else:
    assert a == b


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_data_pickles_round_trip_at_every_protocol(tmp_path, protocol):
  obj = _data()
  path = hostile.write_pickle(tmp_path / "d.pickle", obj, protocol=protocol)
  _assert_same(safe_io.load_pickle(path), obj)


def test_python2_and_numpy1_names_are_read(tmp_path):
  """Pickles written by Python 2 / numpy < 2 name __builtin__ and numpy.core: mapped, not refused."""
  obj = {"s": {1, 2}, "a": np.arange(4.0), "i": np.int64(7)}
  data = pickle.dumps(obj, protocol=2, fix_imports=True)
  assert b"__builtin__" in data
  data = data.replace(b"numpy._core.", b"numpy.core.")
  assert b"numpy.core.multiarray" in data
  (tmp_path / "old.pickle").write_bytes(data)
  _assert_same(safe_io.load_pickle(tmp_path / "old.pickle"), obj)


@pytest.mark.parametrize("payload_cls", [hostile.WritesMarker, hostile.EvalsMarker])
@pytest.mark.parametrize("wrap", [lambda p: p, lambda p: {"object_context": [(0, 0, p)]},
                                  lambda p: ([np.int64(1)], ["a"], [p])],
                         ids=["bare", "in_dict", "in_split_triple"])
def test_hostile_pickle_is_refused_before_it_runs(tmp_path, payload_cls, wrap):
  marker = tmp_path / "ran"
  path = hostile.hostile_pickle(tmp_path / "evil.pickle", marker, wrap, payload_cls)
  with pytest.raises(safe_io.SafeLoadError) as e:
    safe_io.load_pickle(path)
  hostile.assert_nothing_ran(marker)
  msg = str(e.value)
  assert msg.startswith(path + ": refused") and "\n" not in msg
  assert ("system" in msg) if payload_cls is hostile.WritesMarker else ("builtins.eval" in msg)


def test_codecs_global_is_limited_to_latin1(tmp_path):
  """Protocol 2 encodes bytes with _codecs.encode(text, 'latin1'); no other codec is reachable."""
  data = pickle.dumps(b"ab", protocol=2).replace(b"latin1", b"rot_13")
  (tmp_path / "c.pickle").write_bytes(data)
  with pytest.raises(safe_io.SafeLoadError, match="c.pickle: not a readable pickle"):
    safe_io.load_pickle(tmp_path / "c.pickle")


def test_allowed_narrows_the_globals(tmp_path):
  path = hostile.write_pickle(tmp_path / "a.pickle", [np.arange(3)])
  assert safe_io.load_pickle(path, allowed=safe_io.DATA_GLOBALS)[0].tolist() == [0, 1, 2]
  with pytest.raises(safe_io.SafeLoadError, match="asks for numpy"):
    safe_io.load_pickle(path, allowed=[("builtins", "set")])


def test_missing_and_corrupt_pickles(tmp_path):
  with pytest.raises(safe_io.SafeLoadError, match="nope.pickle: file not found"):
    safe_io.load_pickle(tmp_path / "nope.pickle")
  (tmp_path / "junk.pickle").write_bytes(b"\x80\x04not a pickle")
  with pytest.raises(safe_io.SafeLoadError, match="junk.pickle: not a readable pickle"):
    safe_io.load_pickle(tmp_path / "junk.pickle")


def test_np_load_reads_arrays_and_refuses_object_arrays(tmp_path):
  np.save(tmp_path / "a.npy", np.arange(6).reshape(2, 3))
  np.savez(tmp_path / "b.npz", x=np.ones(2), y=np.zeros((1, 2), np.int8))
  assert safe_io.np_load(tmp_path / "a.npy").tolist() == [[0, 1, 2], [3, 4, 5]]
  assert safe_io.np_load(tmp_path / "a.npy", mmap_mode="r").shape == (2, 3)
  b = safe_io.load_npz(tmp_path / "b.npz")
  assert sorted(b) == ["x", "y"] and b["y"].dtype == np.int8
  assert list(safe_io.load_npz(tmp_path / "b.npz", keys=["y"])) == ["y"]
  with pytest.raises(safe_io.SafeLoadError, match=r"b.npz: no array named z \(it holds x, y\)"):
    safe_io.load_npz(tmp_path / "b.npz", keys=["z"])
  marker = tmp_path / "ran"
  for name, make in (("o.npy", hostile.hostile_npy), ("o.npz", hostile.hostile_npz)):
    path = make(tmp_path / name, marker)
    with pytest.raises(safe_io.SafeLoadError, match=f"{name}: holds pickled Python objects"):
      safe_io.np_load(path)
  evil = hostile.hostile_pickle(tmp_path / "evil.npy", marker)  # a bare pickle named .npy
  with pytest.raises(safe_io.SafeLoadError, match="evil.npy: not an .npy/.npz file"):
    safe_io.np_load(evil)
  with pytest.raises(safe_io.SafeLoadError, match="a.npy: is a single .npy array"):
    safe_io.load_npz(tmp_path / "a.npy")
  hostile.assert_nothing_ran(marker)
  with pytest.raises(FileNotFoundError):
    safe_io.np_load(tmp_path / "missing.npz")


def test_torch_state_dict_weights_only(tmp_path):
  torch = pytest.importorskip("torch")
  torch.save({"w": torch.arange(3.0), "inner": {"b": torch.zeros(1)}, "n": 3}, tmp_path / "ok.pt")
  state = safe_io.load_torch_state_dict(tmp_path / "ok.pt")
  assert state["w"].tolist() == [0.0, 1.0, 2.0] and state["inner"]["b"].device.type == "cpu"
  marker = tmp_path / "ran"
  path = hostile.hostile_torch(tmp_path / "evil.pt", marker)
  with pytest.raises(safe_io.SafeLoadError) as e:
    safe_io.load_torch_state_dict(path)
  hostile.assert_nothing_ran(marker)
  msg = str(e.value)
  assert msg.startswith(path + ": not loadable as weights only") and "\n" not in msg
  assert "system" in msg and "weights_only` set to `False`" not in msg
  torch.save([torch.ones(1)], tmp_path / "list.pt")
  with pytest.raises(safe_io.SafeLoadError, match="list.pt: holds a list"):
    safe_io.load_torch_state_dict(tmp_path / "list.pt")


def _unsafe_loads(source: str) -> list[str]:
  """Calls in ``source`` that deserialise with code execution possible: pickle.load(s) and
  Unpickler, torch.load, np.load(allow_pickle=<not False>)."""
  import ast  # pylint: disable=g-import-not-at-top
  found = []
  for node in ast.walk(ast.parse(source)):
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
      continue
    owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
    name = f"{owner}.{node.func.attr}"
    pickles = {k.arg: k.value for k in node.keywords}.get("allow_pickle")
    if (name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.load")
        or (name in ("np.load", "numpy.load") and pickles is not None
            and not (isinstance(pickles, ast.Constant) and pickles.value is False))):
      found.append(f"line {node.lineno}: {name}")
  return found


def test_the_guard_finds_unsafe_loads():
  code = ("import pickle, torch, numpy as np\npickle.load(f)\ntorch.load(p)\n"
          "np.load(p, allow_pickle=True)\nnp.load(p)\nnp.load(p, allow_pickle=False)\n")
  assert _unsafe_loads(code) == ["line 2: pickle.load", "line 3: torch.load",
                                 "line 4: np.load"]


def test_no_module_deserialises_outside_safe_io():
  """Everything that reads files goes through safe_io (or np.load without pickles)."""
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  offenders = []
  for top in ("asmp_jax", "data", "bench"):
    for root, _, names in os.walk(os.path.join(repo, top)):
      for name in names:
        path = os.path.join(root, name)
        if not name.endswith(".py") or os.path.relpath(path, repo) == "asmp_jax/safe_io.py":
          continue
        with open(path, encoding="utf-8") as f:
          offenders += [f"{os.path.relpath(path, repo)} {hit}" for hit in _unsafe_loads(f.read())]
  assert not offenders, offenders


def test_provider_file_readers_refuse_object_arrays_naming_the_file(tmp_path):
  """Depth/flow/detection files given to separate or the builders: nothing runs, one line."""
  from asmp_jax import provider_files  # pylint: disable=g-import-not-at-top
  from asmp_jax.graph import providers  # pylint: disable=g-import-not-at-top
  marker = tmp_path / "ran"
  npy = hostile.hostile_npy(tmp_path / "depth.npy", marker)
  depth_npz = str(tmp_path / "depth.npz")
  np.savez(depth_npz, depth=np.array([hostile.WritesMarker(marker)], dtype=object))
  dets = hostile.hostile_npz(tmp_path / "dets.npz", marker)
  separate_reads = provider_files.load_array
  builder_reads = providers._load_array  # pylint: disable=protected-access
  readers = [(lambda: separate_reads(npy, "depth"), npy),
             (lambda: separate_reads(depth_npz, "depth"), depth_npz),
             (lambda: builder_reads(depth_npz, "depth"), depth_npz),
             (lambda: providers.load_detections(dets), dets)]
  for read, path in readers:
    with pytest.raises(providers.ProviderError) as e:
      read()
    assert str(e.value).startswith(path + ": ") and "\n" not in str(e.value), str(e.value)
  hostile.assert_nothing_ran(marker)
