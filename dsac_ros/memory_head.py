"""A per-scene head that remembers instead of regressing: the scene's cells as (feature, coordinate) pairs.

Why: on this project's CPU budget a trained MLP head cannot memorise a room. Measured on
small_room with the shipped encoder: the nearest mapping cell in feature space lies within
10 cm of the true scene coordinate for 81 % of test cells (median 2.3 cm), while a 128-wide
head after 10 minutes of training is at about 50 cm. The encoder is discriminative; the
bottleneck was fitting the head. So the head is the mapping cells themselves:

    image features (B, C, h, w)
      -> frame descriptor (mean of L2-normalised cell features) -> the ``retrieve_frames`` most
         similar mapping frames (image retrieval, as in hierarchical localisation)
      -> per cell, the nearest (L2) valid key among those frames' cells
      -> that key's scene coordinate (a trainable value: the end-to-end DSAC stage refines it).

Searching only the retrieved frames keeps the lookup exact, deterministic and cheap
(8 frames x 1200 cells instead of 360,000 keys), at a small cost in inliers (78 % vs 81 %
within 10 cm, measured on small_room).

Every tensor lives in the state dict, so a memory map is an ordinary map file.
"""

from __future__ import annotations

import functools
from typing import Optional

import numpy as np
import torch
from torch import nn

from dsac_ros.subcell import fine_positions, grid_layout, sub_grid_cells, subcell_offsets_at

DEFAULT_RETRIEVE_FRAMES = 8


