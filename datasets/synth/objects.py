"""Targets and look-alikes for the synthetic scene generator: planning and drawing.

An object lives in its own frame: ``u`` along its length, ``v`` across, both in metres, origin at
the object's centre. The frame is rotated by ``angle`` (radians): the ``u`` axis points along
``(cos angle, sin angle)`` in image coordinates (x right, y down). Shapes are signed distance
functions (metres, negative inside) turned into anti-aliased coverage, heights (metres above
ground) and albedo (linear RGB).

The *footprint* of a target is its raised part as seen from above: mound and headwall (with
door) of a bunker, the earth berm of a revetment, the roof of a shelter. Ground-level aprons,
roads, vehicles parked outside and shadows are not part of it; its axis-aligned bounding box is
the label.

Planning (all random draws) is separate from drawing (a pure function of the plan), so a plan
can be inspected and the same targets reproduced with or without negatives.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .terrain import Palette, Track, fractal_noise

TARGETS = ("bunker", "revetment", "shelter")
NEGATIVES = ("house", "shed", "barn", "greenhouse", "pond", "tank", "ring_berm", "dyke",
             "spoil", "hay")


@dataclass
class Obj:
    """One planned object.

    kind: a name in ``TARGETS`` or ``NEGATIVES``. cx, cy: centre in pixels. angle: radians.
    length, width: footprint extent along ``u`` and ``v`` in metres (centred on the origin).
    keep_out: ``(u0, u1, v0, v1)`` metres, a rectangle holding everything drawn (aprons too).
    p: shape parameters and colours. label: index into ``TARGETS``, ``-1`` for negatives.
    """

    kind: str
    cx: float
    cy: float
    angle: float
    length: float
    width: float
    keep_out: tuple
    p: dict = field(default_factory=dict)
    label: int = -1


# ----------------------------------------------------------------------------- geometry

def rect_corners(obj: Obj, gsd: float, rect: tuple, grow: float = 0.0) -> np.ndarray:
    """Corners ``(4, 2)`` float (x, y pixels) of a local rectangle ``(u0, u1, v0, v1)`` metres."""
    u0, u1, v0, v1 = rect
    uu = np.array([u0 - grow, u1 + grow, u1 + grow, u0 - grow])
    vv = np.array([v0 - grow, v0 - grow, v1 + grow, v1 + grow])
    c, s = np.cos(obj.angle), np.sin(obj.angle)
    x = obj.cx + (uu * c - vv * s) / gsd
    y = obj.cy + (uu * s + vv * c) / gsd
    return np.stack([x, y], 1)


def footprint_rect(obj: Obj) -> tuple:
    return (-obj.length / 2, obj.length / 2, -obj.width / 2, obj.width / 2)


def local_frame(obj: Obj, gsd: float, shape: tuple):
    """Pixel window covering ``obj.keep_out`` clipped to ``shape`` and its (u, v) metre grids.

    Returns ``(y0, x0, u, v)``, ``u, v`` of shape ``(h, w)`` at pixel centres, or ``None`` when
    the window is empty.
    """
    pts = rect_corners(obj, gsd, obj.keep_out, grow=1.0)
    x0 = max(int(np.floor(pts[:, 0].min())), 0)
    x1 = min(int(np.ceil(pts[:, 0].max())), shape[1])
    y0 = max(int(np.floor(pts[:, 1].min())), 0)
    y1 = min(int(np.ceil(pts[:, 1].max())), shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    dx = ((np.arange(x0, x1) + 0.5 - obj.cx) * gsd).astype(np.float32)[None, :]
    dy = ((np.arange(y0, y1) + 0.5 - obj.cy) * gsd).astype(np.float32)[:, None]
    c, s = np.float32(np.cos(obj.angle)), np.float32(np.sin(obj.angle))
    return y0, x0, dx * c + dy * s, -dx * s + dy * c


def sd_box(u, v, cu, cv, hu, hv):
    """Signed distance (m) to a box centred ``(cu, cv)`` with half sizes ``(hu, hv)``."""
    qu, qv = np.abs(u - cu) - hu, np.abs(v - cv) - hv
    outside = np.hypot(np.maximum(qu, 0), np.maximum(qv, 0))
    return outside + np.minimum(np.maximum(qu, qv), 0)


def d_segment(u, v, p0, p1):
    """Unsigned distance (m) to the segment ``p0``-``p1`` (local metres)."""
    du, dv = p1[0] - p0[0], p1[1] - p0[1]
    ll = du * du + dv * dv
    t = np.clip(((u - p0[0]) * du + (v - p0[1]) * dv) / max(ll, 1e-9), 0, 1)
    return np.hypot(u - p0[0] - t * du, v - p0[1] - t * dv)


def berm_profile(q, top: float):
    """Earth bank cross-section: 1 on a flat crest (``q < top``) down to 0 at ``q = 1``."""
    t = np.clip((1 - q) / max(1 - top, 1e-3), 0, 1)
    return t * t * (3 - 2 * t)


class Painter:
    """Accumulates one object's layers over its pixel window.

    height: ``(h, w)`` metres; alpha: ``(h, w)`` coverage; colour: ``(h, w, 3)`` premultiplied
    by alpha; footprint: ``(h, w)`` bool (labelled part).
    """

    def __init__(self, u, v, gsd, tex_seed):
        self.u, self.v, self.gsd = u, v, gsd
        self.height = np.zeros(u.shape, np.float32)
        self.alpha = np.zeros(u.shape, np.float32)
        self.colour = np.zeros(u.shape + (3,), np.float32)
        self.footprint = np.zeros(u.shape, bool)
        self.rng = np.random.default_rng(tex_seed)

    def cover(self, sd):
        return np.clip(0.5 - sd / self.gsd, 0, 1).astype(np.float32)

    def texture(self, cell_m, amp):
        """Multiplicative texture ``1 + amp * noise`` of the window, features ~``cell_m``."""
        if min(self.u.shape) < 2:
            return np.ones(self.u.shape, np.float32)
        return 1 + amp * fractal_noise(self.rng, self.u.shape, cell_m / self.gsd, octaves=2)

    def paint(self, a, colour, shade=None):
        col = np.asarray(colour, np.float32)
        col = col * shade[..., None] if shade is not None else np.broadcast_to(col, self.colour.shape)
        a3 = a[..., None]
        self.colour = self.colour * (1 - a3) + col * a3
        self.alpha = self.alpha * (1 - a) + a

    def raise_(self, h):
        self.height = np.maximum(self.height, h)

    def vehicle(self, cu, cv, along_u, colour, length=7.0, width=2.6, h=2.8):
        hu, hv = (length / 2, width / 2) if along_u else (width / 2, length / 2)
        sd = sd_box(self.u, self.v, cu, cv, hu, hv)
        self.paint(self.cover(sd), colour)
        self.raise_(np.where(sd <= 0, h, 0))
        # cab: a slightly darker third at one end
        cu2, cv2_ = (cu + hu * 0.7, cv) if along_u else (cu, cv + hv * 0.7)
        sd2 = sd_box(self.u, self.v, cu2, cv2_, hu * (0.3 if along_u else 1), hv * (1 if along_u else 0.3))
        self.paint(self.cover(sd2) * 0.8, np.asarray(colour) * 0.7)


VEHICLE_COLOURS = [(0.06, 0.07, 0.04), (0.20, 0.17, 0.11), (0.12, 0.12, 0.11), (0.08, 0.09, 0.06)]


# ----------------------------------------------------------------------------- targets

def draw_bunker(pt: Painter, p: dict) -> None:
    """Earth-covered mound, headwall at ``u = +L/2`` with a dark door, concrete apron."""
    u, v = pt.u, pt.v
    a, b, H = p["L"] / 2, p["W"] / 2, p["H"]
    wall_t, ww = p["wall_t"], p["ww"]
    # apron first (ground level, under everything)
    sd_ap = sd_box(u, v, a + p["apron"] / 2, 0, p["apron"] / 2, ww / 2 + 0.6)
    pt.paint(pt.cover(sd_ap), p["apron_col"], pt.texture(2.0, 0.08))
    # front of the wall at u = a - door_d; the door recess (dark) lies in front of it, so the
    # whole footprint stays within |u| <= L/2
    wf = a - p["door_d"]
    d = d_segment(u, v, (-a + b, 0.0), (wf, 0.0))
    cut = u <= wf - wall_t
    q = d / b
    pt.raise_(np.where(cut, H * np.clip(1 - q * q, 0, 1) ** p["round"], 0))
    mound = pt.cover(d - b) * cut
    pt.paint(mound, p["earth"], pt.texture(p["tex_m"], 0.12))
    sd_w = sd_box(u, v, wf - wall_t / 2, 0, wall_t / 2, ww / 2)
    pt.paint(pt.cover(sd_w), p["wall_col"])
    pt.raise_(np.where(sd_w <= 0, H * 0.92, 0))
    # wing walls running back along the sides of the mound
    for sgn in (-1, 1):
        sd_g = sd_box(u, v, wf - wall_t - p["wing"] / 2, sgn * (ww / 2 - 0.3), p["wing"] / 2, 0.3)
        pt.paint(pt.cover(sd_g), p["wall_col"])
        pt.raise_(np.where(sd_g <= 0, H * 0.85, 0))
    sd_d = sd_box(u, v, a - p["door_d"] / 2, 0, p["door_d"] / 2, p["door_w"] / 2)
    pt.paint(pt.cover(sd_d), (0.025, 0.025, 0.028))
    pt.footprint = ((d <= b) & (u <= wf)) | (sd_w <= 0) | (sd_d <= 0)


def params_bunker(rng: np.random.Generator, pal: Palette, base: dict | None = None) -> dict:
    """Bunker shape and colours; rows reuse ``base`` with small jitter."""
    if base is None:
        L = rng.uniform(10, 30)
        W = np.clip(L * rng.uniform(0.45, 0.75), 7, 18)
        veg = rng.random() < 0.65
        earth = pal.grass * rng.uniform(0.85, 1.35) if veg else pal.soil * rng.uniform(0.9, 1.3)
        base = dict(L=L, W=W, H=rng.uniform(3.0, 6.0), round=rng.uniform(0.45, 0.9),
                    earth=earth.astype(np.float32), tex_m=rng.uniform(1.5, 4.0),
                    wall_t=rng.uniform(0.7, 1.4), ww=W * rng.uniform(0.6, 0.9),
                    wing=rng.uniform(1.5, 4.0), door_w=rng.uniform(2.5, 5.0),
                    door_d=rng.uniform(0.8, 1.4), apron=rng.uniform(4.0, 10.0),
                    apron_col=(pal.concrete if rng.random() < 0.7 else pal.gravel)
                    * rng.uniform(0.85, 1.1),
                    wall_col=pal.concrete * rng.uniform(1.0, 1.3))
        return base
    p = dict(base)
    p["L"] = base["L"] * rng.uniform(0.95, 1.05)
    p["earth"] = (base["earth"] * rng.uniform(0.93, 1.07, 3)).astype(np.float32)
    return p


def draw_revetment(pt: Painter, p: dict) -> None:
    """U- or C-shaped berm open towards ``+u`` around a flat pad, maybe a vehicle inside."""
    u, v = pt.u, pt.v
    D, Wd, bw = p["D"], p["Wd"], p["bw"]
    if p["shape"] == "U":
        ub, ue, vs = -D / 2 + bw, D / 2 - bw, Wd / 2 - bw
        d = np.minimum(d_segment(u, v, (ub, -vs), (ub, vs)),
                       np.minimum(d_segment(u, v, (ub, -vs), (ue, -vs)),
                                  d_segment(u, v, (ub, vs), (ue, vs))))
        sd_pad = sd_box(u, v, (ub + D / 2 + p["apron"]) / 2, 0,
                        (D / 2 + p["apron"] - ub) / 2, vs - bw * 0.5)
    else:
        rc = min(D, Wd) / 2 - bw
        phi = np.abs(np.arctan2(v, u))
        oh = p["open"]
        e = (rc * np.cos(oh), rc * np.sin(oh))
        d_end = np.minimum(np.hypot(u - e[0], v - e[1]), np.hypot(u - e[0], v + e[1]))
        d = np.where(phi >= oh, np.abs(np.hypot(u, v) - rc), d_end)
        sd_pad = np.minimum(np.hypot(u, v) - (rc - bw * 0.5),
                            sd_box(u, v, rc / 2 + p["apron"] / 2, 0, rc / 2 + p["apron"] / 2,
                                   rc * np.sin(oh) - bw * 0.5))
    pt.paint(pt.cover(sd_pad), p["pad_col"], pt.texture(2.0, 0.1))
    pt.raise_(p["Hb"] * berm_profile(d / bw, p["top"]))
    pt.paint(pt.cover(d - bw), p["earth"], pt.texture(p["tex_m"], 0.2))
    if p["vehicle"]:
        pt.vehicle(p["veh_u"], 0.0, True, p["veh_col"], p["veh_len"], 2.6, 2.8)
    pt.footprint = d <= bw


def params_revetment(rng: np.random.Generator, pal: Palette, base: dict | None = None) -> dict:
    if base is None:
        D = rng.uniform(20, 40)
        veg = rng.random() < 0.5
        earth = pal.grass * rng.uniform(0.9, 1.3) if veg else pal.soil * rng.uniform(0.9, 1.3)
        base = dict(D=D, Wd=np.clip(D * rng.uniform(0.8, 1.25), 20, 40), bw=rng.uniform(3.0, 5.0),
                    Hb=rng.uniform(2.0, 4.5), top=rng.uniform(0.1, 0.45),
                    shape="U" if rng.random() < 0.7 else "C", open=rng.uniform(0.6, 0.95),
                    earth=earth.astype(np.float32), tex_m=rng.uniform(1.5, 4.0),
                    pad_col=[pal.concrete, pal.gravel, pal.soil * 1.2][rng.integers(0, 3)]
                    * rng.uniform(0.85, 1.1), apron=rng.uniform(3, 8))
    p = dict(base)
    p["vehicle"] = rng.random() < 0.4
    p["veh_len"] = rng.uniform(6, 12)
    p["veh_u"] = rng.uniform(-0.15, 0.1) * p["D"]
    p["veh_col"] = np.float32(VEHICLE_COLOURS[rng.integers(0, len(VEHICLE_COLOURS))]) * rng.uniform(0.8, 1.2)
    return p


def draw_shelter(pt: Painter, p: dict) -> None:
    """Long roofed drive-through building with aprons at both ends, maybe a vehicle at a door."""
    u, v = pt.u, pt.v
    a, b = p["L"] / 2, p["W"] / 2
    for sgn in (-1, 1):
        sd_ap = sd_box(u, v, sgn * (a + p["apron"] / 2), 0, p["apron"] / 2, b + 1.0)
        pt.paint(pt.cover(sd_ap), p["apron_col"], pt.texture(2.0, 0.08))
    sd = sd_box(u, v, 0, 0, a, b)
    qv = np.clip(np.abs(v) / b, 0, 1)
    if p["roof"] == "arch":
        h = p["Hw"] + (p["H"] - p["Hw"]) * np.sqrt(1 - qv * qv)
    elif p["roof"] == "gable":
        h = p["Hw"] + (p["H"] - p["Hw"]) * (1 - qv)
    else:
        h = np.full(u.shape, p["H"], np.float32)
    pt.raise_(np.where(sd <= 0, h, 0))
    ribs = 1 + p["rib_a"] * np.sin(2 * np.pi * u / p["rib_p"])
    edge = np.where(sd > -0.6, 0.75, 1.0)
    pt.paint(pt.cover(sd), p["roof_col"], pt.texture(4.0, 0.06) * ribs * edge)
    # open doorways at both ends: the dark interior shows under the eaves
    for sgn in (-1, 1):
        sd_o = sd_box(u, v, sgn * (a - 0.5), 0, 0.5, b * 0.8)
        pt.paint(pt.cover(sd_o), (0.03, 0.03, 0.032))
    if p["vehicle"]:
        sgn = p["veh_side"]
        pt.vehicle(sgn * (a + 4.5), float(p["veh_v"]), True, p["veh_col"], 7.0, 2.6, 2.8)
    pt.footprint = sd <= 0


def params_shelter(rng: np.random.Generator, pal: Palette, base: dict | None = None) -> dict:
    if base is None:
        kind = rng.choice(["metal", "concrete", "camo"], p=[0.5, 0.35, 0.15])
        col = {"metal": np.float32([0.42, 0.43, 0.45]) * rng.uniform(0.7, 1.25),
               "concrete": pal.concrete * rng.uniform(0.55, 0.8),
               "camo": np.float32([0.06, 0.08, 0.05]) * rng.uniform(0.8, 1.3)}[kind]
        H = rng.uniform(4.5, 8.0)
        base = dict(L=rng.uniform(25, 40), W=rng.uniform(6, 12), H=H,
                    Hw=H * rng.uniform(0.3, 0.8),
                    roof=rng.choice(["arch", "flat", "gable"], p=[0.45, 0.35, 0.2]),
                    roof_col=col.astype(np.float32), rib_p=rng.uniform(1.5, 4.0),
                    rib_a=rng.uniform(0.0, 0.08) if kind == "metal" else 0.0,
                    apron=rng.uniform(8, 14), apron_col=pal.concrete * rng.uniform(0.85, 1.1))
    p = dict(base)
    p["vehicle"] = rng.random() < 0.3
    p["veh_side"] = 1 if rng.random() < 0.5 else -1
    p["veh_v"] = rng.uniform(-0.25, 0.25) * p["W"]
    p["veh_col"] = np.float32(VEHICLE_COLOURS[rng.integers(0, len(VEHICLE_COLOURS))])
    return p


# ----------------------------------------------------------------------------- negatives

def draw_house(pt: Painter, p: dict) -> None:
    """Gabled (or hipped) house, sometimes in a lighter garden plot."""
    u, v = pt.u, pt.v
    a, b = p["L"] / 2, p["W"] / 2
    if p["garden"] > 0:
        sd_g = sd_box(u, v, 0, 0, a + p["garden"], b + p["garden"])
        pt.paint(pt.cover(sd_g), p["garden_col"], pt.texture(2.0, 0.15))
    sd = sd_box(u, v, 0, 0, a, b)
    slope = np.tan(p["pitch"])
    h = p["Hw"] + slope * np.maximum(b - np.abs(v), 0)
    if p["hip"]:
        h = np.minimum(h, p["Hw"] + slope * np.maximum(a - np.abs(u), 0))
    pt.raise_(np.where(sd <= 0, h, 0))
    pt.paint(pt.cover(sd), p["roof_col"], pt.texture(3.0, 0.06))
    pt.footprint = sd <= 0


def draw_flat(pt: Painter, p: dict) -> None:
    """Flat-roofed box (shed, stack of bales, pile of crates)."""
    sd = sd_box(pt.u, pt.v, 0, 0, p["L"] / 2, p["W"] / 2)
    pt.raise_(np.where(sd <= 0, p["H"], 0))
    pt.paint(pt.cover(sd), p["roof_col"], pt.texture(p.get("tex_m", 2.0), p.get("tex_a", 0.06)))
    pt.footprint = sd <= 0


def draw_greenhouse(pt: Painter, p: dict) -> None:
    """Arched, bright, strongly ribbed tunnel; no aprons, no road."""
    u, v = pt.u, pt.v
    a, b = p["L"] / 2, p["W"] / 2
    sd = sd_box(u, v, 0, 0, a, b)
    qv = np.clip(np.abs(v) / b, 0, 1)
    pt.raise_(np.where(sd <= 0, p["H"] * np.sqrt(1 - 0.85 * qv * qv), 0))
    ribs = 1 + 0.18 * np.sin(2 * np.pi * u / p["rib_p"])
    pt.paint(pt.cover(sd), p["roof_col"], pt.texture(5.0, 0.08) * ribs)
    pt.footprint = sd <= 0


def draw_pond(pt: Painter, p: dict) -> None:
    """Irregular water body with a muddy shore."""
    u, v = pt.u, pt.v
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    rr = p["R"] * (1 + sum(a * np.cos(k * phi + ph) for k, a, ph in p["harm"]))
    sd = (rho - rr) * 0.8
    pt.paint(pt.cover(sd - p["shore"]), p["shore_col"], pt.texture(2.0, 0.15))
    pt.paint(pt.cover(sd), p["water_col"], pt.texture(8.0, 0.08))
    pt.footprint = sd <= 0


def draw_tank(pt: Painter, p: dict) -> None:
    """Cylindrical storage tank with a shallow domed roof."""
    rho = np.hypot(pt.u, pt.v)
    q = np.clip(rho / p["R"], 0, 1)
    sd = rho - p["R"]
    pt.raise_(np.where(sd <= 0, p["H"] + p["dome"] * (1 - q * q), 0))
    ring = np.where(sd > -0.5, 0.8, 1.0)
    pt.paint(pt.cover(sd), p["roof_col"], ring * pt.texture(3.0, 0.04))
    pt.footprint = sd <= 0


def draw_ring_berm(pt: Painter, p: dict) -> None:
    """Closed rectangular or round berm (tank farm bund, pit); maybe tanks inside."""
    u, v = pt.u, pt.v
    a, b, bw = p["L"] / 2 - p["bw"], p["W"] / 2 - p["bw"], p["bw"]
    if p["round"]:
        d = np.abs(np.hypot(u, v) - min(a, b))
        sd_in = np.hypot(u, v) - (min(a, b) - bw * 0.5)
    else:
        d = np.abs(sd_box(u, v, 0, 0, a, b))
        sd_in = sd_box(u, v, 0, 0, a - bw * 0.5, b - bw * 0.5)
    pt.paint(pt.cover(sd_in), p["pad_col"], pt.texture(2.5, 0.12))
    pt.raise_(p["Hb"] * berm_profile(d / bw, p["top"]))
    pt.paint(pt.cover(d - bw), p["earth"], pt.texture(3.0, 0.2))
    for tu, tv, r in p["tanks"]:
        rho = np.hypot(u - tu, v - tv)
        sd = rho - r
        pt.raise_(np.where(sd <= 0, p["tank_h"], 0))
        pt.paint(pt.cover(sd), p["tank_col"], np.where(sd > -0.5, 0.8, 1.0))
    pt.footprint = d <= bw


def draw_dyke(pt: Painter, p: dict) -> None:
    """Long straight earth bank, maybe with a water ditch along one side."""
    u, v = pt.u, pt.v
    a, bw = p["L"] / 2, p["W"] / 2
    if p["ditch"]:
        sd_w = sd_box(u, v, 0, bw + 1.5, a, 1.0)
        pt.paint(pt.cover(sd_w), p["water_col"])
    d = d_segment(u, v, (-a + bw, 0.0), (a - bw, 0.0))
    pt.raise_(p["Hb"] * berm_profile(d / bw, p["top"]))
    pt.paint(pt.cover(d - bw), p["earth"], pt.texture(3.0, 0.15))
    if p["track"]:
        sd_t = sd_box(u, v, 0, 0, a - bw, 1.3)
        pt.paint(pt.cover(sd_t) * 0.8, p["track_col"])
    pt.footprint = d <= bw


def draw_spoil(pt: Painter, p: dict) -> None:
    """Irregular heap of soil or gravel made of a few overlapping bumps."""
    u, v = pt.u, pt.v
    h = np.zeros(u.shape, np.float32)
    for bu, bv, su, sv, bh in p["blobs"]:
        h = np.maximum(h, bh * np.exp(-0.5 * (((u - bu) / su) ** 2 + ((v - bv) / sv) ** 2)))
    h = np.where(h > 0.15, h - 0.15, 0)
    pt.raise_(h)
    a = np.clip(h / 0.3, 0, 1)
    pt.paint(a, p["earth"], pt.texture(1.5, 0.25))
    pt.footprint = h > 0


def draw_bales(pt: Painter, p: dict) -> None:
    """A scattering of round hay bales (standing cylinders)."""
    u, v = pt.u, pt.v
    for bu, bv in p["pos"]:
        sd = np.hypot(u - bu, v - bv) - p["r"]
        pt.raise_(np.where(sd <= 0, p["H"], 0))
        pt.paint(pt.cover(sd), p["col"], pt.texture(1.0, 0.1))
    pt.footprint = pt.alpha > 0.5


DRAW = {
    "bunker": draw_bunker, "revetment": draw_revetment, "shelter": draw_shelter,
    "house": draw_house, "shed": draw_flat, "barn": draw_house, "greenhouse": draw_greenhouse,
    "pond": draw_pond, "tank": draw_tank, "ring_berm": draw_ring_berm, "dyke": draw_dyke,
    "spoil": draw_spoil, "hay": draw_bales, "stack": draw_flat,
}


def draw(obj: Obj, gsd: float, shape: tuple):
    """Draw ``obj`` into a fresh :class:`Painter` over its window; ``(y0, x0, painter)`` or None."""
    frame = local_frame(obj, gsd, shape)
    if frame is None:
        return None
    y0, x0, u, v = frame
    pt = Painter(u, v, gsd, obj.p["tex"])
    DRAW[obj.kind](pt, obj.p)
    return y0, x0, pt


# ----------------------------------------------------------------------------- placement

class Occupancy:
    """What is already taken, at pixel resolution.

    taken: ``(H, W)`` uint8, non-zero where objects (grown by a margin) and roads lie; a new
    object's keep-out rectangle must not touch it. clear: ``(H, W)`` uint8, non-zero where no
    forest tree may stand (clearings around objects, road corridors).
    """

    def __init__(self, shape: tuple, gsd: float):
        self.shape, self.gsd = shape, gsd
        self.taken = np.zeros(shape, np.uint8)
        self.clear = np.zeros(shape, np.uint8)

    def add_track(self, tr: Track) -> None:
        if len(tr.points) < 2:
            return
        pts = np.round(tr.points * 16).astype(np.int32).reshape(-1, 1, 2)
        w = tr.width_m / self.gsd
        cv2.polylines(self.taken, [pts], False, 1, max(1, int(round(w + 2 / self.gsd))), shift=4)
        cv2.polylines(self.clear, [pts], False, 1, max(1, int(round(w + 6 / self.gsd))), shift=4)

    def fits(self, obj: Obj, contain: bool) -> bool:
        """True when ``obj`` lies free of others and (if ``contain``) its footprint in the image."""
        h, w = self.shape
        if contain:
            fp = rect_corners(obj, self.gsd, footprint_rect(obj))
            if fp[:, 0].min() < 1 or fp[:, 1].min() < 1 or fp[:, 0].max() > w - 1 \
                    or fp[:, 1].max() > h - 1:
                return False
        elif not (0 <= obj.cx < w and 0 <= obj.cy < h):
            return False
        pts = rect_corners(obj, self.gsd, obj.keep_out)
        x0, y0 = np.floor(pts.min(0)).astype(int)
        x1, y1 = np.ceil(pts.max(0)).astype(int) + 1
        x0c, y0c, x1c, y1c = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if x1c <= x0c or y1c <= y0c:
            return False
        m = np.zeros((y1c - y0c, x1c - x0c), np.uint8)
        cv2.fillConvexPoly(m, np.round((pts - [x0c, y0c]) * 16).astype(np.int32), 1, shift=4)
        return not (m & self.taken[y0c:y1c, x0c:x1c]).any()

    def mark(self, obj: Obj, margin_m: float, clear_m: float) -> None:
        for arr, grow in ((self.taken, margin_m), (self.clear, clear_m)):
            pts = rect_corners(obj, self.gsd, obj.keep_out, grow)
            cv2.fillConvexPoly(arr, np.round(pts * 16).astype(np.int32), 1, shift=4)


def _spot(rng, shape):
    h, w = shape
    return rng.uniform(0, w), rng.uniform(0, h)


def _along(cx, cy, ang, du, dv, gsd):
    """Pixel position offset by ``(du, dv)`` metres in the frame rotated by ``ang``."""
    c, s = np.cos(ang), np.sin(ang)
    return cx + (du * c - dv * s) / gsd, cy + (du * s + dv * c) / gsd


def _make(kind, cx, cy, ang, p, label=-1):
    """Build an :class:`Obj` with the extents that ``kind``'s drawer uses."""
    if kind == "bunker":
        L, W = p["L"], p["W"]
        ko = (-L / 2, L / 2 + p["apron"], -W / 2, W / 2)
    elif kind == "revetment":
        L, W = p["D"], p["Wd"]
        ko = (-L / 2, L / 2 + p["apron"], -W / 2, W / 2)
    elif kind == "shelter":
        L, W = p["L"], p["W"]
        ko = (-L / 2 - p["apron"], L / 2 + p["apron"], -W / 2 - 1, W / 2 + 1)
    elif kind == "house":
        L, W = p["L"], p["W"]
        g = p["garden"]
        ko = (-L / 2 - g, L / 2 + g, -W / 2 - g, W / 2 + g)
    elif kind == "pond":
        L = W = 2 * p["R"] * 1.6
        ko = (-L / 2 - p["shore"] * 1.3, L / 2 + p["shore"] * 1.3, -W / 2 - p["shore"] * 1.3,
              W / 2 + p["shore"] * 1.3)
    elif kind == "tank":
        L = W = 2 * p["R"]
        ko = (-L / 2, L / 2, -W / 2, W / 2)
    elif kind == "dyke":
        L, W = p["L"], p["W"]
        ko = (-L / 2, L / 2, -W / 2 - (3.5 if p["ditch"] else 0), W / 2 + (3.5 if p["ditch"] else 0))
    elif kind in ("spoil", "hay"):
        L, W = p["L"], p["W"]
        ko = (-L / 2, L / 2, -W / 2, W / 2)
    else:  # shed, barn, greenhouse, ring_berm, stack
        L, W = p["L"], p["W"]
        ko = (-L / 2, L / 2, -W / 2, W / 2)
    return Obj(kind, float(cx), float(cy), float(ang), float(L), float(W), ko, p, label)


