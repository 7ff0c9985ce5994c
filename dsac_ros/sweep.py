"""rgb maps: depth of every memory cell by a plane sweep over the encoder's features.

Why: matching each cell to its nearest key in a partner frame (``triangulate_memory``) ignores the
known poses until after the match, so a wrong nearest neighbour anywhere in the image is a wrong
depth, and a cell without a mutual match gets none. With poses known, the match of a cell can only
lie on its epipolar line: the sweep tries depths along the cell's ray, projects each 3D point into
several partner frames, and samples their feature grids there (bilinear between cell centres).
The depth whose samples agree best with the cell's own key wins, as in multi-view stereo with
learned features (MVSNet's cost volume, here with fixed features and no training):

    cost(d) = mean over partners seeing X(d) of |key_f - feature_g(project_g(X(d)))|^2
    d* = argmin cost, then a finer sweep around it and a parabola in inverse depth

A depth is kept when its minimum is distinct (the best cost clearly below the best cost away
from it) and when the partners' own sweeps agree: the point lands where a partner's depth puts
its surface (geometric consistency, as in COLMAP's fusion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from dsac_ros.subcell import grid_layout


@dataclass(frozen=True)
class SweepOptions:
    """partners: frames swept against (the most similar by descriptor with at least
    ``min_baseline_m`` between the centres); depths: coarse samples in inverse depth between
    ``min_depth_m`` and ``max_depth_m``; fine: samples between the coarse neighbours of the best;
    max_ratio: best cost / best cost beyond two coarse steps must stay below this (a distinct
    minimum); consistent: partners whose sweep must agree within ``agree_fraction`` of the depth."""

    partners: int = 6
    min_baseline_m: float = 0.05
    depths: int = 64
    fine: int = 9
    min_depth_m: float = 0.3
    max_depth_m: float = 12.0
    max_ratio: float = 0.9
    consistent: int = 2
    agree_fraction: float = 0.03
    # Keys are compared in their first principal components (sampling cost is linear in channels).
    channels: int = 32

    def __post_init__(self) -> None:
        if self.partners < 1 or self.depths < 3 or self.fine < 3 or self.consistent < 0 or self.channels < 0:
            raise ValueError("partners >= 1, depths and fine >= 3, consistent and channels >= 0 are needed")
        if not (0 < self.min_depth_m < self.max_depth_m and self.max_ratio > 0 and self.agree_fraction > 0
                and self.min_baseline_m >= 0):
            raise ValueError("need 0 < min_depth_m < max_depth_m, positive max_ratio and agree_fraction, "
                             "min_baseline_m >= 0")


@dataclass
class FrameGrid:
    """One frame as the sweep sees it: keys (C, h, w) float32, K (3, 3), cam_T_world (4, 4) float64,
    the pixel of cell (0, 0) and the cell size (2,) in image pixels."""

    keys: torch.Tensor
    K: torch.Tensor
    cam_T_world: torch.Tensor
    origin_px: torch.Tensor
    cell_px: torch.Tensor

    @property
    def size(self) -> tuple[int, int]:
        return int(self.keys.shape[1]), int(self.keys.shape[2])

    def rays_cam(self) -> torch.Tensor:
        """(h * w, 3) rays through the cell centres with z = 1 (row-major)."""
        height, width = self.size
        rows, cols = torch.meshgrid(torch.arange(height, dtype=torch.float64),
                                    torch.arange(width, dtype=torch.float64), indexing="ij")
        u = self.origin_px[0] + cols.reshape(-1) * self.cell_px[0]
        v = self.origin_px[1] + rows.reshape(-1) * self.cell_px[1]
        uv1 = torch.stack([u, v, torch.ones_like(u)], 0)
        return torch.linalg.solve(self.K.double(), uv1).T


def _project(points_cam: torch.Tensor, partner: FrameGrid, partner_T_cam: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(..., 3) points of one frame -> grid coordinates (..., 2) in the partner's cells, depth in
    the partner (...), and whether they fall inside its grid in front of it (...)."""
    points = points_cam @ partner_T_cam[:3, :3].T + partner_T_cam[:3, 3]
    z = points[..., 2]
    uv = points @ partner.K.double().T
    uv = uv[..., :2] / z.clamp_min(1e-9)[..., None]
    grid = (uv - partner.origin_px) / partner.cell_px
    height, width = partner.size
    inside = (z > 1e-3) & (grid[..., 0] >= 0) & (grid[..., 0] <= width - 1) & (grid[..., 1] >= 0) \
        & (grid[..., 1] <= height - 1)
    return grid, z, inside


