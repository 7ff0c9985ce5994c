"""A tiny map file written by an older dsac_ros, and what that code predicted with it (test/fixtures/).

    git worktree add /tmp/old e41afbf && (cd /tmp/old && python /path/to/this/script.py /tmp/old test/fixtures)

Run inside a checkout of the old commit (its dsac_ros and test/fixtures_maps.py are imported from argv[1]).
"""
import sys, json
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[1] + "/test")
import fixtures_maps as fm
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
fm.FIT_NETWORK = {"name": "fixture-tiny", "encoder": {"channels": [4, 8, 8, 16], "residual_blocks": 1, "feature_channels": 16},
                  "head": {"width": 16, "residual_blocks": 1}}
fm.FIT_STEPS = 400
torch.set_num_threads(1)
fm._fit_tiny_map(out / "tiny_map_e41afbf.pt")
from dsac_ros.localizer import Localizer
from dsac_ros.data.scenes import get_scene
frame = next(iter(get_scene("tiny").render_frames("mapping", stride=fm.FIT_STRIDE)))
loc = Localizer(out / "tiny_map_e41afbf.pt", device="cpu")
coords, pixels, grid = loc.predict(frame.image_rgb)
np.save(out / "tiny_map_e41afbf_frame0_coords_m.npy", coords.numpy().astype(np.float32))
r = loc.localize(frame.image_rgb, frame.intrinsics, seed=0)
json.dump({"commit": "e41afbf", "status": str(r.status), "inliers": r.inlier_count,
           "world_T_cam": r.world_T_cam.tolist()}, open(out / "tiny_map_e41afbf_frame0.json", "w"), indent=1)
print(r.status, r.inlier_count)
