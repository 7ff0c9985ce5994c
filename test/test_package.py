"""The package as ROS and pip see it: manifest, installed files, launch file, command line."""

import ast
import py_compile
import subprocess
import sys
from pathlib import Path

from catkin_pkg.package import parse_package

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "install" / "dsac_ros"

# Python import name -> where its dependency is declared: a package.xml key or a requirements.txt
# project. An import that is in neither table fails the manifest test.
IMPORT_TO_ROS_KEY = {
    "rclpy": "rclpy", "std_msgs": "std_msgs", "geometry_msgs": "geometry_msgs",
    "sensor_msgs": "sensor_msgs", "nav_msgs": "nav_msgs", "diagnostic_msgs": "diagnostic_msgs",
    "tf2_msgs": "tf2_msgs", "builtin_interfaces": "builtin_interfaces",
    "rosgraph_msgs": "rosgraph_msgs", "rcl_interfaces": "rcl_interfaces", "lifecycle_msgs": "lifecycle_msgs",
    "launch": "launch", "launch_ros": "launch_ros", "ament_index_python": "ament_index_python",
    "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "matplotlib": "python3-matplotlib", "tqdm": "python3-tqdm", "scipy": "python3-scipy",
}
IMPORT_TO_PIP = {"torch": "torch", "rosbags": "rosbags", "skimage": "scikit-image",
                 "numpy": "numpy", "cv2": "opencv-python-headless", "yaml": "PyYAML",
                 "matplotlib": "matplotlib", "tqdm": "tqdm", "scipy": "scipy", "faiss": "faiss-cpu",
                 "onnxruntime": "onnxruntime", "onnx": "onnx"}
# Imported only by benchmarks or tests, declared in requirements-dev.txt.
DEV_ONLY = {"poselib": "poselib", "pytest": "pytest"}


def _top_level_imports(root: Path) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(REPO)))
    return found


def _requirement_names(path: Path) -> set[str]:
    names = set()
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            names.add(line.split("==")[0].split("[")[0].strip().lower())
    return names


def test_package_xml_parses_and_names_every_run_time_dependency():
    package = parse_package(str(REPO / "package.xml"))
    assert package.name == "dsac_ros"
    assert package.get_build_type() == "ament_cmake"
    # <depend> fills exec_depends too, so exec_depends is the whole run-time set.
    run_keys = {dep.name for dep in package.exec_depends}
    pip_names = _requirement_names(REPO / "requirements.txt")
    dev_names = _requirement_names(REPO / "requirements-dev.txt")

    undeclared = []
    imports = _top_level_imports(REPO / "dsac_ros")
    imports.update({k: v for k, v in _top_level_imports(REPO / "launch").items() if k not in imports})
    for module, files in sorted(imports.items()):
        if module in sys.stdlib_module_names or module in ("dsac_ros", "__future__"):
            continue
        ros_key = IMPORT_TO_ROS_KEY.get(module)
        pip_name = IMPORT_TO_PIP.get(module)
        declared = (ros_key in run_keys) or (pip_name and pip_name.lower() in pip_names)
        if module in DEV_ONLY and all("/benchmarks/" in f for f in files):
            declared = DEV_ONLY[module].lower() in dev_names
        if not declared:
            undeclared.append(f"{module} (imported by {', '.join(sorted(files))})")
    assert not undeclared, "imports not declared in package.xml or requirements: " + "; ".join(undeclared)
    # Every message package the node imports must be a ROS dependency, not only a pip one.
    for module in imports:
        if module.endswith("_msgs") or module == "rclpy":
            assert module in run_keys, f"{module} must be an exec_depend in package.xml"


def test_share_holds_launch_and_config():
    share = INSTALL / "share" / "dsac_ros"
    assert (share / "launch" / "localize.launch.py").is_file()
    assert (share / "config" / "localize.yaml").is_file()
    assert (share / "msg" / "LocalizationStatus.msg").is_file()


def test_node_executable_is_installed_where_ros2_run_looks():
    executable = INSTALL / "lib" / "dsac_ros" / "localizer"
    assert executable.is_file() and executable.stat().st_mode & 0o111
    assert "dsac_ros.ros.node" in executable.read_text()


def test_launch_file_compiles_and_names_installed_executable_and_params(tmp_path):
    launch_file = REPO / "launch" / "localize.launch.py"
    py_compile.compile(str(launch_file), cfile=str(tmp_path / "launch.pyc"), doraise=True)
    tree = ast.parse(launch_file.read_text())
    constants = {node.targets[0].id: node.value.value for node in tree.body
                 if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
                 and isinstance(node.targets[0], ast.Name)}
    assert constants["PACKAGE"] == "dsac_ros"
    assert (INSTALL / "lib" / constants["PACKAGE"] / constants["EXECUTABLE"]).is_file()
    assert (INSTALL / "share" / "dsac_ros" / "config" / constants["PARAMS_FILE"]).is_file()
    declared = {node.args[0].value for node in ast.walk(tree) if isinstance(node, ast.Call)
                and getattr(node.func, "id", "") == "DeclareLaunchArgument"}
    assert {"map", "params_file", "namespace", "use_sim_time", "image", "camera_info"} <= declared


def test_command_line_help_lists_verbs():
    result = subprocess.run([sys.executable, "-m", "dsac_ros.cli", "--help"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    for verb in ("synth", "map", "evaluate", "evaluate-live", "replay", "bench"):
        assert verb in result.stdout
    unknown = subprocess.run([sys.executable, "-m", "dsac_ros.cli", "no-such-verb"], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
    assert unknown.returncode == 2 and "unknown verb" in unknown.stderr


def test_console_script_is_installed_in_venv():
    script = Path(sys.prefix) / "bin" / "dsac-ros"
    assert script.is_file(), "make setup installs the dsac-ros command into .venv"
