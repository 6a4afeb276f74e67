"""The object classes of the synthetic data set: how each looks and (if it sounds) how it sounds.

One global list indexes every class: the sounding classes first, then the silent context classes,
so ``class_id`` is the position in :data:`ALL_CLASSES`. A sounding class names its timbre (a
synthesiser in :mod:`asmp_data.synthetic.sound`); every class names a 2D shape (a signed-distance
function in :mod:`asmp_data.synthetic.render`), a base colour and the aspect of its extent.

Shapes are drawn in normalised object coordinates ``(lx, ly)`` in ``[-1, 1]^2`` and every shape
touches all four sides of that square, so an object's exact bounding box is its projected extent.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class ObjectClass:
  """A class of objects.

  Attributes:
    name: unique class name.
    sounding: whether objects of this class emit sound (auditory objects).
    shape: key of the shape function in ``render.SHAPES``.
    color: base RGB colour, floats in [0, 1]; each instance gets a randomised shade of it.
    aspect: (x, y) extent of the shape relative to the instance's size (half-widths).
    timbre: key of the synthesiser in ``sound.TIMBRES`` (sounding classes), else None.
    pattern: surface pattern drawn on the shape: "plain", "stripes" (vertical bands), "bands"
      (horizontal bands) or "rings".
  """

  name: str
  sounding: bool
  shape: str
  color: tuple[float, float, float]
  aspect: tuple[float, float]
  timbre: str | None = None
  pattern: str = "plain"


SOUNDING_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("violin", True, "ellipse", (0.55, 0.27, 0.07), (0.6, 1.0), "bowed_string",
                "bands"),
    ObjectClass("flute", True, "capsule", (0.78, 0.80, 0.86), (1.0, 0.28), "flute", "stripes"),
    ObjectClass("bell", True, "bell", (0.95, 0.75, 0.15), (0.85, 1.0), "bell", "rings"),
    ObjectClass("car", True, "box", (0.85, 0.10, 0.10), (1.0, 0.55), "engine", "plain"),
    ObjectClass("bird", True, "diamond", (0.15, 0.35, 0.95), (1.0, 0.7), "bird", "plain"),
    ObjectClass("drum", True, "circle", (0.95, 0.50, 0.10), (1.0, 1.0), "drum", "rings"),
    ObjectClass("siren", True, "hexagon", (0.85, 0.15, 0.75), (1.0, 0.9), "siren", "plain"),
    ObjectClass("clock", True, "ring", (0.92, 0.92, 0.92), (1.0, 1.0), "clock", "plain"),
    ObjectClass("bee", True, "ellipse", (0.95, 0.85, 0.05), (1.0, 0.62), "buzz", "stripes"),
)

CONTEXT_CLASSES: tuple[ObjectClass, ...] = (
    ObjectClass("person", False, "person", (0.25, 0.55, 0.35), (0.55, 1.0), None, "plain"),
    ObjectClass("table", False, "table", (0.45, 0.33, 0.22), (1.0, 0.5), None, "bands"),
    ObjectClass("plant", False, "cross", (0.10, 0.60, 0.15), (0.8, 1.0), None, "plain"),
    ObjectClass("lamp", False, "triangle", (0.95, 0.95, 0.60), (0.7, 1.0), None, "plain"),
)

ALL_CLASSES: tuple[ObjectClass, ...] = SOUNDING_CLASSES + CONTEXT_CLASSES
CLASS_NAMES: tuple[str, ...] = tuple(c.name for c in ALL_CLASSES)
SOUNDING_NAMES: tuple[str, ...] = tuple(c.name for c in SOUNDING_CLASSES)
CONTEXT_NAMES: tuple[str, ...] = tuple(c.name for c in CONTEXT_CLASSES)
NUM_CLASSES = len(ALL_CLASSES)

_BY_NAME = {c.name: c for c in ALL_CLASSES}
_ID_BY_NAME = {c.name: i for i, c in enumerate(ALL_CLASSES)}

# Context classes that are placed next to / overlapping a sounding object (a player beside an
# instrument, a table under it); the others appear as free-standing distractors.
COMPANION_NAMES: tuple[str, ...] = ("person", "table")

assert len(set(CLASS_NAMES)) == len(CLASS_NAMES), "class names must be unique"


def get_class(name: str) -> ObjectClass:
  """Returns the class called ``name``; raises ValueError naming the known classes otherwise."""
  try:
    return _BY_NAME[name]
  except KeyError:
    raise ValueError(f"unknown class name {name!r}; known classes: {', '.join(CLASS_NAMES)}") \
        from None


def class_id(name: str) -> int:
  """Index of the class ``name`` in :data:`ALL_CLASSES` (sounding classes first)."""
  get_class(name)
  return _ID_BY_NAME[name]
