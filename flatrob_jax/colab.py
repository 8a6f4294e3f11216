"""What the notebooks need from the runtime they run in: Colab or not, what JAX sees, the
installation of this package's dependencies next to a preinstalled JAX, where data comes from.

Importable anywhere without Colab and, at module level, without anything but the standard
library: a notebook's setup cell installs this package with ``pip install --no-deps`` and then
calls :func:`install_dependencies` from here, before flax, optax... are installed.

* :func:`in_colab`: True inside a Colab kernel.
* :func:`install_dependencies`: pip-installs the package's other requirements and never
  replaces a working preinstalled jax / jaxlib / libtpu / CUDA plugin (they are pinned by a
  constraints file, so pip fails clearly instead of silently swapping them).
* :func:`report_runtime`: prints JAX's version, backend, device kind and count, and warns
  loudly when the machine has a GPU or TPU but JAX sees only the CPU (the classic Colab trap:
  a GPU runtime with a CPU-only jaxlib).
* :func:`default_smoke`: the notebooks' ``SMOKE = None`` means True on a CPU runtime.
* :func:`full_precision_on_tpu`: on a TPU, float32 matmuls at full precision for the analyses.
* :func:`data_overrides`: where the data comes from in a notebook (a given directory; in
  Colab a download into /content; elsewhere the config's default).
* :func:`study_location`: where a notebook keeps a study so that it outlives the runtime
  (``drive://PATH``: Google Drive, mounted when needed; ``gs://``; a directory).
* :func:`authenticate_for`: Colab's Google sign-in before a ``gs://`` path is read.
* :func:`open_study_or_example`: ``flatrob_jax.analysis.open_study``, or, with no study there,
  the small example study shipped with the package (:func:`example_study_path`), saying so.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
import warnings

PACKAGE = "flatrob_jax"
# The JAX stack a Colab runtime ships matched to its accelerator; never upgraded from here.
JAX_STACK = (
    "jax",
    "jaxlib",
    "libtpu",
    "libtpu-nightly",
    "jax-cuda12-plugin",
    "jax-cuda12-pjrt",
    "jax-cuda13-plugin",
    "jax-cuda13-pjrt",
)
COLAB_DATA_DIR = "/content/datasets"  # where notebooks download data inside Colab
DRIVE = "drive://"  # a notebook location in Google Drive (study_location)
DRIVE_MOUNT = "/content/drive"  # where Colab mounts Google Drive; files are under MyDrive/


def in_colab() -> bool:
    """True inside a Colab kernel (its ``google.colab`` module is imported at start-up)."""
    return "google.colab" in sys.modules


# --------------------------------------------------------------------------- the hardware


def accelerator_present() -> str | None:
    """'gpu' or 'tpu' when the machine has one (whatever JAX makes of it), else None.

    Looks at what a runtime exposes without JAX: Colab's ``COLAB_GPU`` / TPU variables, the
    NVIDIA and TPU device files, ``nvidia-smi`` on the PATH. Not ``TPU_NAME``: that names a TPU
    somewhere (docs/cloud_tpu.md has users export it for tools/tpu_vm.sh), not one here."""
    env = os.environ
    if (
        env.get("COLAB_TPU_ADDR")
        or env.get("TPU_ACCELERATOR_TYPE")
        or os.path.exists("/dev/accel0")
        or os.path.exists("/dev/vfio/0")
    ):
        return "tpu"
    if (
        env.get("COLAB_GPU", "") not in ("", "0")
        or os.path.exists("/dev/nvidia0")
        or shutil.which("nvidia-smi")
    ):
        return "gpu"
    return None


@dataclasses.dataclass(frozen=True)
class RuntimeInfo:
    """What JAX sees: version, backend ('cpu', 'gpu', 'tpu'), the first device's kind, the
    device and process counts; ``accelerator``: what the machine has ('gpu', 'tpu', None);
    ``fell_back``: the machine has an accelerator but JAX runs on the CPU."""

    jax_version: str
    backend: str
    device_kind: str
    device_count: int
    process_count: int
    accelerator: str | None
    in_colab: bool

    @property
    def fell_back(self) -> bool:
        return self.accelerator is not None and self.backend == "cpu"


def runtime_info() -> RuntimeInfo:
    """Imports JAX and asks it what it runs on (see :class:`RuntimeInfo`)."""
    import jax

    devices = jax.devices()
    return RuntimeInfo(
        jax.__version__,
        jax.default_backend(),
        devices[0].device_kind,
        len(devices),
        jax.process_count(),
        accelerator_present(),
        in_colab(),
    )


def fallback_message(info: RuntimeInfo) -> str:
    """The warning for a runtime whose accelerator JAX does not use, with what to do."""
    fix = {
        "gpu": "install the CUDA build that matches the runtime: "
        'pip install -U "jax[cuda12]" (then restart the runtime)',
        "tpu": 'install the TPU build: pip install -U "jax[tpu]" (then restart the runtime)',
    }
    return (
        f"This machine has a {info.accelerator.upper()} but JAX {info.jax_version} runs on "
        f"the CPU ({info.device_count} CPU device(s)): everything will be very slow. "
        f"Probably jaxlib was replaced by a CPU-only build, or JAX_PLATFORMS="
        f"{os.environ.get('JAX_PLATFORMS', '')!r} restricts it. To fix it: "
        f"{fix[info.accelerator]}."
    )


def report_runtime(log=print) -> RuntimeInfo:
    """Prints the JAX version, backend, device kind and count, and (through ``log`` and
    ``warnings.warn``) a loud warning when a GPU/TPU is present but JAX fell back to the CPU.
    Returns the :class:`RuntimeInfo`."""
    info = runtime_info()
    where = "Colab" if info.in_colab else "local"
    log(
        f"JAX {info.jax_version} ({where}): backend {info.backend!r}, "
        f"{info.device_count} x {info.device_kind!r}"
        + (f", {info.process_count} processes" if info.process_count > 1 else "")
    )
    if info.fell_back:
        message = fallback_message(info)
        log("!" * 78 + "\n" + "WARNING: " + message + "\n" + "!" * 78)
        warnings.warn(message, RuntimeWarning, stacklevel=2)
    elif info.backend == "cpu" and info.in_colab:
        log(
            "Note: a CPU runtime. Runtime > Change runtime type > GPU or TPU makes the "
            "non-smoke sizes fast."
        )
    return info


def default_smoke(info: RuntimeInfo) -> bool:
    """What a notebook's ``SMOKE = None`` means: True (tiny sizes, minutes) when JAX runs on the
    CPU, including a GPU/TPU runtime whose JAX fell back to it; False on a GPU or TPU."""
    return info.backend == "cpu"


def full_precision_on_tpu(info: RuntimeInfo, log=print) -> bool:
    """On a TPU, JAX's float32 matmuls and convolutions default to one bf16 pass, which
    perturbs Hessian-vector products (lambda_max, traces, sharpness) and attack gradients by
    about 2^-8: set ``jax_default_matmul_precision`` to 'highest' (six passes, several times
    the matmul cost) and say so. Elsewhere float32 is already computed in full: nothing to do.
    Returns whether it changed the setting."""
    if info.backend != "tpu":
        return False
    import jax

    jax.config.update("jax_default_matmul_precision", "highest")
    log(
        "TPU runtime: matmul precision set to 'highest' for the analyses below (the TPU default, "
        "one bf16 pass, perturbs Hessian-vector products and attacks; docs/cloud_tpu.md, "
        "'Numerics on TPU')."
    )
    return True


# --------------------------------------------------------------------------- installation


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;(@]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def package_requirements(package: str = PACKAGE) -> list:
    """The installed ``package``'s runtime requirements (those without an ``extra`` marker),
    e.g. ``['jax>=0.7', 'flax>=0.10', ...]``, from its metadata."""
    requires = importlib.metadata.requires(package) or []
    return [r.split(";")[0].strip() for r in requires if "extra" not in r.partition(";")[2]]


def jax_check(python: str = sys.executable) -> str | None:
    """The version of a JAX that imports and finds its devices, checked in a fresh
    interpreter (so this kernel imports no JAX before the install is done); None if it does
    not."""
    code = "import jax; jax.devices(); print(jax.__version__)"
    try:
        out = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or not out.stdout.strip():
        return None
    return out.stdout.strip().splitlines()[-1]


def _satisfies(version: str, requirement: str) -> bool:
    """Whether ``version`` meets ``requirement``'s specifier (True when it cannot be told)."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import Version
    except ImportError:
        return True
    return Version(version) in Requirement(requirement).specifier


