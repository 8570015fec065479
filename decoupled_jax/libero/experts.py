"""Scripted experts for LIBERO pick-and-place tasks, from privileged object poses.

Simulator side (numpy + the LIBERO venv; never jax). An expert reads the raw robosuite
observation plus the scene's privileged geometry (MuJoCo collision-geom bounding boxes of every
object and fixture) and emits LIBERO's native delta OSC_POSE actions [dpos(3), daxis-angle(3),
gripper ±1] in [-1, 1].

Design (`PickPlaceExpert`, one state machine for libero_spatial and libero_object):
  approach  -> above the grasp point at a travel height clearing everything on the way
  descend   -> straight down to the grasp point, gripper open
  close     -> close the gripper for a few steps, holding position
  lift      -> straight up until the object's bottom clears every obstacle between it and the
               target (+ margin); if the object did not come up: open, back off, re-plan
  transport -> closed loop on the *object's* position: move so the object is above the target
  lower     -> down until the object's bottom is a little above the target's support surface
  release   -> open, then retreat upwards and hold
Position: proportional control on the end-effector error, clipped (max speed drawn per
episode). Orientation: the gripper is kept pointing down; its yaw is servoed to the grasp yaw
(error as a world-frame axis-angle, which is what robosuite's OSC applies). Grasp choice from
the object geometry: bowls (libero_spatial) are grasped on the rim, one finger inside, closing
radially; boxes/bottles/cans (libero_object) are grasped around the body, closing along the
narrower horizontal side (cylinders: any yaw), at a height from the object's extent (low enough
for a firm grip, high enough that the palm clears the top). Candidates are scored by the
clearance of the open gripper lowered straight down onto them (the fingers' hulls, sampled from
the live model, and the hand's box against the other objects' oriented boxes, overhangs
included) and by the free room beside the object where the outer finger goes. Demonstration
diversity: a seeded per-episode RNG perturbs grasp offsets and yaw choice, speeds, gains, carry margins,
release heights and hold durations, plus small action noise (same seed -> same actions).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

EXPERT_NAME = "decoupled_jax.libero.experts.PickPlaceExpert/v2"
SUPPORTED_SUITES = ("libero_spatial", "libero_object")

OPEN, CLOSE = -1.0, 1.0
POS_SCALE = 0.05          # controller output_max for position (m per unit action)
ROT_SCALE = 0.5           # controller output_max for rotation (rad per unit action)
# Panda gripper geometry relative to the grip site (gripper open, pointing down), from
# robosuite's meshes (MuJoCo collides their convex hulls): the fingertips are 1.2 cm below the
# grip site; the hand's hull reaches down to 3 cm above it across its whole 21 cm width. The
# fingers' hulls are sampled from the live model (`_finger_points`); the hand is a box:
# (from, to) along the closing axis, +-tangent half width, (from, to) in z.
FINGER_BELOW = 0.012
PALM_ABOVE = 0.030
HAND_BOX = ((-0.106, 0.106), 0.036, (0.030, 0.150))
WRIST_ABOVE = 0.21        # the Panda's wrist centre above the grip site (gripper pointing down)
SHOULDER_ABOVE = 0.333    # the shoulder (joint 2) above the robot's base
MAX_REACH = 0.745         # shoulder-to-wrist distance kept for travel heights; the elbow locks
                          # straight near 0.77 and the arm then crawls
K_INT = 2.0               # leaky-integral gain (action per metre-step of error)
INT_LEAK = 0.85
REACH_SOFT = 0.72         # grasp / place poses beyond this are penalised


# ------------------------------------------------------------------------------------------
# rotations (numpy only; quaternions are xyzw as robosuite's observations)
# ------------------------------------------------------------------------------------------
def quat2mat(q) -> np.ndarray:
  x, y, z, w = np.asarray(q, np.float64) / max(np.linalg.norm(q), 1e-12)
  return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                   [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                   [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def mat2axisangle(r) -> np.ndarray:
  r = np.asarray(r, np.float64)
  cos = min(max((np.trace(r) - 1.0) / 2.0, -1.0), 1.0)
  angle = math.acos(cos)
  if angle < 1e-6:
    return np.zeros(3)
  skew = np.array([r[2, 1] - r[1, 2], r[0, 2] - r[2, 0], r[1, 0] - r[0, 1]])
  if angle > math.pi - 1e-3:   # near pi the skew part vanishes: axis from the symmetric part
    b = (r + r.T) / 2 - cos * np.eye(3)       # = (1 - cos) a a^T
    i = int(np.argmax(np.diag(b)))
    axis = b[:, i] / math.sqrt(max(b[i, i] * (1 - cos), 1e-12))
    if axis @ skew < 0:
      axis = -axis
    return axis / np.linalg.norm(axis) * angle
  return skew / (2 * math.sin(angle)) * angle


def rot_z(a: float) -> np.ndarray:
  c, s = math.cos(a), math.sin(a)
  return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


R_DOWN = np.diag([1.0, -1.0, -1.0])   # robot0_eef_quat of the top-down gripper at yaw 0 (xyzw 1,0,0,0)


def wrap_half(a: float) -> float:
  """An angle modulo pi, in [-pi/2, pi/2) (a parallel gripper is symmetric under pi)."""
  return (a + math.pi / 2) % math.pi - math.pi / 2


# ------------------------------------------------------------------------------------------
# privileged scene geometry
# ------------------------------------------------------------------------------------------
_CORNERS = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], float)


class Scene:
  """Collision-geom bounding boxes of the task's objects and fixtures (world frame, live)."""

  def __init__(self, task):
    import mujoco
    env = task.env.env
    self.env, self.sim = env, env.sim
    self.m, self.d = env.sim.model._model, env.sim.data._data
    m = self.m
    named = {**{k: v for k, v in env.fixtures_dict.items()}, **env.objects_dict}
    self.root = {}
    self.geoms = {}
    parent = np.asarray(m.body_parentid)
    collide = (np.asarray(m.geom_contype) != 0) | (np.asarray(m.geom_conaffinity) != 0)
    body_of = np.asarray(m.geom_bodyid)
    for name, obj in named.items():
      bid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, obj.root_body)
      if bid < 0:
        continue
      sub = set()
      for b in range(m.nbody):
        x = b
        while x > 0:
          if x == bid:
            sub.add(b)
            break
          x = parent[x]
      ids = np.array([g for g in range(m.ngeom) if collide[g] and body_of[g] in sub], int)
      if len(ids):
        self.root[name], self.geoms[name] = bid, ids
    self._local = {}

  def geom_boxes(self, ids) -> tuple[np.ndarray, np.ndarray]:
    """World AABBs (lo, hi), each (N, 3), of geoms `ids`."""
    ids = np.asarray(ids, int)
    aabb = np.asarray(self.m.geom_aabb)[ids]                       # (N, 6) centre, half size
    pts = aabb[:, None, :3] + _CORNERS[None] * aabb[:, None, 3:]   # (N, 8, 3) geom frame
    rot = np.asarray(self.d.geom_xmat)[ids].reshape(-1, 3, 3)
    w = np.einsum("nij,nkj->nki", rot, pts) + np.asarray(self.d.geom_xpos)[ids][:, None]
    return w.min(1), w.max(1)

  def box(self, name) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = self.geom_boxes(self.geoms[name])
    return lo.min(0), hi.max(0)

  def pose(self, name) -> tuple[np.ndarray, np.ndarray]:
    b = self.root[name]
    return np.array(self.d.xpos[b]), np.array(self.d.xmat[b]).reshape(3, 3)

  def local_box(self, name) -> tuple[np.ndarray, np.ndarray]:
    """The object's AABB in its own root-body frame (rigid objects; cached)."""
    if name not in self._local:
      ids = self.geoms[name]
      aabb = np.asarray(self.m.geom_aabb)[ids]
      pts = aabb[:, None, :3] + _CORNERS[None] * aabb[:, None, 3:]
      rot = np.asarray(self.d.geom_xmat)[ids].reshape(-1, 3, 3)
      w = np.einsum("nij,nkj->nki", rot, pts) + np.asarray(self.d.geom_xpos)[ids][:, None]
      pos, r = self.pose(name)
      loc = (w.reshape(-1, 3) - pos) @ r
      self._local[name] = (loc.min(0), loc.max(0))
    return self._local[name]

  def obstacle_obbs(self, exclude=(), near=None, radius=np.inf):
    """Oriented boxes (centre (N,3), rotation (N,3,3), half size (N,3)) of the other geoms
    (those within `radius` of `near` when given)."""
    ids = [g for n, g in self.geoms.items() if n not in exclude]
    if not ids:
      return np.zeros((0, 3)), np.zeros((0, 3, 3)), np.zeros((0, 3))
    ids = np.concatenate(ids)
    aabb = np.asarray(self.m.geom_aabb)[ids]
    rot = np.asarray(self.d.geom_xmat)[ids].reshape(-1, 3, 3)
    ctr = np.asarray(self.d.geom_xpos)[ids] + np.einsum("nij,nj->ni", rot, aabb[:, :3])
    half = aabb[:, 3:]
    if near is not None:
      keep = np.linalg.norm(ctr - near, axis=1) - np.linalg.norm(half, axis=1) < radius
      ctr, rot, half = ctr[keep], rot[keep], half[keep]
    return ctr, rot, half

  def site_pos(self, name) -> Optional[np.ndarray]:
    try:
      return np.array(self.sim.data.get_site_xpos(name))
    except Exception:  # noqa: BLE001 - not every target has a site
      return None


