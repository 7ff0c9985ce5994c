"""The compact scene memory (map format 2): keyframe cells with product-quantised keys.

The dense ``MemoryHead`` stores every cell of every mapping frame as a float16 key of C channels
(256 bytes at C = 128) plus a float32 coordinate: 95 MB for small_room's 300 frames, growing with
the recording. This head keeps only

    codes        (N, S) uint8      product-quantised keys: S sub-vectors of C / S channels, each
                                   the index of one of 256 centroids (16 bytes at S = 16)
    codebooks    (S, 256, C / S)   float32 centroids (faiss k-means, fixed seed)
    values       (N, 3) float32    trainable coordinates (metres from the scene centre); in a map
                                   file int16 steps of ``coords_step_m`` (about 0.15 mm in a room)
    frame_start  (F + 1,) int64    entries of keyframe f are rows frame_start[f]:frame_start[f+1]
    descriptors  (F, C) float32    global keyframe descriptors for retrieval

of the N cells with a known coordinate, for the F keyframes that mapping kept
(``dsac_ros.mapping.keyframes``). A lookup retrieves frames exactly as the dense head does,
decodes the retrieved frames' keys (a gather, about 1 ms for 9,600 keys) and searches them with the
same ``addmm`` nearest-key search, so the time per frame does not grow with the recording.

Why product quantisation: measured on small_room (rgbd, 150 test frames), 16-byte PQ keys keep
81.3 % within 5 cm / 5 deg, the same as exact float16 keys; PCA to 64 channels lost 0.6 points
at 4 times the size. faiss trains the codebooks 13 times faster than our own batched k-means
(2.0 vs 27 s for 171,000 keys) with a slightly lower reconstruction error (0.267 vs 0.271).
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch
from torch import nn

from dsac_ros.memory_head import (DEFAULT_RETRIEVE_FRAMES, MemoryHead, lookup_grid, most_similar_frames,
                                  nearest_keys)

CENTROIDS = 256  # 8-bit codes
DEFAULT_SUBQUANTIZERS = 16
# k-means training sample: 128 points per centroid is ample for 8-dimensional sub-vectors
# (faiss warns below 39 per centroid) and keeps training at about 2 s on one core.
TRAINING_SAMPLE = 32768
KMEANS_ITERATIONS = 25
INT16_MAX = 32767


class CompactMemoryHead(nn.Module):
    """Scene memory of F keyframes holding N known cells with product-quantised keys.

    Forward maps (B, C, h, w) features to (B, 3, h, w) offsets, like ``Head`` and ``MemoryHead``.
    """

    def __init__(self, in_channels: int, frames: int, entries: int, subquantizers: int = DEFAULT_SUBQUANTIZERS,
                 retrieve_frames: int = DEFAULT_RETRIEVE_FRAMES, key_stride: int = 1) -> None:
        super().__init__()
        if frames < 1 or entries < 1:
            raise ValueError(f"a compact memory needs at least one frame and entry, got {frames} x {entries}")
        if subquantizers < 1 or in_channels % subquantizers:
            raise ValueError(f"{subquantizers} sub-quantisers do not divide {in_channels} channels")
        if retrieve_frames < 1:
            raise ValueError(f"retrieve_frames must be at least 1, got {retrieve_frames}")
        self.in_channels, self.frames, self.entries = int(in_channels), int(frames), int(entries)
        self.subquantizers, self.retrieve_frames = int(subquantizers), int(retrieve_frames)
        self.key_stride = int(key_stride)  # the mapping grid's sub-grid the keys were kept on
        # (F,) bool or None: frames retrieval skips (as ``MemoryHead.hidden_frames``); not saved.
        self.hidden_frames: Optional[torch.Tensor] = None
        sub = self.in_channels // self.subquantizers
        self.register_buffer("codes", torch.zeros(entries, subquantizers, dtype=torch.uint8))
        self.register_buffer("codebooks", torch.zeros(subquantizers, CENTROIDS, sub))
        self.register_buffer("frame_start", torch.zeros(frames + 1, dtype=torch.int64))
        self.register_buffer("descriptors", torch.zeros(frames, in_channels))
        self.values = nn.Parameter(torch.zeros(entries, 3))
        # Row offsets of each sub-quantiser's centroids in the flattened codebooks (decode is one gather).
        self.register_buffer("_code_offsets", torch.arange(subquantizers) * CENTROIDS, persistent=False)

    @property
    def config(self) -> dict[str, Any]:
        """The head config that ``network.build_head`` rebuilds this head from."""
        return {"type": "memory", "layout": "pq", "frames": self.frames, "entries": self.entries,
                "subquantizers": self.subquantizers, "retrieve_frames": self.retrieve_frames,
                "key_stride": self.key_stride}

    # --- building ---------------------------------------------------------------------------------

    @classmethod
    @torch.no_grad()
    def from_dense(cls, dense: MemoryHead, subquantizers: int = DEFAULT_SUBQUANTIZERS, seed: int = 0
                   ) -> "CompactMemoryHead":
        """Quantise a filled dense memory (its known cells only; frames keep their order)."""
        valid = dense.valid.reshape(-1)
        if not bool(valid.any()):
            raise ValueError("the memory has no cell with a known coordinate")
        keys = dense.keys.reshape(-1, dense.in_channels)[valid].float()
        head = cls(dense.in_channels, dense.frames, int(valid.sum()), subquantizers, dense.retrieve_frames,
                   getattr(dense, "key_stride", 1))
        codebooks, codes = train_product_quantizer(keys, subquantizers, seed)
        head.codebooks.copy_(codebooks)
        head.codes.copy_(codes)
        head.values.data.copy_(dense.values.detach().reshape(-1, 3)[valid])
        head.frame_start[1:] = torch.cumsum(dense.valid.sum(1), 0)
        head.descriptors.copy_(dense.descriptors)
        return head

    # --- lookup -----------------------------------------------------------------------------------

    def decode(self, rows: torch.Tensor) -> torch.Tensor:
        """(n,) entry indices -> (n, C) float32 reconstructed keys."""
        flat = (self.codes[rows].long() + self._code_offsets).reshape(-1)
        return self.codebooks.reshape(-1, self.codebooks.shape[2]).index_select(0, flat).reshape(len(rows), -1)

    def frame_rows(self, frames: torch.Tensor) -> torch.Tensor:
        """(k,) keyframe indices -> (n,) their entry rows, frame by frame."""
        starts, stops = self.frame_start[frames].tolist(), self.frame_start[frames + 1].tolist()
        return torch.cat([torch.arange(a, b) for a, b in zip(starts, stops)])

    def retrieve(self, features: torch.Tensor, exclude_frame: Optional[int] = None,
                 retrieve_frames: Optional[int] = None) -> torch.Tensor:
        """(M, C) features of one image -> (k,) indices of the most similar keyframes (as ``MemoryHead``)."""
        wanted = self.retrieve_frames if retrieve_frames is None else int(retrieve_frames)
        return most_similar_frames(self.descriptors, features, wanted, exclude_frame, self.hidden_frames)

    def lookup(self, features: torch.Tensor, exclude_frame: Optional[int] = None,
               return_index: bool = False, retrieve_frames: Optional[int] = None):
        """(M, C) features of ONE image -> (M, 3) offsets in metres (differentiable in ``values``).

        exclude_frame leaves one keyframe out; with return_index, also (M,) entry rows used."""
        queries = features.float()
        rows = self.frame_rows(self.retrieve(queries, exclude_frame, retrieve_frames))
        if len(rows) == 0:  # only frames without entries were retrieved (never after mapping)
            rows = torch.arange(self.entries)
        nearest = rows[nearest_keys(queries, self.decode(rows))]
        offsets = self.values[nearest]
        return (offsets, nearest) if return_index else offsets

    def matched_keys(self, index: torch.Tensor) -> torch.Tensor:
        """(M,) entry rows from ``lookup(..., return_index=True)`` -> (M, C) float32 decoded keys."""
        return self.decode(index)

    def forward(self, features: torch.Tensor, retrieve_frames: Optional[int] = None) -> torch.Tensor:
        return lookup_grid(self, features, retrieve_frames)


@torch.no_grad()
def train_product_quantizer(keys: torch.Tensor, subquantizers: int, seed: int = 0
                            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, C) float keys -> ((S, 256, C / S) float32 codebooks, (N, S) uint8 codes), with faiss.

    Deterministic for a seed on one machine and thread count: the training sample and faiss's
    k-means initialisation are seeded (sums in other orders may move a centroid in its last bits).
    """
    import faiss

    x = np.ascontiguousarray(keys.detach().cpu().numpy(), dtype=np.float32)
    count, channels = x.shape
    quantizer = faiss.ProductQuantizer(channels, int(subquantizers), 8)
    quantizer.cp.niter = KMEANS_ITERATIONS
    quantizer.cp.seed = int(seed)
    quantizer.cp.min_points_per_centroid = 1  # tiny maps (tests) have fewer points than 39 x 256
    sample = np.random.default_rng([int(seed), 0x9C]).permutation(count)[:TRAINING_SAMPLE]
    training = x[np.sort(sample)]
    if len(training) < CENTROIDS:  # k-means needs a point per centroid: repeat a tiny map's keys
        training = np.resize(training, (CENTROIDS, channels))
    quantizer.train(training)
    codes = quantizer.compute_codes(x)
    codebooks = faiss.vector_to_array(quantizer.centroids).reshape(subquantizers, CENTROIDS, channels // subquantizers)
    return torch.from_numpy(codebooks.copy()), torch.from_numpy(codes.copy())


# --- the map file's view of the head ----------------------------------------------------------------


def pack_state(state_dict: dict[str, torch.Tensor], prefix: str = "head.") -> dict[str, torch.Tensor]:
    """Map-file form of a compact head's state: float32 values -> int16 steps + the step (metres)."""
    packed = dict(state_dict)
    values = packed.pop(prefix + "values").detach().float()
    step = max(float(values.abs().max()) / INT16_MAX, 1e-6)
    packed[prefix + "coords_q"] = torch.round(values / step).clamp(-INT16_MAX, INT16_MAX).to(torch.int16)
    packed[prefix + "coords_step_m"] = torch.tensor(step, dtype=torch.float64)
    return packed


def unpack_state(state_dict: dict[str, Any], prefix: str = "head.") -> tuple[dict[str, Any], list[str]]:
    """Inverse of ``pack_state``, with the problems of a damaged compressed section named
    (an empty list when it is sound). The result has float32 ``values`` again."""
    problems: list[str] = []
    state = dict(state_dict)
    coords, step = state.pop(prefix + "coords_q", None), state.pop(prefix + "coords_step_m", None)
    if not isinstance(coords, torch.Tensor) or coords.dtype != torch.int16 or coords.ndim != 2 or coords.shape[1] != 3:
        problems.append(f"{prefix}coords_q must be an (N, 3) int16 tensor, got "
                        f"{_describe(coords)}")
    if not isinstance(step, torch.Tensor) or step.numel() != 1 or not bool(torch.isfinite(step).all()) \
            or not float(step) > 0:
        problems.append(f"{prefix}coords_step_m must be one positive finite number, got {_describe(step)}")
    if not problems:
        state[prefix + "values"] = (coords.double() * float(step)).float()
    codes = state.get(prefix + "codes")
    if isinstance(codes, torch.Tensor) and codes.dtype != torch.uint8:
        problems.append(f"{prefix}codes must be uint8 codes, got {codes.dtype}")
    start = state.get(prefix + "frame_start")
    entries = codes.shape[0] if isinstance(codes, torch.Tensor) and codes.ndim == 2 else None
    if isinstance(start, torch.Tensor) and entries is not None:
        if start.dtype != torch.int64 or start.ndim != 1 or len(start) < 2 or int(start[0]) != 0 \
                or int(start[-1]) != entries or bool((start[1:] < start[:-1]).any()):
            problems.append(f"{prefix}frame_start is not an offset table rising from 0 to the {entries} entries")
    return state, problems


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {tuple(value.shape)}"
    return "nothing" if value is None else type(value).__name__