def install_dependencies(package: str = PACKAGE, *, dry_run: bool = False, log=print) -> list:
    """pip-installs ``package``'s requirements next to the JAX the runtime already has.

    A preinstalled JAX that works and meets the package's requirement is left alone: it and
    its jaxlib / libtpu / CUDA plugins are pinned (``pip install -c constraints``), so pip
    either keeps them or fails with a resolution error naming the dependency that wants
    another JAX. Without a working JAX (or with one too old for the package) JAX is installed
    for the accelerator the machine has (``jax[cuda12]``, ``jax[tpu]``, or ``jax``); a kernel
    that already imported JAX must then be restarted. Returns the pip command (run unless
    ``dry_run``)."""
    requirements = package_requirements(package)
    jax_requirement = next((r for r in requirements if _requirement_name(r) == "jax"), "jax")
    others = [r for r in requirements if _requirement_name(r) not in JAX_STACK]
    working = jax_check()
    command = [sys.executable, "-m", "pip", "install", "-q"]
    if working and _satisfies(working, jax_requirement):
        pins = {n: _installed_version(n) for n in JAX_STACK}
        pins = {n: v for n, v in pins.items() if v}
        handle, constraints = tempfile.mkstemp(prefix="jax-pins-", suffix=".txt")
        with os.fdopen(handle, "w") as f:
            f.write("".join(f"{n}=={v}\n" for n, v in pins.items()))
        log(f"keeping the preinstalled JAX stack: {', '.join(f'{n} {v}' for n, v in pins.items())}")
        command += ["-c", constraints, *others]
    else:
        extra = {"gpu": "[cuda12]", "tpu": "[tpu]"}.get(accelerator_present() or "", "")
        spec = jax_requirement.replace("jax", f"jax{extra}", 1)
        log(
            f"JAX {'is missing or broken' if not working else working + ' is too old'} "
            f"(the package needs {jax_requirement!r}): installing {spec!r}"
        )
        if "jax" in sys.modules:
            log("JAX is already imported in this kernel: restart the runtime after this cell.")
        command += [spec, *others]
    if dry_run:
        return command
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    finally:
        if "-c" in command:
            os.remove(command[command.index("-c") + 1])
    if result.returncode != 0:
        raise RuntimeError(
            f"installing {package}'s dependencies failed (pip exit {result.returncode}); "
            f"command: {' '.join(command)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        )
    log(f"installed: {', '.join(others)}")
    return command


# --------------------------------------------------------------------------- data and studies


def data_overrides(data_dir: str | None = None, dataset: str = "fashion_mnist") -> dict:
    """Config overrides that say where a notebook's data comes from.

    ``data_dir`` given: read it there (the IDX files, or a tfds data_dir with
    ``dataset.source='tfds'``). Else, inside Colab: download into ``/content/datasets/<name>``
    (``dataset.download=True``). Else nothing: the config's default (for Fashion-MNIST,
    Debian's ``/usr/share/datasets/fashion-mnist``)."""
    if data_dir:
        return {"dataset.data_dir": os.fspath(data_dir)}
    if in_colab():
        return {"dataset.data_dir": os.path.join(COLAB_DATA_DIR, dataset), "dataset.download": True}
    return {}


def study_location(location: str, log=print) -> str:
    """Where a notebook keeps a study, as a path or URI the library reads.

    ``drive://PATH``: in Colab, PATH in your Google Drive (Drive is mounted at /content/drive
    first when it is not; files in /content are lost when the runtime recycles); elsewhere the
    local directory PATH. ``gs://...``: the bucket (in Colab you are asked to sign in). Anything
    else: the path as it is."""
    location = os.fspath(location)
    if location.startswith(DRIVE):
        path = location[len(DRIVE) :].lstrip("/")
        if not path:
            raise ValueError(
                f"{location!r}: name a directory in your Drive, e.g. drive://studies/a"
            )
        if not in_colab():
            return path
        if not os.path.isdir(os.path.join(DRIVE_MOUNT, "MyDrive")):
            from google.colab import drive  # type: ignore[import-not-found]

            log(f"mounting Google Drive at {DRIVE_MOUNT} (for {location})")
            drive.mount(DRIVE_MOUNT)
        return os.path.join(DRIVE_MOUNT, "MyDrive", path)
    authenticate_for(location)
    return location


def example_study_path() -> str:
    """The small example study shipped with the package (flatrob_jax/example_study: the smoke
    sweep's results and report, made by tools/make_example_study.py; ABOUT.md says how)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "example_study")


def open_study_or_example(location: str, *, example: bool = True, log=print):
    """``flatrob_jax.analysis.open_study(location)``; with no study there and ``example``,
    the example study shipped with the package instead, and a message saying so. Returns
    (study, the location opened)."""
    from flatrob_jax.analysis import open_study

    try:
        return open_study(location), location
    except FileNotFoundError as e:
        if not example:
            raise
        fallback = example_study_path()
        log(
            f"No study at {location!r} ({str(e).split(';')[0]}).\n"
            f"Opening the EXAMPLE study shipped with flatrob_jax instead ({fallback}): a tiny "
            f"smoke sweep whose numbers show what this notebook does, not a finding. Run the "
            f"quickstart (or python -m flatrob_jax.sweep) to make a study of your own, or set "
            f"STUDY to one."
        )
        return open_study(fallback), fallback


def authenticate_for(path: str) -> None:
    """In Colab, ask for Google credentials before reading a ``gs://`` path (no-op
    elsewhere: there the default application credentials are used)."""
    if str(path).startswith("gs://") and in_colab():
        from google.colab import auth  # type: ignore[import-not-found]

        auth.authenticate_user()