def obb_distance(pts, ctr, rot, half) -> np.ndarray:
  """(P,) distance from each point to the nearest of N oriented boxes."""
  q = np.einsum("nji,pnj->pni", rot, pts[:, None, :] - ctr[None])   # (P, N, 3) box frames
  d = np.linalg.norm(np.maximum(np.abs(q) - half[None], 0.0), axis=-1)
  return d.min(1)


def column_top(xy, z0: float, z1: float, ctr, rot, half, margin: float = 0.0) -> np.ndarray:
  """(P,) the highest z in [z0, z1] at which the vertical line above each xy point (P, 2)
  meets one of N oriented boxes (grown by `margin`); -inf where it meets none. A part of the
  gripper going straight down over that point stops there."""
  if not len(ctr):
    return np.full(len(xy), -np.inf)
  p0 = np.concatenate([np.asarray(xy, float), np.full((len(xy), 1), z0)], 1)
  d = np.einsum("nji,pnj->pni", rot, p0[:, None, :] - ctr[None])         # (P, N, 3)
  e = rot[:, 2, :][None]                                                  # box-frame up
  h = half[None] + margin
  flat = np.abs(e) < 1e-9
  with np.errstate(divide="ignore", invalid="ignore"):
    a = np.where(flat, 0.0, (-h - d) / np.where(flat, 1.0, e))
    b = np.where(flat, 0.0, (h - d) / np.where(flat, 1.0, e))
  inside = np.abs(d) <= h
  lo = np.where(flat, np.where(inside, -np.inf, np.inf), np.minimum(a, b)).max(-1)
  hi = np.where(flat, np.where(inside, np.inf, -np.inf), np.maximum(a, b)).min(-1)
  hit = (lo <= hi) & (hi >= 0) & (lo <= z1 - z0)
  top = np.where(hit, z0 + np.minimum(hi, z1 - z0), -np.inf)
  return top.max(1)