def nearest_keys(queries: torch.Tensor, keys: torch.Tensor, valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(Q, C) queries, (K, C) keys, optional (K,) bool -> (Q,) index of each query's nearest (L2) valid key.

    The lookup is one (Q x K) matrix product, the largest cost of a frame after the encoder. On
    the CPU it runs in faiss (exact brute force, blocked so the distance matrix never leaves the
    cache): 1200 queries in 9600 keys took 28 ms there against 50-65 ms for torch's addmm + max
    on this 2-core AMD CPU (MKL's sgemm is slow on AMD), the same neighbours up to float ties.
    Tried and measured in a whole frame (small_room rgbd, 2 threads): numpy's OpenBLAS alone is
    faster for fewer queries (600 in 4800 keys: 3.9 ms, faiss 10.7: faiss gains nothing from fewer
    queries), but its spinning thread pool slowed the frame's other stages (total 25 -> 44 ms).
    Elsewhere, or without faiss: argmin |q - k|^2 = argmax q.k - |k|^2 / 2 in torch, the bias
    added inside addmm; invalid keys get a bias of -inf and can never win.
    """
    if queries.device.type == "cpu" and len(keys) and _faiss() is not None:
        return _nearest_keys_faiss(queries, keys, valid)
    bias = -0.5 * (keys * keys).sum(1)
    if valid is not None:
        bias = bias.masked_fill(~valid, -float("inf"))
    return torch.addmm(bias, queries, keys.T).max(1).indices


def _nearest_keys_faiss(queries: torch.Tensor, keys: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    faiss = _faiss()
    candidates = None
    if valid is not None and not bool(valid.all()):
        candidates = torch.nonzero(valid).reshape(-1)
        if len(candidates) == 0:  # nothing valid: as the torch path, every key ties at -inf
            return torch.zeros(len(queries), dtype=torch.long)
        keys = keys[candidates]
    query_array = np.ascontiguousarray(queries.detach().float().numpy())
    key_array = np.ascontiguousarray(keys.detach().float().numpy())
    faiss.omp_set_num_threads(torch.get_num_threads())  # one thread setting for torch and faiss
    _, index = faiss.knn(query_array, key_array, 1)
    nearest = torch.from_numpy(index[:, 0].astype(np.int64))
    return nearest if candidates is None else candidates[nearest]


@functools.lru_cache(maxsize=1)
def _faiss():
    """faiss if installed (a run-time dependency; None keeps the torch path working without it)."""
    try:
        import faiss
    except ImportError:
        return None
    return faiss


def frame_descriptor(features: torch.Tensor) -> torch.Tensor:
    """(M, C) cell features of one frame -> (C,) unit global descriptor (mean of unit features)."""
    mean = nn.functional.normalize(features.float(), dim=1).mean(0)
    return nn.functional.normalize(mean, dim=0)


class MemoryHead(nn.Module):
    """Scene memory of F mapping frames x M cells.

    keys: (F, M, C) float16 encoder features; valid: (F, M) bool (a coordinate is known);
    descriptors: (F, C) float32 frame descriptors (zero for frames without a valid cell, so they
    are never retrieved first); values: (F, M, 3) float32 parameter, metres from the scene centre
    (zero where invalid). Forward maps (B, C, h, w) features to (B, 3, h, w) offsets, like ``Head``.
    """

    def __init__(self, in_channels: int, frames: int, cells: int,
                 retrieve_frames: int = DEFAULT_RETRIEVE_FRAMES, key_stride: int = 1) -> None:
        super().__init__()
        if frames < 1 or cells < 1:
            raise ValueError(f"a memory head needs at least one frame and cell, got {frames} x {cells}")
        if retrieve_frames < 1:
            raise ValueError(f"retrieve_frames must be at least 1, got {retrieve_frames}")
        self.in_channels, self.frames, self.cells = int(in_channels), int(frames), int(cells)
        self.retrieve_frames = int(retrieve_frames)
        self.key_stride = int(key_stride)  # keys on every key_stride-th cell of each axis (``keep_key_grid``)
        # (F,) bool or None: frames retrieval skips (held-out validation, the ablation's oracle); not saved.
        self.hidden_frames: Optional[torch.Tensor] = None
        self.register_buffer("keys", torch.zeros(frames, cells, in_channels, dtype=torch.float16))
        self.register_buffer("valid", torch.zeros(frames, cells, dtype=torch.bool))
        self.register_buffer("descriptors", torch.zeros(frames, in_channels))
        self.values = nn.Parameter(torch.zeros(frames, cells, 3))

    @torch.no_grad()
    def store(self, frame: int, features: torch.Tensor, offsets_m: torch.Tensor) -> None:
        """Fill memory frame ``frame`` from (m, C) features and (m, 3) offsets (NaN = unknown), m <= M."""
        count = len(features)
        if count > self.cells or features.shape[1] != self.in_channels or offsets_m.shape != (count, 3):
            raise ValueError(f"frame {frame}: {tuple(features.shape)} features / {tuple(offsets_m.shape)} "
                             f"offsets do not fit a {self.cells} x {self.in_channels} memory frame")
        known = torch.isfinite(offsets_m).all(1)
        self.keys[frame].zero_()
        self.valid[frame].zero_()
        self.values[frame].zero_()
        self.keys[frame, :count] = features.to(self.keys.dtype)
        self.valid[frame, :count] = known
        self.values[frame, :count] = torch.where(known[:, None], offsets_m.float(), torch.zeros_like(offsets_m.float()))
        self.descriptors[frame] = frame_descriptor(features)

    @torch.no_grad()
    def keep_key_grid(self, frame: int, grid_hw: tuple[int, int]) -> None:
        """Forget the keys of memory frame ``frame`` (an (h, w) row-major grid) off the sub-grid of
        every ``key_stride``-th row and column."""
        height, width = grid_hw
        rows = torch.arange(height).view(-1, 1)
        cols = torch.arange(width).view(1, -1)
        off_grid = ((rows % self.key_stride != 0) | (cols % self.key_stride != 0)).reshape(-1)
        self.valid[frame, : height * width] &= ~off_grid

    @torch.no_grad()
    def finish(self) -> None:
        """Call once all frames are stored (and triangulated): frames without a single known
        coordinate get a zero descriptor, so retrieval prefers every frame that can answer."""
        self.descriptors[~self.valid.any(1)] = 0.0

    def retrieve(self, features: torch.Tensor, exclude_frame: Optional[int] = None,
                 retrieve_frames: Optional[int] = None) -> torch.Tensor:
        """(M, C) features of one image -> (k,) indices of the most similar memory frames.

        retrieve_frames: k for this call (None: the map's own ``self.retrieve_frames``)."""
        wanted = self.retrieve_frames if retrieve_frames is None else int(retrieve_frames)
        return most_similar_frames(self.descriptors, features, wanted, exclude_frame, self.hidden_frames)

    def lookup(self, features: torch.Tensor, exclude_frame: Optional[int] = None,
               return_index: bool = False, retrieve_frames: Optional[int] = None):
        """(M, C) features of ONE image -> (M, 3) offsets in metres (differentiable in ``values``).

        exclude_frame leaves one memory frame out (training on a mapping frame's own view would
        otherwise find itself). With return_index, also (M,) flat indices into (F * M) of the keys used.
        """
        queries = features.float()
        frames = self.retrieve(queries, exclude_frame, retrieve_frames)
        keys = self.keys[frames].reshape(-1, self.in_channels).float()
        nearest = nearest_keys(queries, keys, self.valid[frames].reshape(-1))
        flat = frames[nearest // self.cells] * self.cells + nearest % self.cells
        offsets = self.values.reshape(-1, 3)[flat]
        return (offsets, flat) if return_index else offsets

    def matched_keys(self, index: torch.Tensor) -> torch.Tensor:
        """(M,) flat indices from ``lookup(..., return_index=True)`` -> (M, C) float32 keys."""
        return self.keys.reshape(-1, self.in_channels)[index].float()

    def forward(self, features: torch.Tensor, retrieve_frames: Optional[int] = None) -> torch.Tensor:
        return lookup_grid(self, features, retrieve_frames)


def most_similar_frames(descriptors: torch.Tensor, features: torch.Tensor, wanted: int,
                        exclude_frame: Optional[int] = None, hidden: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(F, C) frame descriptors, (M, C) features of one image -> (k,) indices of the ``wanted`` most
    similar frames (k = wanted, or fewer when the memory has fewer), leaving ``exclude_frame`` and
    the frames of the (F,) bool mask ``hidden`` out (unless nothing else is left)."""
    similarity = descriptors @ frame_descriptor(features)
    excluded = 0
    if exclude_frame is not None:
        similarity = similarity.clone()
        similarity[int(exclude_frame)] = -float("inf")
        excluded = 1
    if hidden is not None and int((~hidden).sum()) > excluded:
        similarity = similarity.masked_fill(hidden, -float("inf"))
        excluded = max(excluded, int(hidden.sum()))
    k = min(int(wanted), len(descriptors) - excluded)
    return similarity.topk(max(k, 1)).indices


def strided_lookup(head: nn.Module, cells: torch.Tensor, retrieve_frames: Optional[int] = None, subcell: bool = True
                   ) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
    """The lookup of a map whose keys lie on every ``head.key_stride``-th cell of each axis.

    cells: (h, w, C) one image's features. The query searches with the same sub-grid of its cells
    (as many queries and keys as a map of a grid ``key_stride`` times coarser), and each match is
    placed on the full grid where its key fits best (``subcell.fine_positions``; without
    ``subcell``, at its sub-grid cell). Returns offsets (M, 3) metres from the scene centre, their
    positions (M, 2) (x, y) in full-grid cells, and the sub-grid's (h, w).
    """
    stride = int(getattr(head, "key_stride", 1))
    coarse = cells[::stride, ::stride].contiguous()
    offsets, index = head.lookup(coarse.reshape(-1, coarse.shape[2]), return_index=True,
                                 retrieve_frames=retrieve_frames)
    if subcell:
        grid_xy = fine_positions(cells, stride, head.matched_keys(index))
    else:
        rows, cols = sub_grid_cells(cells.shape[0], cells.shape[1], stride, cells.device)
        grid_xy = torch.stack([cols, rows], 1).to(offsets.dtype)
    return offsets, grid_xy, (coarse.shape[0], coarse.shape[1])


def lookup_grid(head: nn.Module, features: torch.Tensor, retrieve_frames: Optional[int] = None) -> torch.Tensor:
    """(B, C, h, w) features -> (B, 3, h, w) offsets, each image looked up with ``head.lookup``."""
    batch, channels, height, width = features.shape
    rows = features.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
    offsets = torch.stack([head.lookup(rows[b], retrieve_frames=retrieve_frames) for b in range(batch)])
    return offsets.reshape(batch, height, width, 3).permute(0, 3, 1, 2)


@torch.no_grad()
def triangulate_memory(head: MemoryHead, pixels_xy: list[torch.Tensor], cam_T_world: torch.Tensor,
                       intrinsics_K: torch.Tensor, center_m: torch.Tensor, partners: int = 12,
                       min_angle_deg: float = 2.0, agree_fraction: float = 0.05, min_support: int = 2,
                       subcell: bool = True, min_baseline_m: float = 0.02
                       ) -> dict[str, float]:
    """rgb mode: give memory cells coordinates from images and poses only (no depth).

    For each frame, the ``partners`` most similar frames (descriptor) seen from a viewpoint at
    least ``min_angle_deg`` away are matched cell to cell (mutual nearest neighbours in feature
    space). Each match gives a depth along the frame's cell ray: the point of that ray closest
    to the partner's ray. The cell ray is exact (it is the stored cell's centre); the partner's
    passes through the partner's matched cell, moved with ``subcell`` to where the frame's key peaks
    in the partner's grid (``dsac_ros.subcell``; frames that hold their whole cell grid). Depth is
    taken along the exact ray, and a cell keeps the mean of the depths within ``agree_fraction`` of
    their median if at least ``min_support`` agree.

    pixels_xy: per frame (m_f, 2) cell centres in image pixels; cam_T_world: (F, 4, 4);
    intrinsics_K: (F, 3, 3); center_m: (3,) scene centre. Writes values and valid; returns counts.
    """
    frames = head.frames
    world_T_cam = torch.linalg.inv(cam_T_world.double())
    centres = world_T_cam[:, :3, 3]

    def rays_through(f: int, pixels: torch.Tensor) -> torch.Tensor:  # (m, 2) pixels -> (m, 3) unit rays
        uv1 = torch.cat([pixels.double(), torch.ones(len(pixels), 1, dtype=torch.float64)], 1)
        return nn.functional.normalize((world_T_cam[f, :3, :3] @ torch.linalg.solve(intrinsics_K[f], uv1.T)).T, dim=1)

    rays = [rays_through(f, pixels_xy[f]) for f in range(frames)]
    grids = [grid_layout(pixels) for pixels in pixels_xy]
    similarity = head.descriptors @ head.descriptors.T
    min_sin = torch.sin(torch.deg2rad(torch.tensor(min_angle_deg, dtype=torch.float64)))
    triangulated, matched_pairs = 0, 0
    for f in range(frames):
        count = len(pixels_xy[f])
        if count == 0:
            continue
        order = similarity[f].argsort(descending=True)
        queries = head.keys[f, :count].float()
        depths = []
        for g in order.tolist():
            if len(depths) >= partners:
                break
            if g == f or len(pixels_xy[g]) == 0:
                continue
            w = centres[f] - centres[g]  # baseline
            if float(w.norm()) < min_baseline_m:
                continue  # no baseline: rays from (almost) one centre cannot triangulate
            keys = head.keys[g, :len(pixels_xy[g])].float()
            forward, backward = nearest_keys(queries, keys), nearest_keys(keys, queries)
            mutual = backward[forward] == torch.arange(count)
            d_f, d_g = rays[f], rays[g][forward]
            if subcell and grids[g] is not None:
                # The partner's ray through where f's key peaks in g's grid, not g's cell centre.
                (height, width), cell_px = grids[g]
                shift = subcell_offsets_at(keys.reshape(height, width, -1), forward, queries)
                d_g = rays_through(g, pixels_xy[g][forward].double() + shift.double() * cell_px)
            b = (d_f * d_g).sum(1)
            sin_sq = 1.0 - b * b
            # Closest point on the exact ray c_f + t d_f to the partner ray c_g + s d_g.
            d_w, e_w = d_f @ w, d_g @ w
            t = (b * e_w - d_w) / sin_sq.clamp_min(1e-12)
            s = (e_w - b * d_w) / sin_sq.clamp_min(1e-12)
            ok = mutual & (sin_sq > min_sin ** 2) & (t > 0.05) & (s > 0.05)
            matched_pairs += int(ok.sum())
            depths.append(torch.where(ok, t, torch.full_like(t, float("nan"))))
        if not depths:
            continue
        stacked = torch.stack(depths)  # (P, m) ray lengths, NaN = no usable match
        median = stacked.nanmedian(0).values
        agree = (stacked - median).abs() <= agree_fraction * median
        support = agree.sum(0)
        mean = torch.where(agree, stacked, torch.zeros_like(stacked)).sum(0) / support.clamp_min(1)
        good = (support >= min_support) & torch.isfinite(median)
        points = centres[f] + mean[:, None] * rays[f]
        head.values.data[f, :count][good] = (points[good] - center_m).float()
        head.valid[f, :count] = good
        triangulated += int(good.sum())
    head.finish()
    return {"triangulated_cells": triangulated, "cells": int(sum(len(p) for p in pixels_xy)),
            "matches": matched_pairs}
