"""What one unit of a sweep asks of an executor: ``cpu:K``, ``gpu:K``, ``tpu:K`` or ``tpu:host``.

``tpu:K`` asks for K TPU chips (Ray's ``TPU`` resource, which Ray sets on every TPU VM node and
which sets ``TPU_VISIBLE_CHIPS`` for the task); ``tpu:host`` asks for a whole TPU VM, through
the custom resource ``flatrob_tpu_host`` that ``tools/tpu_vm.sh ray-join`` declares once per
TPU VM. Several specs combine with commas: ``gpu:1,cpu:4``.
"""

from __future__ import annotations

import dataclasses

KINDS = ("cpu", "gpu", "tpu")
TPU_HOST_RESOURCE = "flatrob_tpu_host"
EXAMPLES = "cpu:1, cpu:4, gpu:1, tpu:4, tpu:host, gpu:1,cpu:4"


@dataclasses.dataclass(frozen=True)
class Resources:
    cpus: float = 1
    gpus: float = 0
    tpus: float = 0
    tpu_host: bool = False

    def ray_options(self) -> dict:
        """``num_cpus``/``num_gpus``/``resources`` for ``ray.remote(...).options``."""
        custom = {}
        if self.tpus:
            custom["TPU"] = self.tpus
        if self.tpu_host:
            custom[TPU_HOST_RESOURCE] = 1
        return {"num_cpus": self.cpus, "num_gpus": self.gpus, "resources": custom}


def parse(spec: str | None) -> Resources:
    """``'gpu:1,cpu:4'`` -> Resources; None or '' -> one CPU. A clear error names the bad part
    and the allowed forms."""
    if not spec:
        return Resources()
    values = {"cpus": 1.0}
    for part in str(spec).split(","):
        kind, sep, amount = part.strip().partition(":")
        if kind not in KINDS or not sep:
            raise ValueError(f"resources {spec!r}: bad part {part!r}; allowed: {EXAMPLES}")
        if kind == "tpu" and amount == "host":
            values["tpu_host"] = True
            continue
        try:
            count = float(amount)
        except ValueError as e:
            raise ValueError(
                f"resources {spec!r}: {part!r} needs a number (or tpu:host); allowed: {EXAMPLES}"
            ) from e
        if count < 0 or (kind != "cpu" and count == 0) or count != count:
            raise ValueError(f"resources {spec!r}: {part!r} must be positive; allowed: {EXAMPLES}")
        values[{"cpu": "cpus", "gpu": "gpus", "tpu": "tpus"}[kind]] = count
    return Resources(**values)