def _front_road(objs, gsd, u_off, extra, colour, width):
    """Track along the row of ``objs`` at local ``u = u_off``, plus spurs to each object."""
    o0, o1 = objs[0], objs[-1]
    ang = o0.angle
    ends = []
    for o, dv in ((o0, -(o0.width / 2 + extra)), (o1, o1.width / 2 + extra)):
        ends.append(_along(o.cx, o.cy, ang, u_off, dv, gsd))
    tracks = [Track(np.float32(ends), width, colour, "gravel")]
    for o in objs:
        start = _along(o.cx, o.cy, ang, o.keep_out[1] - 1.0, 0, gsd)
        end = _along(o.cx, o.cy, ang, u_off, 0, gsd)
        tracks.append(Track(np.float32([start, end]), width * 0.8, colour, "gravel"))
    return tracks


_GAPS = {"bunker": (5, 16), "revetment": (6, 25), "shelter": (12, 30)}  # metres between rows


def plan_targets(rng: np.random.Generator, occ: Occupancy, pal: Palette, gsd: float,
                 contain: bool):
    """Place groups of targets. Returns ``(objects, tracks, occluder_trees)``.

    A tile of 256 m (512 px at 0.5 m) gets 0-3 groups (rows of 1-4 bunkers, 1-4 revetments,
    1-3 shelters), at most 8 targets; larger images proportionally more. Occluder trees are a
    dict like :func:`terrain.tree_seeds` returns.
    """
    h, w = occ.shape
    area_units = h * w * gsd * gsd / 256.0 ** 2
    n_groups = rng.choice(4, p=[0.13, 0.42, 0.30, 0.15])
    if area_units > 1.5:
        n_groups = rng.poisson(0.7 * area_units)
    cap = max(8, int(8 * area_units * 0.6))
    objs, tracks = [], []
    occl = dict(x=[], y=[], r=[], h=[], conifer=[], colour=[])
    for _ in range(n_groups):
        kind = TARGETS[rng.integers(0, 3)]
        n_members = {"bunker": rng.integers(1, 5), "revetment": rng.integers(1, 5),
                     "shelter": rng.integers(1, 4)}[kind]
        base = {"bunker": params_bunker, "revetment": params_revetment,
                "shelter": params_shelter}[kind](rng, pal)
        group = []
        for _try in range(8):
            cx, cy = _spot(rng, occ.shape)
            ang = rng.uniform(0, 2 * np.pi)
            gap = rng.uniform(*_GAPS[kind])
            group = []
            for k in range(n_members):
                if len(objs) + len(group) >= cap:
                    break
                p = {"bunker": params_bunker, "revetment": params_revetment,
                     "shelter": params_shelter}[kind](rng, pal, base)
                p["tex"] = int(rng.integers(2 ** 31))
                probe = _make(kind, 0, 0, ang, p)
                dv = k * (probe.width + gap)
                x, y = _along(cx, cy, ang, 0, dv, gsd)
                o = _make(kind, x, y, ang, p, TARGETS.index(kind))
                if occ.fits(o, contain) and _box_iou_ok(o, objs + group, gsd):
                    group.append(o)
                    occ.mark(o, 3.0, 7.0)
            if group:
                break
        if not group:
            continue
        objs += group
        tr_col = pal.gravel * rng.uniform(0.8, 1.1) if rng.random() < 0.6 else pal.asphalt * 1.3
        if kind in ("bunker", "revetment") and rng.random() < 0.85:
            u_off = group[0].keep_out[1] + rng.uniform(4, 10)
            tracks += _front_road(group, gsd, u_off, rng.uniform(5, 25), tr_col, rng.uniform(3.5, 6))
        elif kind == "shelter" and rng.random() < 0.9:
            for o in group:
                ext = rng.uniform(8, 30)
                pts = [_along(o.cx, o.cy, o.angle, sgn * (o.length / 2 + o.p["apron"] + ext), 0, gsd)
                       for sgn in (-1, 1)]
                tracks.append(Track(np.float32(pts), rng.uniform(4, 6), tr_col, "gravel"))
        for o in group:
            if rng.random() < 0.18:
                _occluders(rng, o, gsd, pal, occl)
    for tr in tracks:
        occ.add_track(tr)
    occl = {k: np.asarray(vv, np.float32 if k != "conifer" else bool) for k, vv in occl.items()}
    if len(occl["colour"]) == 0:
        occl["colour"] = np.zeros((0, 3), np.float32)
    return objs, tracks, occl


