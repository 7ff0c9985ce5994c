"""dsac_ros: camera relocalisation with scene coordinate regression and DSAC.

The core (everything outside ``dsac_ros.ros``) never imports ROS, so the library and the
``dsac-ros`` command line work after a plain ``pip install .``.

Conventions used everywhere:
- ``a_T_b`` is a 4x4 rigid transform mapping points from frame ``b`` into frame ``a``;
  the camera pose is ``world_T_cam`` (camera-to-world). ``cam_T_world`` is its inverse.
- Camera frame: OpenCV / ROS optical frame, x right, y down, z forward. Units: metres, pixels.
"""

__version__ = "0.1.0"

# colcon installs the generated interfaces (dsac_ros.msg) into the install space's copy of this
# package. When the sources come first on sys.path (tests, editable install), extend the package
# path so `import dsac_ros.msg` still finds the generated module there.
from pkgutil import extend_path as _extend_path

__path__ = _extend_path(__path__, __name__)

# A frame alternates between three thread pools (torch's OpenMP, faiss's OpenMP in the memory
# lookup, ONNX Runtime's in the encoder). OpenMP's default lets idle threads spin for a while,
# taking the 2 cores from the next pool: measured per frame on small_room, ONNX Runtime's encoder
# 25 -> 17 ms and the whole frame 79 -> 61-65 ms with passive waiting (bench/bench_frame.py).
# It only takes effect if set before torch loads OpenMP; a value the user set wins.
import os as _os

_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
