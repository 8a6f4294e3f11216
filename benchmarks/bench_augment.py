"""Images/s of our on-device policies (jitted, batch 256) against torchvision's PIL pipeline
(DataLoader, 2 workers) on the same images, at 32x32 and 224x224; plus the cost of one op slot
chosen per image with ``lax.switch`` under vmap (every branch runs) versus our family-fused
``op_table.apply_op`` and a sequential ``lax.map`` of the switch.

    python benchmarks/bench_augment.py [--peer-python /tmp/tvenv/bin/python] [--sizes 32,224]
        [--cpu-devices 2]

The peer runs back to back in its own venv (see bench_augment_torchvision.py). Not run by pytest.
``--cpu-devices N`` splits the host CPU into N JAX devices (XLA's
``--xla_force_host_platform_device_count``) and runs our policies data-parallel over them with
``distributed.data_parallel``, each device augmenting its slice of the batch, as the training
step does; the peer's DataLoader likewise runs one worker process per core.
"""

import argparse
import json
import os
import subprocess
import sys
import time

if "--cpu-devices" in sys.argv:  # must reach XLA before jax is imported
    _n = sys.argv[sys.argv.index("--cpu-devices") + 1]
    os.environ["XLA_FLAGS"] = (
        f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={_n}"
    )

import jax
import jax.numpy as jnp
import numpy as np

from flatrob_jax import augment, distributed, execution
from flatrob_jax.augment import augmix, op_table
from flatrob_jax.augment.levels import from_levels, to_levels

BATCH = 256
POLICIES = {
    "augmix": {"severity": 3, "width": 3, "depth": -1, "alpha": 1.0, "all_ops": False},
    "autoaugment": {"policy": "cifar10"},
    "randaugment": {"num_ops": 2, "magnitude": 9},
    "trivialaugment": {},
}


def photo_batch(size: int) -> np.ndarray:
    """BATCH uint8 crops of scikit-image's sample photos, resized by block averaging /
    repetition."""
    import skimage.data

    sources = [
        skimage.data.astronaut(),
        skimage.data.chelsea(),
        skimage.data.coffee(),
        skimage.data.rocket(),
    ]
    rng = np.random.default_rng(0)
    out = []
    for i in range(BATCH):
        src = sources[i % len(sources)]
        crop = 256 if size > 32 else 128
        y = rng.integers(0, src.shape[0] - crop)
        x = rng.integers(0, src.shape[1] - crop)
        patch = src[y : y + crop, x : x + crop].astype(np.float64)
        if size <= crop:
            f = crop // size
            patch = patch[: size * f, : size * f].reshape(size, f, size, f, 3).mean(axis=(1, 3))
        patch = patch[:size, :size]
        out.append(np.round(patch).astype(np.uint8))
    return np.stack(out)


def time_fn(fn, *args, min_seconds=3.0, max_iters=50):
    jax.block_until_ready(fn(*args))  # compile + warm-up
    iters, start = 0, time.perf_counter()
    while iters < max_iters and (iters < 2 or time.perf_counter() - start < min_seconds):
        jax.block_until_ready(fn(*args))
        iters += 1
    return (time.perf_counter() - start) / iters


def ours(policy: str, images: jnp.ndarray, execution: str = "auto") -> float:
    """Images/s of the jitted policy on one batch, data-parallel over all devices (per-example
    keys travel with their images, so the result does not depend on the device count)."""
    policy_fn = augment.get_augment(policy, execution=execution, **POLICIES[policy])
    keys = execution.example_keys(jax.random.key(0), images.shape[0])
    mesh = distributed.make_mesh()
    spec = jax.sharding.PartitionSpec(distributed.AXIS)
    fn = distributed.data_parallel(policy_fn, mesh, in_specs=(spec, spec), out_specs=spec)
    sharding = distributed.batch_sharded(mesh)
    return BATCH / time_fn(fn, jax.device_put(keys, sharding), jax.device_put(images, sharding))