def aabb(o: Obj, gsd: float) -> np.ndarray:
    """Axis-aligned box ``(4,)`` x1, y1, x2, y2 pixels of ``o``'s footprint rectangle."""
    c = rect_corners(o, gsd, footprint_rect(o))
    return np.concatenate([c.min(0), c.max(0)])


def _box_iou_ok(o: Obj, others: list, gsd: float, limit: float = 0.25) -> bool:
    """False when ``o``'s box overlaps a placed target's box by IoU above ``limit``."""
    a = aabb(o, gsd)
    for q in others:
        b = aabb(q, gsd)
        iw = min(a[2], b[2]) - max(a[0], b[0])
        ih = min(a[3], b[3]) - max(a[1], b[1])
        if iw > 0 and ih > 0:
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if inter / union > limit:
                return False
    return True


def _occluders(rng, o: Obj, gsd: float, pal: Palette, out: dict) -> None:
    """1-3 trees standing beside one long side of ``o``, their crowns over part of it."""
    side = 1 if rng.random() < 0.5 else -1
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(2.5, 4.5)
        du = rng.uniform(-0.4, 0.4) * o.length
        dv = side * (o.width / 2 + r * rng.uniform(0.25, 0.7))
        x, y = _along(o.cx, o.cy, o.angle, du, dv, gsd)
        out["x"].append(x)
        out["y"].append(y)
        out["r"].append(r)
        out["h"].append(rng.uniform(8, 16))
        out["conifer"].append(False)
        out["colour"].append(pal.leaves[0] * rng.uniform(0.8, 1.2))


