"""Units on a Ray cluster: each attempt one Ray task, which runs the unit as a fresh process.

Ray schedules the task on a node with the unit's resources (``Resources.ray_options``: CPUs,
GPUs, TPU chips or a whole TPU VM) and, when the node or worker running it is lost, starts the
task again elsewhere by itself (``max_retries``); the unit then resumes from the newest
checkpoint in the shared workdir (gs:// or a mount every node sees). Each execution of the task
writes its own attempt record (``attempts.run_attempt``), so fanout.json shows the lost ones.

``address``: ``'auto'`` (a cluster started on this machine with ``ray start``),
``'ray://HOST:10001'`` (Ray Client) or ``'HOST:6379'`` (the head's GCS). The driver's Python,
flatrob_jax and Ray must match the cluster's (pin ``flatrob_jax[ray]``). Ray is imported here
only, and only when this executor is chosen.
"""

from __future__ import annotations

from flatrob_jax.fleet.attempts import Outcome, run_attempt
from flatrob_jax.fleet.resources import Resources

NODE_RETRIES = 10  # Ray's own restarts of a task whose node or worker was lost


def _attempt_on_a_node(root: str, name: str, command) -> Outcome:
    import ray

    node = ray.get_runtime_context().get_node_id()
    return run_attempt(root, name, command, node=node)


class RayExecutor:
    def __init__(
        self,
        root: str,
        *,
        address: str | None,
        resources: Resources = Resources(),
        node_retries: int = NODE_RETRIES,
    ):
        try:
            import ray
        except ImportError as e:
            raise ImportError(
                "--executor ray needs Ray: pip install 'flatrob_jax[ray]' (the same Ray "
                "version as the cluster's)"
            ) from e
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False, configure_logging=False)
        self.root, self.slots = root, None  # Ray queues what the cluster cannot take yet
        self.description = f"the Ray cluster at {address or 'a new local one'}"
        self._task = ray.remote(_attempt_on_a_node).options(
            max_retries=node_retries, retry_exceptions=False, **resources.ray_options()
        )
        self._refs = {}  # ObjectRef -> unit name

    def start(self, job):
        ref = self._task.remote(self.root, job.name, list(job.command))
        self._refs[ref] = job.name
        return ref

    def wait(self, timeout: float) -> list:
        if not self._refs:
            return []
        ray = self._ray
        ready, _ = ray.wait(list(self._refs), num_returns=1, timeout=timeout)
        if ready:  # and whatever else has finished meanwhile
            ready, _ = ray.wait(list(self._refs), num_returns=len(self._refs), timeout=0)
        out = []
        for ref in ready:
            name = self._refs.pop(ref)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as e:  # Ray gave the task up (node retries spent)
                outcome = Outcome(name, "", None, lost=f"{type(e).__name__}: {e}"[:500])
            out.append((ref, outcome))
        return out

    def close(self) -> None:
        for ref in list(self._refs):
            self._ray.cancel(ref, force=False)  # SIGTERM-like: the unit saves and exits 75
        self._refs = {}