def corridor_top(obbs, p0, p1, radius: float, z_floor: float) -> float:
  """The highest obstacle surface (OBBs) under a disc of `radius` swept from p0 to p1 (xy),
  between z_floor and 1 m above it; z_floor if there is none."""
  n = max(2, int(np.linalg.norm(np.asarray(p1[:2]) - p0[:2]) / 0.015) + 1)
  path = np.linspace(np.asarray(p0[:2], float), np.asarray(p1[:2], float), n)
  ang = np.linspace(0, 2 * np.pi, 10, endpoint=False)
  disc = np.concatenate([[[0.0, 0.0]], 0.5 * radius * np.stack([np.cos(ang[::2]), np.sin(ang[::2])], 1),
                         radius * np.stack([np.cos(ang), np.sin(ang)], 1)])
  xy = (path[:, None] + disc[None]).reshape(-1, 2)
  top = column_top(xy, z_floor, z_floor + 1.0, *obbs)
  return float(max(z_floor, top.max())) if len(top) else z_floor


# ------------------------------------------------------------------------------------------
# the expert
# ------------------------------------------------------------------------------------------
class PickPlaceExpert:
  """Pick `task.objects[0]` and put it on / in `task.objects[1]` (libero_spatial/object)."""

  name = EXPERT_NAME

  def __init__(self, task, seed: int = 0):
    if task.suite not in SUPPORTED_SUITES:
      raise NotImplementedError(f"no scripted expert for {task.suite}; have {SUPPORTED_SUITES}")
    self.task = task
    self.scene = Scene(task)
    self.obj, self.target = task.objects[0], task.objects[1]
    self.rim_grasp = "bowl" in self.obj
    self.shoulder = np.asarray(task.env.env.robots[0].base_pos, float) + [0.0, 0.0, SHOULDER_ABOVE]
    self.finger_points = self._finger_points()
    self.foot = self._footprint(self.finger_points)
    self.rng = np.random.default_rng(seed)
    r = self.rng
    # per-episode style (demonstration diversity)
    self.vmax = r.uniform(0.85, 1.0)
    self.k_pos = r.uniform(18.0, 28.0)          # action per metre of error
    self.k_rot = r.uniform(1.6, 2.4)            # action per radian of error
    self.noise = r.uniform(0.0, 0.04)
    self.carry_margin = r.uniform(0.05, 0.08)
    self.release_h = r.uniform(0.008, 0.02) if self.rim_grasp else r.uniform(0.015, 0.035)
    self.close_steps = int(r.integers(9, 13))
    self.open_steps = int(r.integers(5, 9))
    self.grasp_jitter = r.uniform(-1.0, 1.0, 3) * np.array([0.004, 0.004, 0.003])
    self.place_jitter = r.uniform(-1.0, 1.0, 2) * (0.006 if self.rim_grasp else 0.012)
    self.phase, self.t_phase, self.tries = "approach", 0, 0
    self.plan = None
    self.hold = None
    self.history: list[np.ndarray] = []
    self.i_err = np.zeros(3)                # integral of the position error (this phase)
    self.failed_dirs: list[float] = []      # closing directions of grasps that failed
    self.debug: Optional[list] = None       # set to [] to collect the grasp scores

  # -- planning -----------------------------------------------------------------------------
  def _reach(self, p) -> float:
    """Shoulder-to-wrist distance with the gripper pointing down at grip-site position p."""
    return float(np.linalg.norm(np.asarray(p, float) + np.array([0.0, 0.0, WRIST_ABOVE])
                                - self.shoulder))

  def _max_z(self, xy, z_min: float) -> float:
    """The highest grip-site z at xy within comfortable reach (at least z_min)."""
    d2 = MAX_REACH ** 2 - float(np.sum((np.asarray(xy[:2]) - self.shoulder[:2]) ** 2))
    return max(z_min, self.shoulder[2] - WRIST_ABOVE + math.sqrt(d2)) if d2 > 0 else z_min

  def _grasp_candidates(self):
    """[(grasp point (3), closing direction (2), gripper yaw, cost)] for the object's pose."""
    sc, name = self.scene, self.obj
    pos, rot = sc.pose(name)
    llo, lhi = sc.local_box(name)
    wlo, whi = sc.box(name)
    out = []
    if self.rim_grasp:
      # bowl: gripper centred on the wall, one finger inside, closing radially
      k = int(np.argmax(np.abs(rot[2])))              # the local axis that is up
      axes = [i for i in range(3) if i != k]
      radius = 0.5 * min(lhi[axes[0]] - llo[axes[0]], lhi[axes[1]] - llo[axes[1]])
      ctr_l = (llo + lhi) / 2
      top_l = lhi[k] if rot[2, k] > 0 else llo[k]
      for ang in np.deg2rad(np.arange(0, 360, 10)) + self.rng.uniform(-0.06, 0.06):
        u = np.array([math.cos(ang), math.sin(ang), 0.0])
        ul = rot.T @ u
        ul[k] = 0.0
        ul /= max(np.linalg.norm(ul), 1e-9)
        for inset in (0.007, 0.010, 0.013):
          for depth in (0.022, 0.018, 0.014, 0.010, 0.007):
            p_l = ctr_l + (radius - inset) * ul
            p_l[k] = top_l
            g = pos + rot @ p_l - np.array([0.0, 0.0, depth])
            g[2] = max(g[2], wlo[2] + FINGER_BELOW + 0.006)
            cost = 0.6 * (0.022 - depth) + 0.2 * (inset - 0.007)
            out.append((g, u[:2], wrap_half(ang - math.pi / 2), cost))
      return out
    k = int(np.argmax(np.abs(rot[2])))
    axes = [i for i in range(3) if i != k]
    widths = [lhi[i] - llo[i] for i in axes]
    ctr = pos + rot @ ((llo + lhi) / 2)
    height = whi[2] - wlo[2]
    gz = max(wlo[2] + 0.012, min(whi[2] - 0.02, wlo[2] + 0.5 * height))
    gz = max(gz, whi[2] - PALM_ABOVE + 0.006)
    g = np.array([ctr[0], ctr[1], gz])
    if abs(widths[0] - widths[1]) < 0.012:   # round enough: any yaw
      angs = np.deg2rad(np.arange(0, 180, 15)) + self.rng.uniform(-0.1, 0.1)
      for ang in angs:
        out.append((g, np.array([math.cos(ang), math.sin(ang)]), wrap_half(ang - math.pi / 2), 0.0))
    else:
      order = np.argsort(widths)
      for rank, j in enumerate(order):
        if widths[j] > 0.075:
          continue
        d = rot[:2, axes[j]]
        d = d / max(np.linalg.norm(d), 1e-9)
        ang = math.atan2(d[1], d[0]) + self.rng.uniform(-0.05, 0.05)
        out.append((g, np.array([math.cos(ang), math.sin(ang)]), wrap_half(ang - math.pi / 2),
                    0.02 * rank))
    return out

  def _finger_points(self) -> np.ndarray:
    """Points filling finger 1's collision hull (vertices and pairwise midpoints), as
    (along the closing axis, tangent, up) offsets from the grip site; finger 1 is on the +
    side. Taken from the live (open, top-down) gripper."""
    import mujoco
    m, d = self.scene.m, self.scene.d
    site = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, "gripper0_grip_site")
    f1 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "gripper0_leftfinger")
    f2 = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_BODY, "gripper0_rightfinger")
    geom = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_GEOM, "gripper0_finger1_collision")
    if min(site, f1, f2, geom) < 0 or m.geom_dataid[geom] < 0:
      return np.array([[a, b, z] for a in (0.037, 0.053) for b in (-0.011, 0.011)
                       for z in (-0.013, 0.03)] + [[0.064, b, z] for b in (-0.011, 0.011)
                                                   for z in (0.02, 0.03)])
    mesh = m.geom_dataid[geom]
    v = np.asarray(m.mesh_vert[m.mesh_vertadr[mesh]:m.mesh_vertadr[mesh] + m.mesh_vertnum[mesh]])
    w = v @ np.asarray(d.geom_xmat[geom]).reshape(3, 3).T + d.geom_xpos[geom] - d.site_xpos[site]
    c = np.asarray(d.xpos[f1] - d.xpos[f2], float)
    c[2] = 0.0
    c /= max(np.linalg.norm(c), 1e-9)
    t = np.array([-c[1], c[0], 0.0])
    local = np.stack([w @ c, w @ t, w[:, 2]], 1)
    local = local[local[:, 2] < PALM_ABOVE + 0.005]       # the rest is inside the hand
    i, j = np.triu_indices(len(local), 1)
    return np.concatenate([local, (local[i] + local[j]) / 2])

  @staticmethod
  def _footprint(points, cell: float = 0.003) -> np.ndarray:
    """(a, b, lowest z) per `cell`-sized xy cell of a point cloud (a finger's hull)."""
    keys = np.round(points[:, :2] / cell).astype(int)
    out = {}
    for k, p in zip(map(tuple, keys), points):
      if k not in out or p[2] < out[k][2]:
        out[k] = (k[0] * cell, k[1] * cell, p[2])
    return np.array(sorted(out.values()))

  def _descent_clearance(self, g, u, obbs, inner_free: bool, z0: float, z1: float):
    """The open gripper lowered straight down to grasp xy g (closing along u): (hard, soft)
    clearances relative to the grip site's height (add it), i.e. min over the fingers' and
    the hand's footprints of (their lowest point there - the highest obstacle in [z0, z1]
    under it). An overhang (a cabinet top over a drawer) counts: the gripper has to
    pass it. Hard: obstacles grown by 2 mm under the fingertips, shrunk by 3 mm under the
    fingers' flared upper part (grazing a thin wall's edge with it is harmless), and grown by
    5 mm under the hand (its sample points are <= 9 mm apart); soft: everything
    grown by 6 mm."""
    u = np.asarray(u) / max(np.linalg.norm(u), 1e-9)
    t = np.array([-u[1], u[0]])
    f = self.foot                     # (a, b, lowest z) of finger 1's footprint
    xy, low = [g[:2] + f[:, :1] * u + f[:, 1:2] * t], [f[:, 2]]
    if not inner_free:                # finger 2: finger 1 turned half a turn
      xy.append(g[:2] - f[:, :1] * u - f[:, 1:2] * t)
      low.append(f[:, 2])
    (a0, a1), ht, (hz, _) = HAND_BOX
    a, b = np.meshgrid(np.linspace(a0, a1, 25), np.linspace(-ht, ht, 5))   # <= 9 mm apart
    hand_xy = g[:2] + a.reshape(-1, 1) * u + b.reshape(-1, 1) * t
    xy, low = np.concatenate(xy), np.concatenate(low)
    tip = low < 0.008
    hard = np.concatenate([
        low[tip] - column_top(xy[tip], z0, z1, *obbs, margin=0.002),
        low[~tip] - column_top(xy[~tip], z0, z1, *obbs, margin=-0.003),
        hz - column_top(hand_xy, z0, z1, *obbs, margin=0.005)]).min()
    soft = np.concatenate([low - column_top(xy, z0, z1, *obbs, margin=0.006),
                           hz - column_top(hand_xy, z0, z1, *obbs, margin=0.006)]).min()
    return float(hard), float(soft)

  def _free_gap(self, ctr, radius, z, u, obbs) -> float:
    """Free room (m, up to 6 cm) beyond the object's side along u at height z: where the
    outer finger goes."""
    if not len(obbs[0]):
      return 0.06
    u = np.append(np.asarray(u) / max(np.linalg.norm(u), 1e-9), 0.0)
    t = np.array([-u[1], u[0], 0.0])
    steps = np.arange(0.0, 0.0601, 0.004)
    pts = np.concatenate([ctr + np.outer(radius + steps, u) + off * t + [0.0, 0.0, dz]
                          for off in (-0.01, 0.0, 0.01) for dz in (0.0, 0.015)])
    pts[:, 2] = pts[:, 2] - ctr[2] + z
    hit = (obb_distance(pts, *obbs) < 0.002).reshape(6, len(steps)).any(0)
    return float(steps[np.argmax(hit)]) if hit.any() else 0.06

  def _plan(self, raw):
    sc = self.scene
    obbs = sc.obstacle_obbs(exclude=(self.obj,), near=sc.pose(self.obj)[0], radius=0.3)
    cands = self._grasp_candidates()
    yaw_now = self._yaw(raw)
    scores = []
    obj_ctr = self._center(self.obj)
    place_xy, support = self._place_plan(raw, jitter=False)
    olo, ohi = sc.box(self.obj)
    radius = 0.5 * float(np.min(ohi[:2] - olo[:2]))
    gaps, descent = {}, {}
    zs = [c[0][2] for c in cands]
    z0, z1 = min(zs) - 0.1, max(zs) + 0.15
    for g, u, yaw, cost in cands:
      # the footprint depends on the grasp's xy only: one obstacle query per (direction, inset)
      key = (round(g[0], 5), round(g[1], 5))
      if key not in descent:
        descent[key] = self._descent_clearance(g, u, obbs, self.rim_grasp, z0, z1)
      hard, soft = descent[key][0] + g[2], descent[key][1] + g[2]
      c = (min(hard, 0.01) - (0.05 if hard < 0.0 else 0.0)
           - (0.005 if soft < 0.0 else 0.0))
      ukey = (round(u[0], 6), round(u[1], 6))
      if ukey not in gaps:
        gaps[ukey] = self._free_gap(obj_ctr, radius, g[2], u, obbs)
      c += 0.3 * min(gaps[ukey], 0.05)
      turn = abs(wrap_half(yaw - 0.0))
      # where the grip site will be when the object is put down (the grasp offset is kept)
      at_place = np.append(place_xy + g[:2] - obj_ctr[:2], support + 0.02 + g[2] - olo[2])
      over = max(0.0, self._reach(g) - REACH_SOFT) + max(0.0, self._reach(at_place) - REACH_SOFT)
      ang = math.atan2(u[1], u[0])
      tried = sum(abs(math.remainder(ang - a, 2 * math.pi)) < 0.45 for a in self.failed_dirs)
      scores.append(c - 0.006 * turn - cost - 2.0 * over - 0.01 * tried
                    + self.rng.uniform(0, 0.004) - 0.002 * abs(wrap_half(yaw - yaw_now)))
      if self.debug is not None:
        self.debug.append(dict(score=scores[-1], ang=math.degrees(ang), z=g[2], hard=hard,
                               soft=soft, gap=gaps[ukey], over=over, cost=cost, turn=turn))
    i = int(np.argmax(scores))
    g, u, yaw, _ = cands[i]
    g = g + self.grasp_jitter
    eef = raw["robot0_eef_pos"]
    need = corridor_top(sc.obstacle_obbs(exclude=(self.obj,)), eef, g, 0.07, g[2]) \
        + FINGER_BELOW + 0.03
    want = max(need + 0.02, g[2] + 0.07) + self.rng.uniform(0.0, 0.03)
    travel = max(need, g[2] + 0.05, min(want, self._max_z(g, 0.0)))
    pos, rot = sc.pose(self.obj)
    self.plan = dict(grasp=g, yaw=yaw, travel=travel, dir=math.atan2(u[1], u[0]), obj_z0=float(pos[2]), obj_pos=pos, obj_rot=rot)

  def _center(self, name) -> np.ndarray:
    pos, rot = self.scene.pose(name)
    llo, lhi = self.scene.local_box(name)
    return pos + rot @ ((llo + lhi) / 2)

  def _place_plan(self, raw, jitter: bool = True):
    """Where the object goes: xy of the target's centre, and the support height there."""
    sc = self.scene
    site = sc.site_pos(f"{self.target}_contain_region")
    tlo, thi = sc.geom_boxes(sc.geoms[self.target])
    xy = site[:2] if site is not None else self._center(self.target)[:2]
    cover = (tlo[:, 0] <= xy[0]) & (thi[:, 0] >= xy[0]) & (tlo[:, 1] <= xy[1]) & (thi[:, 1] >= xy[1])
    support = float(thi[cover, 2].max()) if cover.any() else float(thi[:, 2].min())
    if jitter:
      xy = xy + self.place_jitter
    return xy, support

  # -- control ------------------------------------------------------------------------------
  @staticmethod
  def _yaw(raw) -> float:
    r = quat2mat(raw["robot0_eef_quat"]) @ R_DOWN.T
    return math.atan2(r[1, 0], r[0, 0])

  def _servo(self, raw, target, yaw, grip, vmax=None):
    err = np.asarray(target, float) - raw["robot0_eef_pos"]
    a = np.zeros(7)
    v = self.vmax if vmax is None else vmax
    # a leaky integral near the target: pushes through the arm's stiction (small OSC deltas
    # do not move it, leaving mm-level offsets) without winding up on long moves
    near = np.linalg.norm(err) < 0.03
    self.i_err = INT_LEAK * self.i_err + err * near
    a[:3] = np.clip(err * self.k_pos + K_INT * self.i_err, -v, v)
    r_goal = rot_z(yaw) @ R_DOWN
    r_cur = quat2mat(raw["robot0_eef_quat"])
    a[3:6] = np.clip(mat2axisangle(r_goal @ r_cur.T) * self.k_rot, -1.0, 1.0)
    if self.noise:
      a[:3] += self.rng.normal(0.0, self.noise, 3)
    a[:6] = np.clip(a[:6], -1.0, 1.0)
    a[6] = grip
    return a, float(np.linalg.norm(err)), err

  def _goto(self, phase):
    self.phase, self.t_phase = phase, 0
    self.history.clear()
    self.i_err = np.zeros(3)

  def act(self, raw) -> np.ndarray:
    """The next action for raw observation `raw`."""
    if self.plan is None:
      self._plan(raw)
    sc, p = self.scene, self.plan
    self.t_phase += 1
    eef = np.asarray(raw["robot0_eef_pos"], float)
    obj_pos = sc.pose(self.obj)[0]
    olo, ohi = sc.box(self.obj)

    if self.phase in ("approach", "descend"):
      # the object may still be settling: follow it, and re-plan if it turned
      pos, rot = sc.pose(self.obj)
      if self.phase == "approach" and np.linalg.norm(mat2axisangle(rot @ p["obj_rot"].T)) > 0.08:
        self._plan(raw)
        p = self.plan
      if self.phase == "descend" and np.linalg.norm(pos - p["pos0"]) > 0.015:
        return self._regrasp(raw)     # pushed it while going down: back off and re-plan
      shift = pos - p["obj_pos"]
      p["grasp"], p["obj_pos"] = p["grasp"] + shift, pos
      p["obj_z0"] = float(pos[2])     # a re-plan may start while a dropped object still falls
      p["travel"] += max(shift[2], 0.0)
      if self.phase == "approach":
        p["pos0"] = pos
    yaw = p["yaw"]
    if self.phase == "approach":
      tgt = np.array([p["grasp"][0], p["grasp"][1], p["travel"]])
      a, dist, err = self._servo(raw, tgt, yaw, OPEN)
      yaw_err = abs(wrap_half(self._yaw(raw) - yaw))
      self.history.append(eef)
      # settled in xy too: going down while still sliding sideways overshoots onto the object
      slow = (len(self.history) > 1
              and np.linalg.norm(self.history[-1][:2] - self.history[-2][:2]) < 0.003)
      if (np.linalg.norm(err[:2]) < 0.006 and abs(err[2]) < 0.03 and yaw_err < 0.06 and slow) \
          or self.t_phase > 80:
        self._goto("descend")
      return a
    if self.phase == "descend":
      tgt = p["grasp"].copy()
      if np.linalg.norm(tgt[:2] - eef[:2]) > 0.007 and eef[2] - tgt[2] < 0.04:
        tgt[2] = max(tgt[2], eef[2] - 0.005)         # line up before going in among things
      a, _, _ = self._servo(raw, tgt, yaw, OPEN, vmax=min(self.vmax, 0.7))
      err = p["grasp"] - eef
      dist = float(np.linalg.norm(err))
      self.history.append(eef)
      stalled = len(self.history) > 6 and np.linalg.norm(self.history[-1] - self.history[-6]) < 0.003
      if dist < 0.006 or (stalled and abs(err[2]) < 0.03) or self.t_phase > 50:
        self._goto("close")
      return a
    if self.phase == "close":
      a, _, _ = self._servo(raw, p["grasp"], yaw, CLOSE, vmax=0.3)
      if self.t_phase >= self.close_steps:
        xy, support = self._place_plan(raw)
        p["place_xy"], p["support"] = xy, support
        rad = 0.5 * float(np.linalg.norm(ohi[:2] - olo[:2])) + 0.02
        clear = corridor_top(sc.obstacle_obbs(exclude=(self.obj,)), obj_pos, xy, rad, support)
        hang = eef[2] - olo[2]                      # grip site above the object's bottom
        need = max(clear + 0.04, support + 0.04) + hang         # must clear the way
        want = max(clear + self.carry_margin, support + 0.06) + hang
        p["carry"] = max(need, min(want, self._max_z(eef, 0.0), self._max_z(xy, 0.0)))
        p["hang"] = hang
        p["lift_xy"] = eef[:2].copy()
        self._goto("lift")
      return a
    if self.phase == "lift":
      tgt = np.array([p["lift_xy"][0], p["lift_xy"][1], p["carry"]])
      a, dist, err = self._servo(raw, tgt, yaw, CLOSE)
      rose = eef[2] - p["grasp"][2]
      if rose > 0.04 and obj_pos[2] - p["obj_z0"] < rose - 0.03:   # not coming along
        return self._regrasp(raw)
      if abs(err[2]) < 0.015 or self.t_phase > 60:
        self._goto("transport")
      return a
    if self.phase in ("transport", "lower"):
      obj_err = np.zeros(3)
      obj_err[:2] = p["place_xy"] - obj_pos[:2]
      if self.phase == "transport":
        tgt = eef + obj_err
        tgt[2] = p["carry"]
        a, _, _ = self._servo(raw, tgt, yaw, CLOSE)
        if np.linalg.norm(obj_err[:2]) < 0.008 or self.t_phase > 90:
          self._goto("lower")
      else:
        obj_err[2] = p["support"] + self.release_h - olo[2]
        tgt = eef + obj_err
        a, _, _ = self._servo(raw, tgt, yaw, CLOSE, vmax=min(self.vmax, 0.6))
        self.history.append(eef)
        stalled = len(self.history) > 6 and np.linalg.norm(self.history[-1] - self.history[-6]) < 0.002
        if (abs(obj_err[2]) < 0.006 and np.linalg.norm(obj_err[:2]) < 0.012) or stalled \
            or self.t_phase > 60:
          self.hold = eef.copy()
          self._goto("release")
      if eef[2] - olo[2] > p["hang"] + 0.04:      # dropped on the way
        return self._regrasp(raw)
      return a
    if self.phase == "release":
      a, _, _ = self._servo(raw, self.hold, yaw, OPEN, vmax=0.3)
      if self.t_phase >= self.open_steps:
        self._goto("retreat")
      return a
    # retreat / done: back up and hold; if the object did not end up in place, pick it again
    if self.t_phase > 20 and not self.task.success():
      return self._regrasp(raw)
    tgt = self.hold + np.array([0.0, 0.0, 0.08])
    a, _, _ = self._servo(raw, tgt, yaw, OPEN, vmax=0.6)
    return a

  def _regrasp(self, raw):
    """The grasp failed: open, back off upwards, re-plan from the object's new pose."""
    self.tries += 1
    if self.plan is not None:
      self.failed_dirs.append(self.plan["dir"])
    self.plan = None
    self.grasp_jitter = self.rng.uniform(-1.0, 1.0, 3) * np.array([0.003, 0.003, 0.002])
    self._goto("approach")
    a = np.zeros(7)
    a[2] = 0.6
    a[6] = OPEN
    return a


def make_expert(task, seed: int = 0) -> PickPlaceExpert:
  """The scripted expert for `task` (a `LiberoTask`), with per-episode randomisation `seed`."""
  return PickPlaceExpert(task, seed)
