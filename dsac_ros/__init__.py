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