# negatives: kind -> weight; "village" and "farm" are clusters of houses / barns.
_NEG_WEIGHTS = {"village": 0.10, "farm": 0.10, "greenhouse": 0.08, "pond": 0.07, "tank": 0.08,
                "ring_berm": 0.11, "dyke": 0.08, "spoil": 0.13, "hay": 0.08, "shed": 0.07,
                "house": 0.10}


def _neg_params(kind: str, rng: np.random.Generator, pal: Palette) -> dict:
    """Random shape parameters for one negative of ``kind``."""
    roofs = [(0.30, 0.10, 0.07), (0.22, 0.12, 0.09), (0.16, 0.16, 0.17), (0.09, 0.09, 0.10),
             (0.35, 0.33, 0.30)]
    if kind == "house":
        return dict(L=rng.uniform(8, 16), W=rng.uniform(6, 10), Hw=rng.uniform(3, 6),
                    pitch=np.radians(rng.uniform(25, 42)), hip=rng.random() < 0.35,
                    roof_col=np.float32(roofs[rng.integers(0, 5)]) * rng.uniform(0.8, 1.2),
                    garden=rng.uniform(0, 8) if rng.random() < 0.6 else 0.0,
                    garden_col=pal.grass * rng.uniform(1.0, 1.4))
    if kind == "barn":
        return dict(L=rng.uniform(28, 70), W=rng.uniform(12, 24), Hw=rng.uniform(4, 7),
                    pitch=np.radians(rng.uniform(12, 25)), hip=False,
                    roof_col=np.float32(roofs[rng.integers(0, 5)]) * rng.uniform(0.8, 1.3),
                    garden=rng.uniform(3, 10), garden_col=pal.concrete * rng.uniform(0.6, 0.9))
    if kind == "shed":
        return dict(L=rng.uniform(4, 10), W=rng.uniform(3, 7), H=rng.uniform(2.5, 4),
                    roof_col=np.float32([0.30, 0.30, 0.31]) * rng.uniform(0.4, 1.4))
    if kind == "stack":
        return dict(L=rng.uniform(8, 20), W=rng.uniform(3, 6), H=rng.uniform(2, 4),
                    roof_col=np.float32([0.40, 0.34, 0.18]) * rng.uniform(0.7, 1.2),
                    tex_m=1.0, tex_a=0.15)
    if kind == "greenhouse":
        return dict(L=rng.uniform(25, 80), W=rng.uniform(6, 10), H=rng.uniform(3, 4.5),
                    rib_p=rng.uniform(2.5, 5), roof_col=np.float32([0.62, 0.64, 0.62])
                    * rng.uniform(0.75, 1.1))
    if kind == "pond":
        harm = [(k, rng.uniform(0, 0.18), rng.uniform(0, 6.3)) for k in (2, 3, 4)]
        return dict(R=rng.uniform(7, 30), harm=harm, shore=rng.uniform(1, 4),
                    shore_col=pal.soil * rng.uniform(0.7, 1.0),
                    water_col=np.float32([0.025, 0.04, 0.04]) * rng.uniform(0.7, 1.6))
    if kind == "tank":
        return dict(R=rng.uniform(4, 14), H=rng.uniform(5, 14), dome=rng.uniform(0.3, 1.5),
                    roof_col=np.float32([0.55, 0.55, 0.53]) * rng.uniform(0.6, 1.2))
    if kind == "ring_berm":
        L = rng.uniform(20, 60)
        p = dict(L=L, W=L * rng.uniform(0.7, 1.0), bw=rng.uniform(2.5, 4.5), Hb=rng.uniform(1.5, 4),
                 top=rng.uniform(0.1, 0.4), round=rng.random() < 0.35,
                 earth=(pal.grass if rng.random() < 0.5 else pal.soil) * rng.uniform(0.9, 1.3),
                 pad_col=[pal.gravel, pal.soil, pal.grass][rng.integers(0, 3)] * rng.uniform(0.8, 1.2),
                 tank_h=rng.uniform(6, 12), tank_col=np.float32([0.55, 0.55, 0.53]), tanks=[])
        if rng.random() < 0.4:
            r = min(L, p["W"]) / 2 - p["bw"] * 2 - 1
            if r > 3:
                p["tanks"] = [(0.0, 0.0, r * rng.uniform(0.5, 0.9))]
        return p
    if kind == "dyke":
        return dict(L=rng.uniform(60, 220), W=rng.uniform(5, 10), Hb=rng.uniform(1.5, 3),
                    top=rng.uniform(0.1, 0.4), ditch=rng.random() < 0.5,
                    earth=pal.grass * rng.uniform(0.9, 1.3),
                    water_col=np.float32([0.03, 0.045, 0.045]), track=rng.random() < 0.4,
                    track_col=pal.gravel)
    if kind == "spoil":
        L = rng.uniform(8, 30)
        W = L * rng.uniform(0.5, 1.0)
        blobs = [(rng.uniform(-0.25, 0.25) * L, rng.uniform(-0.2, 0.2) * W,
                  L * rng.uniform(0.12, 0.22), W * rng.uniform(0.12, 0.22), rng.uniform(1.5, 6))
                 for _ in range(rng.integers(2, 5))]
        return dict(L=L, W=W, blobs=blobs,
                    earth=[pal.soil, pal.gravel, pal.soil * 0.7][rng.integers(0, 3)]
                    * rng.uniform(0.9, 1.3))
    if kind == "hay":
        n = rng.integers(4, 16)
        L, W = rng.uniform(10, 40), rng.uniform(4, 15)
        pos = [(rng.uniform(-0.45, 0.45) * L, rng.uniform(-0.4, 0.4) * W) for _ in range(n)]
        col = np.float32([0.40, 0.34, 0.18]) if rng.random() < 0.7 else np.float32([0.6, 0.6, 0.58])
        return dict(L=L, W=W, pos=pos, r=rng.uniform(0.7, 0.9), H=rng.uniform(1.2, 1.6),
                    col=col * rng.uniform(0.8, 1.2))
    raise ValueError(f"unknown negative kind {kind!r}; expected one of {NEGATIVES}")