def _sample(values: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """(C, h, w) values on a cell grid, (M, D, 2) grid coordinates -> (M, D, C) bilinear samples."""
    height, width = values.shape[1:]
    normalised = torch.stack([grid[..., 0] / max(width - 1, 1), grid[..., 1] / max(height - 1, 1)], -1) * 2 - 1
    sampled = nn.functional.grid_sample(values[None].float(), normalised[None].float(), mode="bilinear",
                                        align_corners=True)
    return sampled[0].permute(1, 2, 0)


def sweep_costs(frame: FrameGrid, partners: list[FrameGrid], depths_m: torch.Tensor) -> torch.Tensor:
    """(M, D) depths per cell (along z) -> (M, D) mean matching cost over the partners that see
    each point (inf where fewer than two do)."""
    rays = frame.rays_cam()
    keys = frame.keys.reshape(frame.keys.shape[0], -1).T  # (M, C)
    points = rays[:, None, :] * depths_m[..., None]  # (M, D, 3)
    total = torch.zeros(depths_m.shape, dtype=torch.float32)
    seen = torch.zeros(depths_m.shape, dtype=torch.int64)
    world_T_cam = torch.linalg.inv(frame.cam_T_world)
    for partner in partners:
        grid, _, inside = _project(points, partner, partner.cam_T_world @ world_T_cam)
        cost = ((_sample(partner.keys, grid) - keys[:, None, :]) ** 2).sum(-1)
        total += torch.where(inside, cost, torch.zeros_like(cost))
        seen += inside
    return torch.where(seen >= 2, total / seen.clamp_min(1), torch.full_like(total, float("inf")))


def sweep_depth(frame: FrameGrid, partners: list[FrameGrid], options: SweepOptions = SweepOptions()
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Depth (z, m) of each of the frame's cells: (M,) float64 and (M,) bool distinct minimum."""
    inverse = torch.linspace(1.0 / options.max_depth_m, 1.0 / options.min_depth_m, options.depths,
                             dtype=torch.float64)
    cells = frame.size[0] * frame.size[1]
    coarse = sweep_costs(frame, partners, (1.0 / inverse).expand(cells, -1).contiguous())
    best = coarse.argmin(1)
    steps = torch.arange(options.depths)[None, :]
    away = (steps - best[:, None]).abs() > 2
    runner_up = torch.where(away, coarse, torch.full_like(coarse, float("inf"))).min(1).values
    best_cost = coarse.gather(1, best[:, None])[:, 0]
    distinct = torch.isfinite(best_cost) & (best_cost < options.max_ratio * runner_up)
    # Finer samples between the best's coarse neighbours, then a parabola through the finest three.
    step = inverse[1] - inverse[0]
    offsets = torch.linspace(-1.0, 1.0, options.fine, dtype=torch.float64) * step
    fine_inverse = (inverse[best][:, None] + offsets[None, :]).clamp(inverse[0], inverse[-1])
    fine = sweep_costs(frame, partners, 1.0 / fine_inverse)
    index = fine.argmin(1).clamp(1, options.fine - 2)
    before, at, after = (fine.gather(1, (index + k)[:, None])[:, 0].double() for k in (-1, 0, 1))
    curvature = before - 2 * at + after
    shift = torch.where(torch.isfinite(curvature) & (curvature > 0), (before - after) / (2 * curvature),
                        torch.zeros_like(curvature)).clamp(-0.5, 0.5)
    best_inverse = fine_inverse.gather(1, index[:, None])[:, 0] + shift * (offsets[1] - offsets[0])
    return 1.0 / best_inverse, distinct


def consistent_with_partners(frame: FrameGrid, depth_m: torch.Tensor, partners: list[FrameGrid],
                             partner_depths_m: list[torch.Tensor], agree_fraction: float) -> torch.Tensor:
    """(M,) how many partners put their surface where this frame's depth puts each cell's point
    (the partner's depth, bilinear at the projection, within ``agree_fraction`` of the point's)."""
    points = frame.rays_cam() * depth_m[:, None]
    world_T_cam = torch.linalg.inv(frame.cam_T_world)
    agree = torch.zeros(len(depth_m), dtype=torch.int64)
    for partner, partner_depth in zip(partners, partner_depths_m):
        grid, z, inside = _project(points, partner, partner.cam_T_world @ world_T_cam)
        sampled = _sample(partner_depth.reshape(1, *partner.size), grid[:, None, :])[:, 0, 0].double()
        agree += inside & torch.isfinite(sampled) & ((sampled - z).abs() <= agree_fraction * z)
    return agree


def choose_partners(descriptors: torch.Tensor, centres_m: torch.Tensor, frame: int, options: SweepOptions
                    ) -> list[int]:
    """The ``options.partners`` frames most similar to ``frame`` with enough baseline."""
    order = (descriptors @ descriptors[frame]).argsort(descending=True).tolist()
    chosen = []
    for other in order:
        if other != frame and float((centres_m[other] - centres_m[frame]).norm()) >= options.min_baseline_m:
            chosen.append(other)
            if len(chosen) == options.partners:
                break
    return chosen


def sweep_frames(grids: list[Optional[FrameGrid]], descriptors: torch.Tensor, options: SweepOptions = SweepOptions()
                 ) -> tuple[list[Optional[torch.Tensor]], dict[str, int]]:
    """Every frame's cell depths: per frame (M,) float64 z (NaN = unknown) or None without a grid."""
    usable = [f for f, grid in enumerate(grids) if grid is not None]
    centres = torch.stack([torch.linalg.inv(grids[f].cam_T_world)[:3, 3] if grids[f] is not None
                           else torch.full((3,), float("nan"), dtype=torch.float64) for f in range(len(grids))])
    partners = {f: [g for g in choose_partners(descriptors, centres, f, options) if grids[g] is not None]
                for f in usable}
    depths: list[Optional[torch.Tensor]] = [None] * len(grids)
    distinct = {}
    for f in usable:
        depths[f], distinct[f] = sweep_depth(grids[f], [grids[g] for g in partners[f]], options)
    raw = {f: torch.where(distinct[f], depths[f], torch.full_like(depths[f], float("nan"))) for f in usable}
    kept = 0
    for f in usable:
        agree = consistent_with_partners(grids[f], raw[f], [grids[g] for g in partners[f]],
                                         [raw[g] for g in partners[f]], options.agree_fraction)
        good = distinct[f] & (agree >= options.consistent)
        depths[f] = torch.where(good, raw[f], torch.full_like(raw[f], float("nan")))
        kept += int(good.sum())
    return depths, {"swept_cells": sum(len(raw[f]) for f in usable), "distinct_cells": sum(int(distinct[f].sum()) for f in usable),
                    "consistent_cells": kept}


@torch.no_grad()
def sweep_memory(head, pixels_xy: list[torch.Tensor], cam_T_world: torch.Tensor, intrinsics_K: torch.Tensor,
                 center_m: torch.Tensor, options: SweepOptions = SweepOptions()) -> dict[str, int]:
    """rgb mode: give a dense ``MemoryHead``'s cells the swept depths' coordinates (others unknown).

    pixels_xy: per frame (m_f, 2) cell centres in image pixels (a whole row-major grid, else the
    frame gets no depths); cam_T_world: (F, 4, 4); intrinsics_K: (F, 3, 3); center_m: (3,)."""
    projection = None
    if options.channels and options.channels < head.in_channels:
        sample = head.keys.reshape(-1, head.in_channels)[::7].float()
        mean = sample.mean(0)
        _, _, components = torch.linalg.svd(sample - mean, full_matrices=False)
        projection = (mean, components[:options.channels].T)
    grids: list[Optional[FrameGrid]] = []
    for f in range(head.frames):
        layout = grid_layout(pixels_xy[f]) if len(pixels_xy[f]) else None
        if layout is None:
            grids.append(None)
            continue
        (height, width), cell_px = layout
        keys = head.keys[f, :height * width].float()
        if projection is not None:
            keys = (keys - projection[0]) @ projection[1]
        keys = keys.reshape(height, width, -1).permute(2, 0, 1).contiguous()
        grids.append(FrameGrid(keys, intrinsics_K[f].double(), cam_T_world[f].double(),
                               pixels_xy[f][0].double(), cell_px))
    depths, counts = sweep_frames(grids, head.descriptors.float(), options)
    for f, (grid, depth) in enumerate(zip(grids, depths)):
        if grid is None:
            continue
        good = torch.isfinite(depth)
        points_cam = grid.rays_cam() * depth[:, None]
        world_T_cam = torch.linalg.inv(grid.cam_T_world)
        points = points_cam @ world_T_cam[:3, :3].T + world_T_cam[:3, 3]
        count = len(depth)
        head.values.data[f, :count][good] = (points[good] - center_m.double()).float()
        head.valid[f, :count] = good
    head.finish()
    return {**counts, "triangulated_cells": counts["consistent_cells"],
            "cells": int(sum(len(p) for p in pixels_xy))}
