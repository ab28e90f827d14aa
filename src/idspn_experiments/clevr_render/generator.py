"""An offline CLEVR-format generator: CLEVR's scene rules, rendered by vectorised NumPy ray casting.

The official generator (Johnson et al., 2017, facebookresearch/clevr-dataset-gen) needs Blender and
renders with Cycles. This module draws scenes with the same rules and writes the same files
(``CLEVR_v1.0/images/{split}/CLEVR_{split}_%06d.png``, 480x320 RGBA, and
``CLEVR_v1.0/scenes/CLEVR_{split}_scenes.json`` with every v1.0 field), so
:class:`~idspn_experiments.clevr.data.CLEVRDataset` reads both. The image is a cheap stand-in for
Cycles: ray-cast analytic shapes (spheres, cubes and upright cylinders, shaded with rounded edges)
on a grey ground, lit by CLEVR's three lights with analytic soft shadows, ambient occlusion at the
contact points, a matte rubber and a glossy metal that reflects its surroundings once, and a little
grain. Its constants were fitted so that the median colour of every (material, colour) pair and
the brightness of the ground match the Blender-rendered fixture within a few 8-bit levels.

Scene rules, as in the official generator:

- the camera sits at ``CAMERA_POSITION`` plus a jitter of up to ``CAMERA_JITTER`` per axis; its
  orientation is the base one (looking at the origin) and does not follow the jitter, which is why
  the ``directions`` of every scene are the same;
- each light is jittered by up to ``LIGHT_JITTER`` per axis;
- 3 to 10 objects; per object: size, then a position ``x, y ~ U(-3, 3)`` redrawn until its bounding
  circle is ``MIN_DISTANCE`` clear of the others and it is at least ``MARGIN`` away from each of
  them along the camera's left/right and front/behind directions (after ``MAX_RETRIES`` failures
  the whole scene is redrawn), then shape, colour, rotation and material, all uniform;
- the bounding radius of a cube is its scale divided by sqrt(2) (the official code does this), a
  sphere's and a cylinder's is the scale;
- an object with fewer than ``MIN_PIXELS`` visible pixels makes the generator redraw the objects.

One more quirk is kept: Blender receives ``rotation`` (drawn in degrees) as radians, so a cube's
yaw in the image is ``rotation`` radians; nothing downstream uses the angle.
"""

import contextlib
import json
import math
import multiprocessing
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from idspn_experiments.engine.io import atomic_write, atomic_write_json, atomic_write_text, exclusive_lock

__all__ = [
    "CAMERA_JITTER",
    "CAMERA_POSITION",
    "COLOR_RGB",
    "HORIZONTAL_FOV",
    "IMAGE_HEIGHT",
    "IMAGE_WIDTH",
    "LIGHT_JITTER",
    "LIGHT_POSITIONS",
    "MARGIN",
    "MAX_RETRIES",
    "MIN_DISTANCE",
    "MIN_PIXELS",
    "RENDERER_VERSION",
    "SIZE_SCALE",
    "Camera",
    "Lights",
    "generate",
    "render_scene",
    "sample_scene",
]

# ---------------------------------------------------------------------------------------------
# Facts of the official generator (values from its base scene and its command-line defaults).
IMAGE_WIDTH, IMAGE_HEIGHT = 480, 320
CAMERA_POSITION = (7.4811, -6.5076, 5.3437)
HORIZONTAL_FOV = 2.0 * math.atan(16.0 / 35.0)  # 35 mm lens on a 32 mm sensor: 0.8576 rad
CAMERA_JITTER = 0.5
LIGHT_POSITIONS = {
    "key": (6.4467, -2.9052, 4.2584),
    "fill": (-4.6711, -4.0136, 3.0112),
    "back": (-1.1685, 2.646, 5.8157),
}
LIGHT_JITTER = 1.0
SIZE_SCALE = {"large": 0.7, "small": 0.35}
RENDERER_VERSION = 1  # bump when an image of a given seed changes, so that resumed data sets are not mixed
_OWNER_FILE = ".generator.json"
COLOR_RGB = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
SHAPES = ("cube", "sphere", "cylinder")
MATERIALS = ("rubber", "metal")
MIN_OBJECTS, MAX_OBJECTS = 3, 10
MIN_DISTANCE = 0.25
MARGIN = 0.4
MIN_PIXELS = 200
MAX_RETRIES = 50
RELATION_EPS = 0.2  # an object is "left of" another when 0.2 further along the left direction
LICENSE = "Creative Commons Attribution (CC-BY 4.0)"

# ---------------------------------------------------------------------------------------------
# Look of the stand-in renderer (ours, fitted to the Blender fixture; linear RGB).
_GROUND_ALBEDO = np.array([0.42, 0.42, 0.42])
_SKY_ZENITH = np.array([0.02, 0.021, 0.023])  # what metal reflects straight up
_SKY_HORIZON = np.array([0.11, 0.11, 0.115])  # ... and just above the horizon
_AMBIENT = 0.135  # irradiance from the sky dome on an upward-facing surface
_LIGHT_POWER = {  # irradiance on the ground at the origin before jitter, and colour
    "key": (0.25, np.array([1.0, 0.97, 0.92])),
    "fill": (0.09, np.array([0.86, 0.92, 1.06])),
    "back": (0.12, np.array([1.0, 1.0, 1.0])),
}
_FALLOFF = 0.4  # irradiance falls with distance ** _FALLOFF (softer than a point light's 2)
_LIGHT_RADIUS = {"key": 1.5, "fill": 2.0, "back": 2.0}  # lights cast shadows as discs this big
_BEVEL = 0.12  # bevel radius of cubes and cylinders as a fraction of the scale
_RUBBER_DIFFUSE = 0.5  # share of the colour a rubber surface reflects diffusely
_RUBBER_SHININESS = 12.0
_RUBBER_SPECULAR = 0.04
_METAL_SHININESS = 300.0
_METAL_SPECULAR = 0.6
_METAL_REFLECTANCE = 0.65
_METAL_DIFFUSE = 0.08
_GRAIN = 1.5  # standard deviation of the sensor-like noise, in 8-bit levels
_EPS = 1e-4
_GROUND_STEP = 2  # the ground is shaded at every second pixel and interpolated
_MAX_REDRAWS = 1000  # guard against an endless loop; the official generator has none

