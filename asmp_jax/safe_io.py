"""Reading files that come from elsewhere without running code they may carry.

A pickle names Python callables that the loader calls, so ``pickle.load`` on a downloaded file can
run anything; ``np.load(allow_pickle=True)`` and ``torch.load(weights_only=False)`` inherit that.
The readers here accept data only:

* :func:`load_pickle`: a restricted unpickler that reconstructs plain containers, numbers,
  strings, bytes and numpy arrays/scalars (the content of the ASIW/AVE release pickles and the
  authors' pair lists) and refuses every other global before calling it;
* :func:`np_load` / :func:`load_npz`: ``.npy``/``.npz`` without pickled object arrays;
* :func:`load_torch_state_dict`: ``torch.load(weights_only=True)`` on the CPU.

Every refusal or read failure raises :class:`SafeLoadError`, whose one-line message names the file.
"""

from __future__ import annotations

import _compat_pickle
import codecs
import os
import pickle
import zipfile
from typing import Any, Callable, Iterable, Mapping

import numpy as np


class SafeLoadError(ValueError):
  """A file could not be read as data (refused content or unreadable); the message names it."""

  def __init__(self, path: str, reason: str):
    super().__init__(f"{path}: {reason}")
    self.path = str(path)
    self.reason = reason


def _latin1_encode(text: str, encoding: str = "latin1", errors: str = "strict") -> bytes:
  """``_codecs.encode`` as pickle protocol 2 uses it for ``bytes``: latin-1 only."""
  if codecs.lookup(encoding).name != "iso8859-1":
    raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r} (only latin-1 is "
                                 "used by pickle for bytes)")
  return codecs.encode(text, "latin1", errors)


_BUILTINS = ("bool", "int", "float", "complex", "str", "bytes", "bytearray", "list", "tuple",
             "dict", "set", "frozenset", "slice", "range")
_NUMPY = (("numpy", "ndarray"), ("numpy", "dtype"),
          ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
          ("numpy._core.numeric", "_frombuffer"))
# (module, name) of the globals a data pickle may name, after Python 2 and numpy < 2 names are
# mapped to the current ones (``__builtin__`` -> ``builtins``, ``numpy.core`` -> ``numpy._core``).
DATA_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    [("builtins", n) for n in _BUILTINS] + list(_NUMPY)
    + [("collections", "OrderedDict"), ("collections", "defaultdict"), ("_codecs", "encode")])
_REPLACEMENTS: Mapping[tuple[str, str], Callable[..., Any]] = {("_codecs", "encode"): _latin1_encode}
_DATA_SUMMARY = "plain containers, numbers, strings, bytes and numpy arrays"


def _canonical(module: str, name: str) -> tuple[str, str]:
  """The current (module, name) for a global as written by Python 2 or numpy < 2."""
  if (module, name) in _compat_pickle.NAME_MAPPING:
    module, name = _compat_pickle.NAME_MAPPING[(module, name)]
  module = _compat_pickle.IMPORT_MAPPING.get(module, module)
  if module == "numpy.core" or module.startswith("numpy.core."):
    module = "numpy._core" + module[len("numpy.core"):]
  return module, name


class _DataUnpickler(pickle.Unpickler):
  """Resolves only the allowed globals; anything else stops the load before it is called."""

  def __init__(self, file, allowed: frozenset[tuple[str, str]], encoding: str):
    super().__init__(file, encoding=encoding)
    self._allowed = allowed

  def find_class(self, module, name):
    key = _canonical(module, name)
    if key not in self._allowed:
      raise _Refused(f"{module}.{name}")
    if key in _REPLACEMENTS:
      return _REPLACEMENTS[key]
    return super().find_class(*key)


class _Refused(pickle.UnpicklingError):
  pass


def load_pickle(path: str | os.PathLike, allowed: Iterable[tuple[str, str]] = DATA_GLOBALS,
                encoding: str = "latin1") -> Any:
  """Unpickles ``path`` reconstructing only the ``allowed`` globals ((module, name) pairs).

  ``encoding="latin1"`` reads pickles written by Python 2 too (their numpy arrays included).

  Raises:
    SafeLoadError: the file is missing, is not a pickle, or names a global outside ``allowed``
      (nothing of it has been called then).
  """
  path = os.fspath(path)
  allowed = frozenset(_canonical(m, n) for m, n in allowed)
  if not os.path.isfile(path):
    raise SafeLoadError(path, "file not found")
  try:
    with open(path, "rb") as f:
      return _DataUnpickler(f, allowed, encoding).load()
  except _Refused as e:
    what = _DATA_SUMMARY if allowed <= DATA_GLOBALS else "data types"
    raise SafeLoadError(path, f"refused: the pickle asks for {e}, which is not among the "
                        f"{what} this reader accepts (a pickle that names other callables can "
                        "run code when loaded)") from None
  except Exception as e:  # pickle raises many types for corrupt input
    raise SafeLoadError(path, f"not a readable pickle ({type(e).__name__}: "
                        f"{_first_line(e)})") from e


