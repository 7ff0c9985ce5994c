"""The candidates of issue 14, measured on one dense memory map: keyframe rules and key compressions.

    python scripts/compact_candidates.py DENSE_MAP.pt small_room OUT_DIR "full;pq16;pca64;cov0.05,5+pq16"

DENSE_MAP: a format-1 map of the scene's cached bench folder (dsac-ros map --no-keyframes
--key-bytes 0); variants joined by ';', parts by '+': kfD,A (pose novelty: no kept frame within D m
and A deg), covF,A (covisibility keyframes: novel fraction F, view angle A), pqS (S-byte product
quantisation, faiss), pcaD (PCA to D channels), int8 (per-channel int8), v16 (float16 coordinates).
Each variant is written as a map (keys decoded back to float16) and evaluated on every test frame;
prints one JSON row per variant (est_mb: keys + coordinates + descriptors, without the encoder).
"""
import json, sys, time
from pathlib import Path
import numpy as np, torch
from dsac_ros.mapfile import load_map, save_map
from dsac_ros.memory_head import MemoryHead
from dsac_ros.data.scenes import get_scene
from dsac_ros.geometry import pose_errors
from dsac_ros.benchmarks.mapping import evaluate_map
from dsac_ros.network import SceneCoordinateNetwork

torch.set_num_threads(1)
FULL = Path(sys.argv[1]); SCENE = sys.argv[2]; OUT = Path(sys.argv[3]); variants = sys.argv[4].split(";")
CACHE = Path(__file__).resolve().parents[1] / ".cache" / "bench_mapping"
test_dir = CACHE / f"{SCENE}_640x480" / "test"
m = load_map(FULL)
head = m.network.head
spec = get_scene(SCENE)
poses = spec.poses("mapping")
held = [i for i in range(len(poses)) if i % 20 == 10][:20]
mem_poses = np.delete(poses, held, axis=0)
assert len(mem_poses) == head.frames, (len(mem_poses), head.frames)

def keyframes(d_m, a_deg):
    kept = [0]
    for i in range(1, len(mem_poses)):
        t, r = pose_errors(mem_poses[kept], np.repeat(mem_poses[i][None], len(kept), 0))
        if not np.any((t < d_m) & (r < a_deg)):
            kept.append(i)
    return kept

from dsac_ros.data import open_recording
from dsac_ros.mapping.keyframes import KeyframeSelector, KeyframeOptions
_frames = None
def covis(frac, angle, scale=1.25):
    global _frames
    if _frames is None:
        rec = open_recording(CACHE / f"{SCENE}_640x480" / "mapping")
        _frames = [(f.world_T_cam, f.intrinsics, f.depth_m) for i, f in enumerate(rec) if i not in held]
    sel = KeyframeSelector(KeyframeOptions(min_novel_fraction=frac, max_view_angle_deg=angle, max_scale_ratio=scale))
    return [i for i, f in enumerate(_frames) if sel.consider(*f)]

def pca(keys, dims):
    mean = keys.mean(0); u, s, v = torch.linalg.svd(keys[::7] - mean, full_matrices=False)
    P = v[:dims]
    return (keys - mean) @ P.T @ P + mean   # reconstruction: same distances as in the subspace (+ const)

def int8(keys):
    scale = (keys.abs().amax(0) / 127).clamp_min(1e-8)  # all-zero channels (ReLU features) stay zero
    return (keys / scale).round().clamp(-127, 127) * scale

rows = []
for variant in variants:
    start = time.perf_counter()
    parts = variant.split("+")
    frames = list(range(head.frames))
    keys = head.keys.float().clone(); values = head.values.detach().clone(); valid = head.valid.clone()
    desc = head.descriptors.clone()
    bytes_per_key, bytes_per_value = 256, 12
    for p in parts:
        if p.startswith("kf"):
            d, a = (float(v) for v in p[2:].split(","))
            frames = keyframes(d, a)
        elif p.startswith("cov"):
            frames = covis(*(float(v) for v in p[3:].split(",")))
        elif p.startswith("pq"):
            msub = int(p[2:]); bytes_per_key = msub
        elif p.startswith("pca"):
            bytes_per_key = 2 * int(p[3:])
        elif p == "int8":
            bytes_per_key = 128
        elif p == "v16":
            bytes_per_value = 6
    keys, values, valid, desc = keys[frames], values[frames], valid[frames], desc[frames]
    F, M, C = keys.shape
    flat = keys.reshape(-1, C)
    for p in parts:
        if p.startswith("pq"):
            from dsac_ros.compact_memory import train_product_quantizer
            cb, codes = train_product_quantizer(flat[valid.reshape(-1)], int(p[2:]))
            m_ = cb.shape[0]
            flat[valid.reshape(-1)] = cb[torch.arange(m_)[None, :], codes.long()].reshape(len(codes), -1)
        elif p.startswith("pca"):
            flat[valid.reshape(-1)] = pca(flat[valid.reshape(-1)], int(p[3:]))
        elif p == "int8":
            flat[valid.reshape(-1)] = int8(flat[valid.reshape(-1)])
        elif p == "v16":
            values = values.half().float()
    build_s = time.perf_counter() - start
    new = MemoryHead(C, F, M, head.retrieve_frames)
    new.keys.copy_(flat.reshape(F, M, C).half()); new.valid.copy_(valid); new.descriptors.copy_(desc)
    new.values.data.copy_(values)
    cfg = dict(m.network.config); cfg["head"] = dict(cfg["head"], frames=F)
    net = SceneCoordinateNetwork(m.network.encoder, new, m.scene_center_m, cfg)
    path = OUT / f"{variant.replace(',', '_').replace('+', '__')}.pt"
    save_map(path, net, m.input_height_px, m.normalization, m.training)
    cells = int(valid.sum())
    size_mb = (cells * (bytes_per_key + bytes_per_value) + F * C * 4) / 1e6
    metrics = evaluate_map(path, test_dir, "cpu", 1, False)
    row = dict(variant=variant, frames=F, cells=cells, est_mb=round(size_mb, 2), build_s=round(build_s, 1),
               pct5=round(metrics["pct_5cm_5deg"], 1), pct2=round(metrics["pct_2cm_2deg"], 1),
               med_cm=round(metrics["median_translation_cm"], 2), ms=round(metrics["median_ms_total"], 1))
    print(json.dumps(row), flush=True)
    rows.append(row)
    path.unlink()