def _place(rng, occ, objs, kind, cx, cy, ang, p, contain):
    p["tex"] = int(rng.integers(2 ** 31))
    o = _make(kind, cx, cy, ang, p)
    if occ.fits(o, False):
        objs.append(o)
        occ.mark(o, 2.0, 4.0)
        return o
    return None


def plan_negatives(rng: np.random.Generator, occ: Occupancy, pal: Palette, gsd: float,
                   road_tracks: list):
    """Place look-alikes (never labelled). Returns a list of :class:`Obj`."""
    h, w = occ.shape
    area_units = h * w * gsd * gsd / 256.0 ** 2
    n = rng.poisson(5.0 * area_units)
    kinds = list(_NEG_WEIGHTS)
    probs = np.array(list(_NEG_WEIGHTS.values()))
    probs /= probs.sum()
    objs: list = []
    for _ in range(n):
        kind = kinds[rng.choice(len(kinds), p=probs)]
        cx, cy = _spot(rng, occ.shape)
        ang = rng.uniform(0, 2 * np.pi)
        if kind == "village":
            _village(rng, occ, objs, pal, gsd, road_tracks)
        elif kind == "farm":
            p = _neg_params("barn", rng, pal)
            barn = _place(rng, occ, objs, "barn", cx, cy, ang, p, False)
            if barn is not None:
                for _k in range(rng.integers(1, 4)):
                    sub = ["house", "shed", "stack", "barn"][rng.integers(0, 4)]
                    du, dv = rng.uniform(-40, 40), rng.choice([-1, 1]) * rng.uniform(15, 35)
                    x, y = _along(cx, cy, ang, du, dv, gsd)
                    _place(rng, occ, objs, sub, x, y, ang + rng.choice([0, np.pi / 2]),
                           _neg_params(sub, rng, pal), False)
        elif kind == "greenhouse":
            p = _neg_params("greenhouse", rng, pal)
            gap = rng.uniform(1, 4)
            for k in range(rng.integers(2, 8)):
                x, y = _along(cx, cy, ang, 0, k * (p["W"] + gap), gsd)
                _place(rng, occ, objs, "greenhouse", x, y, ang, dict(p), False)
        elif kind == "tank":
            p = _neg_params("tank", rng, pal)
            k_n = rng.integers(1, 5)
            for k in range(k_n):
                du, dv = (k % 2) * (2 * p["R"] + 6), (k // 2) * (2 * p["R"] + 6)
                x, y = _along(cx, cy, ang, du, dv, gsd)
                _place(rng, occ, objs, "tank", x, y, ang, dict(p), False)
        elif kind == "spoil":
            for _k in range(rng.integers(1, 4)):
                x, y = _along(cx, cy, ang, rng.uniform(-30, 30), rng.uniform(-30, 30), gsd)
                _place(rng, occ, objs, "spoil", x, y, rng.uniform(0, 6.3),
                       _neg_params("spoil", rng, pal), False)
        else:
            _place(rng, occ, objs, kind, cx, cy, ang, _neg_params(kind, rng, pal), False)
    return objs


def _village(rng, occ, objs, pal, gsd, road_tracks):
    """Houses and sheds lined along one of the roads (or scattered when there is none)."""
    n = rng.integers(4, 16)
    roads = [t for t in road_tracks if len(t.points) > 4]
    tr = roads[rng.integers(0, len(roads))] if roads else None
    start = rng.uniform(0, 1)
    for k in range(n):
        kind = "house" if rng.random() < 0.8 else "shed"
        p = _neg_params(kind, rng, pal)
        if tr is not None:
            i = int((start + 0.04 * k) % 1.0 * (len(tr.points) - 2))
            (x0, y0), (x1, y1) = tr.points[i], tr.points[i + 1]
            ang = np.arctan2(y1 - y0, x1 - x0)
            side = rng.choice([-1, 1])
            off = tr.width_m / 2 + p["W"] / 2 + p.get("garden", 0) + rng.uniform(2, 8)
            x, y = _along(x0, y0, ang, 0, side * off, gsd)
        else:
            x, y = _spot(rng, occ.shape)
            ang = rng.uniform(0, 2 * np.pi)
        _place(rng, occ, objs, kind, x, y, ang + rng.choice([0, np.pi / 2], p=[0.8, 0.2]), p, False)