def _first_line(e: BaseException) -> str:
  lines = str(e).strip().splitlines()
  return lines[0] if lines else ""


def _torch_reason(e: BaseException) -> str:
  """The line of a ``torch.load`` error that says what was refused (not its advice to load the
  file with ``weights_only=False``)."""
  lines = [l.strip() for l in str(e).splitlines() if l.strip()]
  named = [l for l in lines if "GLOBAL" in l or "nsupported" in l]
  return (named or lines or [""])[0]


_NPY_MAGIC, _ZIP_MAGIC = b"\x93NUMPY", b"PK\x03\x04"


def _read_npy_or_npz(path: str, mmap_mode: str | None, keys: Iterable[str] | None = None):
  with open(path, "rb") as f:
    magic = f.read(6)
  if not (magic.startswith(_NPY_MAGIC) or magic.startswith(_ZIP_MAGIC)):
    raise SafeLoadError(path, "not an .npy/.npz file (it does not start like one; other files, "
                        "pickles included, are not read)")
  loaded = np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
  if isinstance(loaded, np.lib.npyio.NpzFile):
    with loaded:
      names = loaded.files if keys is None else list(keys)
      missing = [k for k in names if k not in loaded.files]
      if missing:
        raise SafeLoadError(path, f"no array named {', '.join(missing)} (it holds "
                            f"{', '.join(loaded.files)})")
      return {k: loaded[k] for k in names}
  return loaded


def np_load(path: str | os.PathLike, mmap_mode: str | None = None
            ) -> np.ndarray | dict[str, np.ndarray]:
  """``.npy`` -> array (memory-mapped with ``mmap_mode``), ``.npz`` -> dict of arrays read in
  full; object arrays (pickles) are refused.

  Raises:
    FileNotFoundError: no such file.
    SafeLoadError: the file holds pickled objects or is not a readable ``.npy``/``.npz``.
  """
  return _np_load(path, mmap_mode)


def _np_load(path: str | os.PathLike, mmap_mode: str | None, keys: Iterable[str] | None = None):
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise FileNotFoundError(2, "No such file", path)
  try:
    return _read_npy_or_npz(path, mmap_mode, keys)
  except SafeLoadError:
    raise
  except ValueError as e:
    if "allow_pickle" in str(e):
      raise SafeLoadError(path, "holds pickled Python objects (an object array), which are not "
                          "read; expected plain numeric arrays") from None
    raise SafeLoadError(path, f"not a readable .npy/.npz file ({_first_line(e)})") from e
  except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
    raise SafeLoadError(path, f"not a readable .npy/.npz file ({type(e).__name__}: "
                        f"{_first_line(e)})") from e


def load_npz(path: str | os.PathLike, keys: Iterable[str] | None = None
             ) -> dict[str, np.ndarray]:
  """The arrays of an ``.npz`` file (all, or those named in ``keys``), read in full; object
  arrays refused."""
  out = _np_load(path, None, keys)
  if not isinstance(out, dict):
    raise SafeLoadError(os.fspath(path), "is a single .npy array; expected an .npz archive of "
                        "named arrays")
  return out


def load_torch_state_dict(path: str | os.PathLike, expected: str | None = None
                          ) -> Mapping[str, Any]:
  """``torch.load(path, map_location="cpu", weights_only=True)``: tensors, containers and numbers
  only (torch is imported here, on first use).

  Args:
    path: the ``.pth``/``.pt`` file.
    expected: what the caller expects, ending the error line (default: a ``torch.save``'d
      state dict of tensors, containers and numbers).

  Raises:
    FileNotFoundError: no such file.
    SafeLoadError: PyTorch is missing, or the file is not a state dict readable as weights only.
  """
  path = os.fspath(path)
  expected = expected or ("expected a file written by torch.save(model.state_dict()) holding "
                          "tensors, containers and numbers only")
  if not os.path.isfile(path):
    raise FileNotFoundError(2, "No such file", path)
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise SafeLoadError(path, f"reading it needs PyTorch, which is not installed ({e})") from e
  try:
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as e:  # torch raises UnpicklingError, RuntimeError, ... for refused content
    raise SafeLoadError(path, f"not loadable as weights only ({type(e).__name__}: "
                        f"{_torch_reason(e)}); {expected}") from e
  if not isinstance(state, Mapping):
    raise SafeLoadError(path, f"holds a {type(state).__name__}; {expected}")
  return state