def augmix_with(slot_fn, images, sequential=False):
    """AugMix whose op slots use ``slot_fn`` (the switch baselines), else identical to ours."""
    names = augmix.op_names(False)
    h, w = images.shape[1:3]

    def one(key, image):
        p = augmix.sample(key, h, w)
        levels = to_levels(image)

        def chain(o, m):
            def step(x, s):
                return slot_fn(x, s[0], s[1], names, "bilinear"), None

            return jax.lax.scan(step, levels, (o, m))[0]

        chains = jax.vmap(chain)(p["op_indices"], p["magnitudes"])
        mixed = jnp.tensordot(p["weights"], from_levels(chains), axes=1)
        return (1 - p["mix"]) * image + p["mix"] * mixed

    keys = execution.example_keys(jax.random.key(0), BATCH)
    if sequential:
        fn = jax.jit(lambda k, x: jax.lax.map(lambda a: one(*a), (k, x)))
    else:
        fn = jax.jit(jax.vmap(one))
    return BATCH / time_fn(fn, keys, images)


def one_slot(slot_fn, images, names, sequential=False):
    levels = to_levels(images)
    idx = jnp.arange(BATCH) % len(names)
    mags = jnp.where(jnp.asarray([n == "posterize" for n in names])[idx], 4.0, 0.3)

    def one(x, i, m):
        return slot_fn(x, i, m, names, "bilinear")

    if sequential:
        fn = jax.jit(lambda x, i, m: jax.lax.map(lambda a: one(*a), (x, i, m)))
    else:
        fn = jax.jit(jax.vmap(one))
    return time_fn(fn, levels, idx, mags) / BATCH * 1e6  # microseconds per image


def peer(python: str, images: np.ndarray, policy: str, batches: int):
    path = f"/tmp/bench_augment_{images.shape[1]}.npy"
    np.save(path, images)
    script = os.path.join(os.path.dirname(__file__), "bench_augment_torchvision.py")
    out = subprocess.run(
        [python, script, path, policy, str(batches)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["images_per_s"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--peer-python", default="/tmp/tvenv/bin/python")
    parser.add_argument("--sizes", default="32,224")
    parser.add_argument("--policies", default=",".join(POLICIES))
    parser.add_argument(
        "--switch", action="store_true", help="also time the vmap-of-switch baselines"
    )
    parser.add_argument(
        "--cpu-devices", type=int, default=None, help="split the CPU into this many JAX devices"
    )
    args = parser.parse_args()
    print(
        f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s), "
        f"{os.cpu_count()} CPUs, batch {BATCH}"
    )
    rows = []
    for size in [int(s) for s in args.sizes.split(",")]:
        images_u8 = photo_batch(size)
        images = jnp.asarray(images_u8, jnp.float32) / 255.0
        if args.switch:
            names = augmix.op_names(True)
            fused = one_slot(op_table.apply_op, images, names)
            switch = one_slot(op_table.apply_op_switch, images, names)
            seq = one_slot(op_table.apply_op_switch, images, names, sequential=True)
            print(
                f"| {size} | one op slot, 14 ops, us/image | fused {fused:.1f} "
                f"| vmap(switch) {switch:.1f} | lax.map(switch) {seq:.1f} |"
            )
            fused_am = ours("augmix", images, "vectorized")
            switch_am = augmix_with(op_table.apply_op_switch, images)
            seq_am = ours("augmix", images, "sequential")
            print(
                f"| {size} | AugMix images/s | vmap+fused {fused_am:.0f} "
                f"| vmap(switch) {switch_am:.0f} | lax.map+switch {seq_am:.0f} |"
            )
        for policy in args.policies.split(","):
            seq_ips = ours(policy, images, "sequential")
            vec_ips = ours(policy, images, "vectorized")
            peer_ips = float("nan")
            if os.path.exists(args.peer_python):
                batches = 6 if size <= 32 else 3
                peer_ips = peer(args.peer_python, images_u8, policy, batches)
            rows.append((policy, size, seq_ips, vec_ips, peer_ips))
            print(
                f"| {policy} | {size} | {seq_ips:.0f} | {vec_ips:.0f} | {peer_ips:.0f} "
                f"| {seq_ips / peer_ips:.1f}x |",
                flush=True,
            )
    print(
        "\n| policy | size | ours, sequential (images/s) | ours, vectorized (images/s) "
        "| torchvision+PIL, 2 workers (images/s) | best ours / PIL |"
    )
    print("|---|---|---|---|---|---|")
    for policy, size, a, v, b in rows:
        print(f"| {policy} | {size}x{size} | {a:.0f} | {v:.0f} | {b:.0f} | {max(a, v) / b:.1f}x |")


if __name__ == "__main__":
    sys.exit(main())