_SHAPE_CODE = {"sphere": 0, "cube": 1, "cylinder": 2}
_BOUND_FACTOR = np.array([1.0, math.sqrt(3.0), math.sqrt(2.0)])  # bounding sphere / scale
# Points of a light's disc (in units of its radius) that shadow rays from objects aim at.
_LIGHT_DISC = 0.6 * np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0], [0.0, -1.0]])
_SHADOW_RADIUS = np.array([1.0, 1.05, 1.0])  # radius of the sphere casting a shape's shadow / scale


def _look_at_rotation(position: np.ndarray) -> np.ndarray:
    """Camera-to-world rotation ``# (3, 3)`` looking at the origin with +z up (no roll)."""
    forward = -position / np.linalg.norm(position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return np.stack([right, up, -forward], axis=1)  # columns: camera x, y, z (looks down -z)


_CAMERA_ROTATION = _look_at_rotation(np.array(CAMERA_POSITION))


@dataclass(frozen=True)
class Camera:
    """CLEVR's pinhole camera: jittered position, fixed orientation.

    Attributes:
        position: Camera centre in world units ``# (3,)``.
    """

    position: tuple[float, float, float] = CAMERA_POSITION  # world position of the pinhole

    @property
    def rotation(self) -> np.ndarray:
        """Camera-to-world rotation ``# (3, 3)``; columns are the camera's x, y and z axes."""
        return _CAMERA_ROTATION

    def directions(self) -> dict[str, list[float]]:
        """CLEVR's six unit directions on the ground plane, in the official key order.

        ``behind`` is the camera's viewing direction and ``left`` its -x axis, both flattened onto
        the ground; the signs of the zeros follow the official files.
        """
        forward, right = -self.rotation[:, 2], self.rotation[:, 0]
        behind = np.array([forward[0], forward[1], 0.0]) / np.linalg.norm(forward[:2])
        left = np.array([-right[0], -right[1], 0.0]) / np.linalg.norm(right[:2])
        above = np.array([0.0, 0.0, 1.0])
        return {
            "behind": behind.tolist(),
            "front": (-behind).tolist(),
            "left": left.tolist(),
            "right": (-left).tolist(),
            "above": above.tolist(),
            "below": (-above).tolist(),
        }

    def project(self, points: np.ndarray) -> np.ndarray:
        """Projects world points to CLEVR's ``pixel_coords``.

        Args:
            points: World points ``# (K, 3)``.

        Returns:
            ``# (K, 3)``: pixel column and row (rounded, row 0 at the top) and the depth along the
            viewing axis.
        """
        local = (np.asarray(points, dtype=np.float64) - self.position) @ self.rotation  # (K, 3)
        depth = -local[:, 2]
        tan_x = math.tan(HORIZONTAL_FOV / 2)
        tan_y = tan_x * IMAGE_HEIGHT / IMAGE_WIDTH
        x = 0.5 + 0.5 * local[:, 0] / (depth * tan_x)  # 0 at the left edge, 1 at the right
        y = 0.5 + 0.5 * local[:, 1] / (depth * tan_y)  # 0 at the bottom edge, 1 at the top
        return np.stack([np.rint(x * IMAGE_WIDTH), np.rint(IMAGE_HEIGHT - y * IMAGE_HEIGHT), depth], axis=1)

    def rays(self, u: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Unit view directions through image points.

        Args:
            u: Horizontal image coordinates in pixels, 0 at the left edge ``# (R,)``.
            v: Vertical image coordinates in pixels, 0 at the top edge ``# (R,)``.

        Returns:
            World directions ``# (3, R)`` float32 (one row per axis, which keeps the renderer's
            element-wise arithmetic on contiguous memory).
        """
        tan_x = math.tan(HORIZONTAL_FOV / 2)
        tan_y = tan_x * IMAGE_HEIGHT / IMAGE_WIDTH
        x = (2.0 * np.asarray(u, dtype=np.float64) / IMAGE_WIDTH - 1.0) * tan_x
        y = (1.0 - 2.0 * np.asarray(v, dtype=np.float64) / IMAGE_HEIGHT) * tan_y
        world = self.rotation @ np.stack([x, y, -np.ones_like(x)])  # (3, R)
        return (world / np.linalg.norm(world, axis=0)).astype(np.float32)


@dataclass(frozen=True)
class Lights:
    """Positions of CLEVR's key, fill and back lights (area lights in Blender, centres here)."""

    key: tuple[float, float, float] = LIGHT_POSITIONS["key"]
    fill: tuple[float, float, float] = LIGHT_POSITIONS["fill"]
    back: tuple[float, float, float] = LIGHT_POSITIONS["back"]


# ---------------------------------------------------------------------------------------------
# Ray casting.


@dataclass(frozen=True)
class _Solids:
    """The ``K`` objects of a scene as arrays."""

    kind: np.ndarray  # (K,) 0 sphere, 1 cube, 2 cylinder
    centre: np.ndarray  # (K, 3)
    scale: np.ndarray  # (K,) radius / half side / radius and half height
    angle: np.ndarray  # (K,) yaw in radians
    albedo: np.ndarray  # (K, 3) linear RGB
    metal: np.ndarray  # (K,) bool

    @staticmethod
    def from_objects(objects: Sequence[Mapping[str, Any]]) -> "_Solids":
        k = len(objects)
        rgb = np.array([COLOR_RGB[o["color"]] for o in objects], dtype=np.float64).reshape(k, 3)
        return _Solids(
            kind=np.array([_SHAPE_CODE[o["shape"]] for o in objects], dtype=np.int64),
            centre=np.array([o["3d_coords"] for o in objects], dtype=np.float64).reshape(k, 3),
            scale=np.array([SIZE_SCALE[o["size"]] for o in objects], dtype=np.float64),
            # Blender took the angle, drawn in degrees, as radians.
            angle=np.array([o["rotation"] for o in objects], dtype=np.float64),
            # The official generator hands the 0-255 colours to Blender as linear RGB / 255.
            albedo=rgb / 255.0,
            metal=np.array([o["material"] == "metal" for o in objects], dtype=bool),
        )

    def __len__(self) -> int:
        return len(self.kind)

    @property
    def bound(self) -> np.ndarray:
        """Radius of each object's bounding sphere ``# (K,)``."""
        return self.scale * _BOUND_FACTOR[self.kind]

    def to_local(self, k: int, v: np.ndarray) -> np.ndarray:
        """Rotates world vectors ``# (3, R)`` into object ``k``'s frame (undoes its yaw)."""
        c, s = math.cos(self.angle[k]), math.sin(self.angle[k])
        return np.stack([c * v[0] + s * v[1], c * v[1] - s * v[0], v[2]])

    def to_world(self, k: int, v: np.ndarray) -> np.ndarray:
        """Rotates vectors ``# (3, R)`` of object ``k``'s frame into the world frame."""
        c, s = math.cos(self.angle[k]), math.sin(self.angle[k])
        return np.stack([c * v[0] - s * v[1], s * v[0] + c * v[1], v[2]])


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot product of vectors ``# (3, R)``."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


def _normalised(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.sqrt(_dot(v, v)), 1e-12)


def _sphere_hit(p: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    """Distance along unit rays ``d # (3, R)`` from ``p`` (relative to the centre, ``# (3, R)``
    or ``(3, 1)``) to a sphere of radius ``r``; ``inf`` where they miss."""
    b = _dot(p, d)
    c = _dot(p, p) - r * r
    disc = b * b - c
    root = np.sqrt(np.maximum(disc, 0.0))
    t = np.where(-b - root > _EPS, -b - root, -b + root)
    return np.where((disc >= 0) & (t > _EPS), t, np.inf)


def _box_hit(p: np.ndarray, d: np.ndarray, half: float) -> np.ndarray:
    """Slab test of an axis-aligned cube of half side ``half`` in its own frame."""
    safe = np.where(np.abs(d) < 1e-12, np.float32(1e-12), d)
    t1 = (-half - p) / safe  # (3, R)
    t2 = (half - p) / safe
    near = np.minimum(t1, t2).max(axis=0)
    far = np.maximum(t1, t2).min(axis=0)
    t = np.where(near > _EPS, near, far)
    return np.where((near <= far) & (t > _EPS), t, np.inf)


def _cylinder_hit(p: np.ndarray, d: np.ndarray, r: float) -> np.ndarray:
    """Upright cylinder of radius and half height ``r``, both caps included, in its own frame."""
    p = np.broadcast_to(p, d.shape)
    a = d[0] * d[0] + d[1] * d[1]
    b = p[0] * d[0] + p[1] * d[1]
    c = p[0] * p[0] + p[1] * p[1] - r * r
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = b * b - a * c
        root = np.sqrt(np.maximum(disc, 0.0))
        best = np.full(d.shape[1], np.inf, dtype=d.dtype)
        for t in ((-b - root) / a, (-b + root) / a):  # the side wall
            ok = (disc >= 0) & (a > 1e-12) & (np.abs(p[2] + t * d[2]) <= r) & (t > _EPS)
            best = np.where(ok & (t < best), t, best)
        for cap in (-r, r):
            t = (cap - p[2]) / d[2]
            x, y = p[0] + t * d[0], p[1] + t * d[1]
            ok = (x * x + y * y <= r * r) & (t > _EPS)
            best = np.where(ok & (t < best), t, best)
    return best


def _object_hit(solids: _Solids, k: int, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Distance along unit rays ``d # (3, R)`` to object ``k``; ``inf`` where they miss.

    ``origin`` is ``# (3, R)``, or ``# (3, 1)`` when every ray starts at the same point.
    """
    p = (origin - solids.centre[k][:, None]).astype(np.float32)
    kind, r = solids.kind[k], solids.scale[k]
    if kind == 0:
        return _sphere_hit(p, d, r)
    if kind == 1:
        return _box_hit(solids.to_local(k, p), solids.to_local(k, d), r)
    return _cylinder_hit(p, d, r)


def _object_normal(solids: _Solids, k: int, points: np.ndarray) -> np.ndarray:
    """Unit normals ``# (3, R)`` at surface points ``# (3, R)`` of object ``k``.

    CLEVR's cubes and cylinders have rounded edges; the normal of an edge rounded with radius
    ``b`` points from the shape shrunk by ``b`` to the surface, which is what is computed here
    from the hit point on the sharp shape.
    """
    q = points - solids.centre[k][:, None]
    inner = solids.scale[k] * (1.0 - _BEVEL)
    if solids.kind[k] == 0:
        n = q
    elif solids.kind[k] == 1:
        local = solids.to_local(k, q)
        n = solids.to_world(k, np.sign(local) * np.maximum(np.abs(local) - inner, 0.0))
    else:
        rho = np.sqrt(q[0] * q[0] + q[1] * q[1]) + 1e-12
        radial = np.maximum(rho - inner, 0.0) / rho
        vertical = np.sign(q[2]) * np.maximum(np.abs(q[2]) - inner, 0.0)
        n = np.stack([q[0] * radial, q[1] * radial, vertical])
    return _normalised(n).astype(np.float32)


def _candidates(solids: _Solids, k: int, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Indices of the rays ``# (3, R)`` that pass through object ``k``'s bounding sphere."""
    bound = solids.bound[k]
    if origin.shape[1] == 1:
        # One origin for all rays: a cone test, one matrix-vector product.
        towards = solids.centre[k] - origin[:, 0]
        distance = float(np.linalg.norm(towards))
        if distance <= bound:
            return np.arange(d.shape[1])
        cos_max = math.sqrt(1.0 - (bound / distance) ** 2)
        return np.flatnonzero((towards / distance).astype(np.float32) @ d > cos_max)
    towards = solids.centre[k][:, None] - origin  # (3, R)
    along = _dot(towards, d)
    outside = _dot(towards, towards) - bound * bound
    return np.flatnonzero((outside <= 0) | ((along > 0) & (along * along > outside)))


def _trace(solids: _Solids, origin: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest hit of unit rays ``d # (3, R)`` from ``origin # (3, R) or (3, 1)``.

    Returns:
        Distances ``# (R,)`` and what was hit ``# (R,)``: the object index, -1 for the ground,
        -2 for nothing (the sky).
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(d[2] < -1e-6, -origin[2] / d[2], np.inf).astype(np.float32)
    t[~(t > _EPS)] = np.inf
    hit = np.where(np.isfinite(t), -1, -2)
    shared = origin.shape[1] == 1
    for k in range(len(solids)):
        rays = _candidates(solids, k, origin, d)
        if rays.size == 0:
            continue
        t_k = _object_hit(solids, k, origin if shared else origin[:, rays], d[:, rays])
        closer = t_k < t[rays]
        t[rays[closer]] = t_k[closer]
        hit[rays[closer]] = k
    return t, hit


def _in_shadow_box(points: np.ndarray, centre: np.ndarray, size: float, light: np.ndarray, radius: float) -> np.ndarray:
    """Whether points ``# (3, R)`` lie in the ground-plane box that holds the shadow (penumbra
    included) of a sphere of radius ``size`` at ``centre`` under a light of radius ``radius``:
    the box around the sphere and the end of its shadow, the top of the sphere projected from the
    light onto the ground. ``# (R,)`` bool."""
    top = centre + np.array([0.0, 0.0, size])
    end = light + (top - light) * light[2] / max(light[2] - top[2], 1e-3)
    margin = size + radius * min(1.0, top[2] / light[2])
    low = np.minimum(centre[:2], end[:2]) - margin
    high = np.maximum(centre[:2], end[:2]) + margin
    inside_x = (points[0] > low[0]) & (points[0] < high[0])
    return inside_x & (points[1] > low[1]) & (points[1] < high[1])


def _soft_shadow(solids: _Solids, light: np.ndarray, radius: float, points: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Fraction of a disc-shaped area light that points see, every object taken as a sphere.

    Seen from a point, the rays to the light form a cone whose cross-section at an occluder's
    distance is a disc of radius ``radius * along / distance``; the occluder's sphere is a disc of
    radius ``s`` at offset ``delta`` in that plane. The occluded fraction falls smoothly from
    ``min(1, (s / r_light)^2)`` when one disc holds the other to 0 when they stop overlapping (the
    overlap of two discs, up to a smoothstep), and occluders combine multiplicatively. Cycles'
    CLEVR shadows on the ground are this soft, and the cost is a few operations per point and
    object instead of many shadow rays.

    Args:
        light: Centre of the light ``# (3,)``.
        radius: Radius of the light.
        points: Surface points ``# (3, R)``.
        hit: Object each point lies on ``# (R,)`` (negative for the ground).

    Returns:
        Visible fraction ``# (R,)`` in [0, 1].
    """
    log_visible = np.zeros(points.shape[1], dtype=np.float32)
    for k in range(len(solids)):
        centre = solids.centre[k]
        size = float(solids.scale[k] * _SHADOW_RADIUS[solids.kind[k]])
        near = np.flatnonzero(_in_shadow_box(points, centre, size, light, radius) & (hit != k))
        if near.size == 0:
            continue
        p = points[:, near]
        towards = light[:, None].astype(np.float32) - p  # (3, M)
        distance = np.sqrt(_dot(towards, towards))
        offset = centre[:, None].astype(np.float32) - p  # (3, M)
        along = _dot(offset, towards) / distance  # occluder depth along the ray to the light
        delta = np.sqrt(np.maximum(_dot(offset, offset) - along * along, 0.0))
        cone = np.maximum(along * (radius / distance), 1e-6)  # light cone radius there
        inner, outer = np.abs(cone - size), cone + size
        x = np.clip((outer - delta) / np.maximum(outer - inner, 1e-6), 0.0, 1.0)
        occluded = np.minimum(1.0, (size / cone) ** 2) * x * x * (3.0 - 2.0 * x)
        occluded[along <= 0] = 0.0
        log_visible[near] += np.log(np.maximum(1.0 - occluded, 1e-6))
    return np.exp(log_visible)


def _traced_shadow(
    solids: _Solids, light: np.ndarray, radius: float, points: np.ndarray, hit: np.ndarray
) -> np.ndarray:
    """Fraction of a disc-shaped light that points on objects see, by casting shadow rays.

    Objects close to each other cast sharp shadows whose shape a sphere stands in for badly
    (a cube would shadow its neighbour with a disc), so points on objects trace
    ``len(_LIGHT_DISC)`` rays to fixed points of the light's disc. The shapes are convex, so an
    object cannot shadow its own lit side and is skipped for its own points.

    Args:
        light: Centre of the light ``# (3,)``; the disc faces the origin.
        radius: Radius of the light.
        points: Points on objects ``# (3, R)``.
        hit: Object each point lies on ``# (R,)``.

    Returns:
        Visible fraction ``# (R,)`` in [0, 1].
    """
    normal = -light / np.linalg.norm(light)
    u = np.cross(normal, [0.0, 0.0, 1.0])
    u /= np.linalg.norm(u)
    v = np.cross(u, normal)
    targets = light + radius * (_LIGHT_DISC[:, :1] * u + _LIGHT_DISC[:, 1:] * v)  # (S, 3)
    blocked = np.zeros((len(targets), points.shape[1]), dtype=bool)
    for k in range(len(solids)):
        near = np.flatnonzero(_in_shadow_box(points, solids.centre[k], solids.bound[k], light, radius) & (hit != k))
        if near.size == 0:
            continue
        p = points[:, near]
        for s, target in enumerate(targets):
            towards = target[:, None].astype(np.float32) - p
            distance = np.sqrt(_dot(towards, towards))
            d = towards / distance
            rays = _candidates(solids, k, p, d)
            t_k = _object_hit(solids, k, p[:, rays], d[:, rays])
            blocked[s, near[rays]] |= t_k < distance[rays]
    return 1.0 - blocked.mean(axis=0, dtype=np.float32)


def _shadow(solids: _Solids, light: np.ndarray, radius: float, points: np.ndarray, hit: np.ndarray) -> np.ndarray:
    """Visible fraction ``# (R,)`` of a light: analytic on the ground, traced on objects."""
    visible = np.ones(points.shape[1], dtype=np.float32)
    ground = np.flatnonzero(hit < 0)
    objects = np.flatnonzero(hit >= 0)
    if ground.size:
        visible[ground] = _soft_shadow(solids, light, radius, points[:, ground], hit[ground])
    if objects.size:
        visible[objects] = _traced_shadow(solids, light, radius, points[:, objects], hit[objects])
    return visible


def _light_sources(lights: Lights) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, position, RGB intensity) of every light, the intensity scaled so that the
    unjittered light gives its configured irradiance to the ground at the origin."""
    sources = []
    for name in ("key", "fill", "back"):
        base = np.array(LIGHT_POSITIONS[name])
        power, colour = _LIGHT_POWER[name]
        distance = float(np.linalg.norm(base))
        intensity = power * colour * distance**_FALLOFF / (base[2] / distance)
        sources.append((name, np.array(getattr(lights, name)), intensity))
    return sources


def _direct_light(
    solids: _Solids,
    lights: Lights,
    points: np.ndarray,
    normals: np.ndarray,
    view: np.ndarray,
    shininess: np.ndarray,
    hit: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Irradiance and Blinn-Phong highlights from the three lights.

    Args:
        points, normals, view: Surface points, unit normals and unit directions to the eye
            ``# (3, R)``.
        shininess: Blinn-Phong exponent per point ``# (R,)``; 0 for no highlight (the ground).
        hit: Object each point lies on ``# (R,)`` (negative for the ground), to cast soft
            shadows; no shadows if ``None``.

    Returns:
        Diffuse irradiance and specular radiance, both ``# (3, R)`` RGB.
    """
    diffuse = np.zeros_like(points)
    specular = np.zeros_like(points)
    glossy = np.flatnonzero(shininess > 0)
    exponent = shininess[glossy]
    for name, position, intensity in _light_sources(lights):
        to_light = position[:, None].astype(np.float32) - points
        distance = np.sqrt(_dot(to_light, to_light))
        direction = to_light / distance
        weight = np.maximum(_dot(normals, direction), 0.0) / distance**_FALLOFF  # (R,)
        if hit is not None and len(solids):
            lit = np.flatnonzero(weight > 0)
            weight[lit] *= _shadow(solids, position, _LIGHT_RADIUS[name], points[:, lit], hit[lit])
        irradiance = weight * intensity[:, None].astype(np.float32)  # (3, R)
        diffuse += irradiance
        if glossy.size:
            half = _normalised(direction[:, glossy] + view[:, glossy])
            n_dot_h = np.clip(_dot(normals[:, glossy], half), 0.0, 1.0)
            lobe = (exponent + 8.0) / 8.0 * n_dot_h**exponent
            specular[:, glossy] += irradiance[:, glossy] * lobe
    return diffuse, specular


def _ambient_occlusion(solids: _Solids, points: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Fraction of sky light reaching each point ``# (R,)``, every object taken as a sphere.

    A sphere of radius ``a`` at distance ``d``, seen at angle ``theta`` from the normal, blocks
    ``(a / d)^2 cos(theta)`` of the cosine-weighted sky (its projected solid angle / pi).
    """
    occlusion = np.zeros(points.shape[1], dtype=np.float32)
    for k in range(len(solids)):
        radius = solids.scale[k] * (1.0 if solids.kind[k] == 0 else 1.15)
        reach = 4.0 * radius
        cx, cy, cz = solids.centre[k]
        near = (np.abs(points[0] - cx) < reach) & (np.abs(points[1] - cy) < reach)
        near = np.flatnonzero(near & (points[2] < cz + reach))
        towards = solids.centre[k][:, None] - points[:, near]
        distance = np.sqrt(_dot(towards, towards))
        cosine = np.clip(_dot(normals[:, near], towards) / distance, 0.0, 1.0)
        occlusion[near] += (radius / np.maximum(distance, radius)) ** 2 * cosine
    return np.clip(1.0 - occlusion, 0.0, 1.0)


def _sky_light(normals: np.ndarray) -> np.ndarray:
    """Ambient irradiance ``# (R,)``: the sky from above, a little bounce light from the ground."""
    up = 0.5 + 0.5 * normals[2]
    return _AMBIENT * (up + 0.3 * (1.0 - up))


def _surface(solids: _Solids, points: np.ndarray, hit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals and albedo ``# (3, R)`` at points on the ground (-1) or on objects."""
    normals = np.zeros_like(points)
    normals[2] = 1.0
    albedo = np.repeat(_GROUND_ALBEDO[:, None].astype(np.float32), points.shape[1], axis=1)
    for k in range(len(solids)):
        on = np.flatnonzero(hit == k)
        if on.size:
            normals[:, on] = _object_normal(solids, k, points[:, on])
            albedo[:, on] = solids.albedo[k][:, None]
    return normals, albedo


def _sky(d: np.ndarray) -> np.ndarray:
    """Radiance ``# (3, R)`` of the sky along directions ``# (3, R)``: brighter at the horizon."""
    height = np.clip(d[2], 0.0, 1.0)
    mix = (1.0 - height) ** 2
    return (_SKY_ZENITH[:, None] + mix * (_SKY_HORIZON - _SKY_ZENITH)[:, None]).astype(np.float32)


def _reflected(solids: _Solids, lights: Lights, origin: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Radiance ``# (3, R)`` seen along rays: one bounce, diffuse only, no shadows."""
    t, hit = _trace(solids, origin, d)
    radiance = _sky(d)
    seen = np.flatnonzero(hit >= -1)
    if seen.size:
        points = (origin[:, seen] + t[seen] * d[:, seen]).astype(np.float32)
        normals, albedo = _surface(solids, points, hit[seen])
        shininess = np.zeros(seen.size, dtype=np.float32)
        diffuse, _ = _direct_light(solids, lights, points, normals, -d[:, seen], shininess, None)
        radiance[:, seen] = albedo * (diffuse + _sky_light(normals))
    return radiance


def _ground_image(solids: _Solids, lights: Lights, camera: Camera) -> np.ndarray:
    """Radiance ``# (3, H * W)`` of the ground plane behind every pixel, hidden or not.

    Its light (soft shadows, ambient occlusion, slow fall-off) varies slowly, so it is shaded at
    every ``_GROUND_STEP``-th pixel and interpolated bilinearly: a quarter of the work at step 2.
    """
    step = _GROUND_STEP
    rows = np.arange(0, IMAGE_HEIGHT + step, step, dtype=np.float64)  # (GH,) pixel rows
    cols = np.arange(0, IMAGE_WIDTH + step, step, dtype=np.float64)  # (GW,)
    v, u = np.meshgrid(rows + 0.5, cols + 0.5, indexing="ij")
    d = camera.rays(u.reshape(-1), v.reshape(-1))  # (3, GH * GW)
    origin = np.asarray(camera.position, dtype=np.float64)[:, None]
    t = -origin[2] / np.minimum(d[2], -1e-6)  # the CLEVR camera never sees the horizon
    points = (origin + t * d).astype(np.float32)
    normals = np.zeros_like(points)
    normals[2] = 1.0
    none = np.zeros(points.shape[1], dtype=np.float32)
    hit = np.full(points.shape[1], -1)
    diffuse, _ = _direct_light(solids, lights, points, normals, -d, none, hit)
    ambient = _sky_light(normals) * _ambient_occlusion(solids, points, normals)
    grid = (_GROUND_ALBEDO[:, None] * (diffuse + ambient)).reshape(3, len(rows), len(cols))
    # Bilinear interpolation to the pixel centres, rows then columns.
    y = np.arange(IMAGE_HEIGHT) / step
    y0 = np.floor(y).astype(int)
    fy = (y - y0)[:, None].astype(np.float32)
    grid = grid[:, y0] * (1.0 - fy) + grid[:, y0 + 1] * fy  # (3, H, GW)
    x = np.arange(IMAGE_WIDTH) / step
    x0 = np.floor(x).astype(int)
    fx = (x - x0).astype(np.float32)
    image = grid[:, :, x0] * (1.0 - fx) + grid[:, :, x0 + 1] * fx  # (3, H, W)
    return image.reshape(3, -1)


def _shade(
    solids: _Solids,
    lights: Lights,
    origin: np.ndarray,
    d: np.ndarray,
    t: np.ndarray,
    hit: np.ndarray,
    ground: np.ndarray,
) -> np.ndarray:
    """Linear RGB radiance ``# (3, R)`` of camera rays ``d # (3, R)`` that hit ``hit`` at ``t``.

    ``ground # (3, R)`` is the radiance of the ground along each ray (from :func:`_ground_image`).
    """
    radiance = _sky(d)
    on_ground = hit == -1
    radiance[:, on_ground] = ground[:, on_ground]
    seen = np.flatnonzero(hit >= 0)
    if seen.size == 0:
        return radiance
    points = (origin + t[seen] * d[:, seen]).astype(np.float32)  # (3, S)
    view = -d[:, seen]
    normals, albedo = _surface(solids, points, hit[seen])
    metal = solids.metal[hit[seen]]
    shininess = np.where(metal, _METAL_SHININESS, _RUBBER_SHININESS).astype(np.float32)
    diffuse, specular = _direct_light(solids, lights, points, normals, view, shininess, hit[seen])
    ambient = _sky_light(normals) * _ambient_occlusion(solids, points, normals)
    colour = _RUBBER_DIFFUSE * albedo * (diffuse + ambient) + _RUBBER_SPECULAR * specular
    m = np.flatnonzero(metal)
    if m.size:
        n, v = normals[:, m], view[:, m]
        cos_view = np.clip(_dot(n, v), 0.0, 1.0)
        mirror = 2.0 * cos_view * n - v
        environment = _reflected(solids, lights, points[:, m] + 1e-3 * n, mirror)
        # Schlick's Fresnel term: tinted reflection head-on, whiter at grazing angles.
        fresnel = (1.0 - cos_view) ** 5
        tint = albedo[:, m] * (1.0 - fresnel) + fresnel
        colour[:, m] = _METAL_REFLECTANCE * tint * (
            environment + _METAL_SPECULAR * specular[:, m]
        ) + _METAL_DIFFUSE * albedo[:, m] * (diffuse[:, m] + ambient[m])
    radiance[:, seen] = colour
    return radiance


def _encode_srgb(linear: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    """Linear RGB ``# (3, R)`` to 8-bit sRGB with a soft shoulder for highlights, plus grain."""
    x = np.maximum(linear, 0.0)
    x = np.where(x < 0.8, x, 0.8 + 0.2 * np.tanh((x - 0.8) / 0.2))
    srgb = np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055) * 255.0
    if rng is not None:
        srgb += rng.normal(0.0, _GRAIN, size=srgb.shape).astype(np.float32)
    return np.clip(np.rint(srgb), 0, 255).astype(np.uint8)


# Sub-pixel offsets of the four rays that anti-alias a pixel on an object outline.
_SUBPIXELS = np.array([[0.25, 0.25], [0.75, 0.25], [0.25, 0.75], [0.75, 0.75]])


def _pixel_rays(camera: Camera) -> np.ndarray:
    """Unit directions ``# (3, H * W)`` through every pixel centre, row-major."""
    v, u = np.divmod(np.arange(IMAGE_HEIGHT * IMAGE_WIDTH), IMAGE_WIDTH)
    return camera.rays(u + 0.5, v + 0.5)


def _object_ids(solids: _Solids, camera: Camera) -> np.ndarray:
    """What each pixel's centre ray hits ``# (H * W,)`` (object index, -1 ground, -2 sky)."""
    origin = np.asarray(camera.position, dtype=np.float64)[:, None]
    return _trace(solids, origin, _pixel_rays(camera))[1]


def render_scene(
    scene: Mapping[str, Any],
    camera: Camera | None = None,
    lights: Lights | None = None,
    antialias: bool = True,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Renders a CLEVR scene like the official generator's images.

    Args:
        scene: A scene with ``objects`` as in a CLEVR scenes file (``3d_coords``, ``rotation``,
            ``shape``, ``size``, ``color`` and ``material`` are used).
        camera: Camera to render from; CLEVR's unjittered camera when ``None``.
        lights: Light positions; CLEVR's unjittered lights when ``None``.
        antialias: Average four rays in the pixels on object outlines.
        rng: Adds Gaussian grain (like the sampling noise of Cycles) drawn from it; none if
            ``None``.

    Returns:
        The image ``# (IMAGE_HEIGHT, IMAGE_WIDTH, 4)`` uint8 RGBA, opaque like CLEVR's.
    """
    camera = camera or Camera()
    lights = lights or Lights()
    solids = _Solids.from_objects(list(scene["objects"]))
    origin = np.asarray(camera.position, dtype=np.float64)[:, None]  # (3, 1)

    ground = _ground_image(solids, lights, camera)  # (3, H * W)
    d = _pixel_rays(camera)  # (3, H * W)
    t, hit = _trace(solids, origin, d)
    radiance = _shade(solids, lights, origin, d, t, hit, ground)  # (3, H * W)

    if antialias and len(solids):
        ids = hit.reshape(IMAGE_HEIGHT, IMAGE_WIDTH)
        edge = np.zeros(ids.shape, dtype=bool)
        horizontal = ids[:, 1:] != ids[:, :-1]
        vertical = ids[1:, :] != ids[:-1, :]
        edge[:, 1:] |= horizontal
        edge[:, :-1] |= horizontal
        edge[1:, :] |= vertical
        edge[:-1, :] |= vertical
        outline = np.flatnonzero(edge)
        rows, cols = np.divmod(outline, IMAGE_WIDTH)
        u = (cols[:, None] + _SUBPIXELS[None, :, 0]).reshape(-1)  # (E * 4,)
        v = (rows[:, None] + _SUBPIXELS[None, :, 1]).reshape(-1)
        d = camera.rays(u, v)  # (3, E * 4)
        t, hit = _trace(solids, origin, d)
        sub = _shade(solids, lights, origin, d, t, hit, np.repeat(ground[:, outline], 4, axis=1))
        radiance[:, outline] = sub.reshape(3, -1, len(_SUBPIXELS)).mean(axis=2)

    rgb = _encode_srgb(radiance, rng).T.reshape(IMAGE_HEIGHT, IMAGE_WIDTH, 3)
    alpha = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 1), 255, dtype=np.uint8)
    return np.concatenate([rgb, alpha], axis=2)


# ---------------------------------------------------------------------------------------------
# Scene sampling.


def _placement_ok(
    candidates: np.ndarray, radius: float, placed: np.ndarray, directions: dict[str, list[float]]
) -> np.ndarray:
    """Which candidate positions ``# (C, 2)`` satisfy the distance and margin rules against the
    placed objects ``# (K, 3)`` (x, y, bounding radius)."""
    if len(placed) == 0:
        return np.ones(len(candidates), dtype=bool)
    delta = candidates[:, None, :] - placed[None, :, :2]  # (C, K, 2)
    gap = np.linalg.norm(delta, axis=-1) - radius - placed[None, :, 2]  # (C, K)
    ok = (gap >= MIN_DISTANCE).all(axis=1)
    for name in ("left", "right", "front", "behind"):
        margin = delta @ np.asarray(directions[name][:2])  # (C, K)
        ok &= ~((margin > 0) & (margin < MARGIN)).any(axis=1)
    return ok


def _draw_objects(
    rng: np.random.Generator, num_objects: int, directions: dict[str, list[float]]
) -> list[dict[str, Any]]:
    """Draws objects with CLEVR's placement rules (without pixel coordinates)."""
    sizes = list(SIZE_SCALE)
    colours = list(COLOR_RGB)
    while True:
        placed = np.zeros((0, 3))
        objects: list[dict[str, Any]] = []
        for _ in range(num_objects):
            size = sizes[rng.integers(len(sizes))]
            radius = SIZE_SCALE[size]
            # The official code redraws up to MAX_RETRIES times; drawing them all at once and
            # keeping the first that passes is the same distribution.
            candidates = rng.uniform(-3.0, 3.0, size=(MAX_RETRIES, 2))
            good = np.flatnonzero(_placement_ok(candidates, radius, placed, directions))
            if good.size == 0:
                break
            x, y = candidates[good[0]]
            shape = SHAPES[rng.integers(len(SHAPES))]
            colour = colours[rng.integers(len(colours))]
            rotation = 360.0 * rng.random()
            material = MATERIALS[rng.integers(len(MATERIALS))]
            if shape == "cube":
                radius /= math.sqrt(2.0)
            placed = np.concatenate([placed, [[x, y, radius]]])
            objects.append(
                {
                    "shape": shape,
                    "size": size,
                    "material": material,
                    "3d_coords": [float(x), float(y), SIZE_SCALE[size]],
                    "rotation": rotation,
                    "color": colour,
                }
            )
        if len(objects) == num_objects:
            return objects


def _relationships(
    objects: Sequence[Mapping[str, Any]], directions: dict[str, list[float]]
) -> dict[str, list[list[int]]]:
    """CLEVR's spatial relations: ``j`` is in ``relationships[name][i]`` when object ``j`` lies
    more than ``RELATION_EPS`` further than object ``i`` along direction ``name``."""
    coords = np.array([o["3d_coords"] for o in objects], dtype=np.float64).reshape(-1, 3)
    delta = coords[None, :, :] - coords[:, None, :]  # (K, K, 3): j minus i
    relations = {}
    for name in ("behind", "front", "left", "right"):
        related = delta @ np.asarray(directions[name]) > RELATION_EPS  # (K, K)
        relations[name] = [np.flatnonzero(row).tolist() for row in related]
    return relations


def sample_scene(
    rng: np.random.Generator, split: str = "train", index: int = 0
) -> tuple[dict[str, Any], Camera, Lights]:
    """Draws one complete CLEVR scene.

    Args:
        rng: Source of randomness; the scene is a deterministic function of its state.
        split: Split name written into the scene.
        index: Image index written into the scene.

    Returns:
        The scene as in a CLEVR scenes file (``image_index``, ``image_filename``, ``split``,
        ``objects`` with ``pixel_coords``, ``directions``, ``relationships``), the jittered camera
        and the jittered lights to render it with.
    """
    camera = Camera(tuple(np.array(CAMERA_POSITION) + rng.uniform(-1, 1, 3) * CAMERA_JITTER))
    lights = Lights(
        *(
            tuple(np.array(LIGHT_POSITIONS[name]) + rng.uniform(-1, 1, 3) * LIGHT_JITTER)
            for name in ("key", "fill", "back")
        )
    )
    directions = camera.directions()
    num_objects = int(rng.integers(MIN_OBJECTS, MAX_OBJECTS + 1))
    for _ in range(_MAX_REDRAWS):
        objects = _draw_objects(rng, num_objects, directions)
        ids = _object_ids(_Solids.from_objects(objects), camera)
        visible = np.bincount(ids[ids >= 0], minlength=len(objects))
        if (visible >= MIN_PIXELS).all():
            break
    else:
        raise RuntimeError(
            f"no placement of {num_objects} objects left each {MIN_PIXELS} visible pixels after {_MAX_REDRAWS} draws"
        )
    pixel_coords = camera.project(np.array([o["3d_coords"] for o in objects]))
    for obj, (px, py, depth) in zip(objects, pixel_coords, strict=True):
        obj["pixel_coords"] = [int(px), int(py), float(depth)]
    # Key order of the official files.
    objects = [
        {key: obj[key] for key in ("shape", "size", "material", "3d_coords", "rotation", "pixel_coords", "color")}
        for obj in objects
    ]
    scene = {
        "split": split,
        "image_index": index,
        "image_filename": f"CLEVR_{split}_{index:06d}.png",
        "objects": objects,
        "directions": directions,
        "relationships": _relationships(objects, directions),
    }
    return scene, camera, lights


# ---------------------------------------------------------------------------------------------
# Writing a data set.


def _image_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """Independent stream per image, so the output does not depend on the number of workers."""
    return np.random.SeedSequence([seed, zlib.crc32(split.encode()), index])


def _make_image(job: tuple[int, str, int, str, bool]) -> dict[str, Any]:
    seed, split, index, image_dir, keep_existing = job
    rng = np.random.default_rng(_image_seed(seed, split, index))
    scene, camera, lights = sample_scene(rng, split, index)
    path = Path(image_dir) / scene["image_filename"]
    if keep_existing and path.is_file():  # written whole (renamed into place) by this seed and renderer
        return scene
    image = Image.fromarray(render_scene(scene, camera, lights, rng=rng))
    atomic_write(path, lambda f: image.save(f, format="PNG", compress_level=3))
    return scene


def _claim(image_dir: Path, split: str, owner: dict[str, Any]) -> bool:
    """Whether the split's images in ``image_dir`` were made by ``owner`` (seed and renderer), so they can be kept.

    Images recorded as made by another seed or renderer are deleted before ``owner`` is recorded,
    so an interrupted run never leaves them under its name. Images with no record (e.g. real
    CLEVR) are never deleted: ValueError.
    """
    path = image_dir / _OWNER_FILE
    for partial in image_dir.glob(f".CLEVR_{split}_*.png.*.tmp"):  # left by an interrupted write
        partial.unlink()
    if path.is_file():  # written atomically, so always whole
        if json.loads(path.read_text()) == owner:
            return True
        for stale in image_dir.glob(f"CLEVR_{split}_[0-9]*.png"):
            stale.unlink()
    elif next(image_dir.glob(f"CLEVR_{split}_[0-9]*.png"), None) is not None:
        raise ValueError(
            f"out: {image_dir} already holds CLEVR images that this generator did not record making "
            f"(no {_OWNER_FILE}); generate into another folder, or delete them first"
        )
    atomic_write_json(path, owner)
    return False


def generate(
    out: str | Path,
    splits: Mapping[str, int],
    seed: int,
    workers: int = 1,
    progress: bool = True,
) -> None:
    """Writes a CLEVR-format data set to ``out/CLEVR_v1.0``.

    Every image is a deterministic function of ``(seed, split, index)``: the same call writes
    the same bytes, whatever ``workers`` is (``info.date`` is left empty for that reason). Each
    file is written under a temporary name and moved into place, and a split's scenes file is
    written once all its images are. An interrupted call resumes: ``images/{split}/.generator.json``
    records the seed and renderer version of the split's images; while it matches, images already
    there are kept (their scenes are drawn again, which costs a small part of rendering) and only
    missing ones are rendered. If it names another seed or renderer, the split's images are deleted
    first; images with no such record (e.g. real CLEVR) are never touched: ValueError. A split's scenes file is
    removed when its generation starts, so an interrupted run never pairs old scenes with new images.
    Generators started at once on one ``out`` take turns (a lock on ``out/.generate.lock``, beside the
    data folder, which keeps exactly the release's layout).

    Args:
        out: Folder to write ``CLEVR_v1.0/images/{split}/`` and ``CLEVR_v1.0/scenes/`` into.
        splits: Number of scenes per split, e.g. ``{"train": 10000, "val": 1000}``.
        seed: Seed of the whole data set.
        workers: Processes that sample and render in parallel.
        progress: Show a tqdm progress bar per split.
    """
    if not isinstance(splits, Mapping) or not splits:
        raise ValueError(f"splits must map split names to scene counts; got {splits!r}")
    for split, count in splits.items():
        if not isinstance(split, str) or not split or "/" in split:
            raise ValueError(f"splits keys must be plain names such as 'train'; got {split!r}")
        if not isinstance(count, int) or count < 0:
            raise ValueError(f"splits[{split!r}] must be an integer >= 0; got {count!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer >= 1; got {workers!r}")
    root = Path(out) / "CLEVR_v1.0"
    (root / "scenes").mkdir(parents=True, exist_ok=True)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    # One generator per folder at a time: a second one waits, then keeps the first one's images.
    with (
        exclusive_lock(root.parent / ".generate.lock"),
        pool or contextlib.nullcontext(),
    ):  # a Pool terminates its workers
        for split, count in splits.items():
            image_dir = root / "images" / split
            image_dir.mkdir(parents=True, exist_ok=True)
            keep = _claim(image_dir, split, {"seed": seed, "renderer": RENDERER_VERSION})
            scenes_path = root / "scenes" / f"CLEVR_{split}_scenes.json"
            scenes_path.unlink(missing_ok=True)  # rewritten below once every image is there
            jobs = [(seed, split, index, str(image_dir), keep) for index in range(count)]
            results: Iterator[dict[str, Any]] = (
                pool.imap(_make_image, jobs, chunksize=4) if pool else map(_make_image, jobs)
            )
            scenes = list(tqdm(results, total=count, desc=f"CLEVR {split}", unit="img", disable=not progress))
            info = {"date": "", "version": "1.0", "split": split, "license": LICENSE}
            atomic_write_text(scenes_path, json.dumps({"info": info, "scenes": scenes}))  # compact, as CLEVR's
