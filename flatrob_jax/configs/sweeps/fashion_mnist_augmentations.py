"""The offline default study: Fashion-MNIST, the small CNN, one model per augmentation;
flatness (lambda_max, trace) on clean and augmented training data, on-the-fly corruption
error and PGD error; correlations and the report. Sized to finish within 15 minutes on a
2-core CPU: short training (1.5 epochs over 20000 training images), flatness on 256 training
images, robustness on 500 test images (15 corruptions x 5 severities, PGD-10 at 8/255).

    python -m flatrob_jax.sweep --sweep configs/sweeps/fashion_mnist_augmentations.py \
        --workdir workdirs/fashion_mnist_study

Expected: 11 min 03 s on the 2-core CPU, 2.9 GB peak memory, the tables and figure of
benchmarks/study.md. ``:smoke`` is a 3-run, few-step version for tests.
"""

from flatrob_jax.configuration import parse_arg
from flatrob_jax.study import Sweep

AUGMENTATIONS = (
    "none",
    "standard",
    "cutout",
    "autoaugment",
    "randaugment",
    "augmix",
    "gaussian_noise",
    "mixup",
)


def get_sweep(arg=None):
    arg = parse_arg(arg, smoke=False)
    overrides = {
        "dataset.num_train_examples": 20000,
        "train.num_epochs": 1.5,
        "optimizer.learning_rate": 0.1,
        "optimizer.warmup_epochs": 0.2,
        "log_every_steps": 100,
        "eval_every_steps": None,
        "checkpoint.every_steps": 250,
        # AugMix without the 3-view JSD loss keeps every run at one forward pass per image.
        "augment.augmix.jsd": False,
        "augment.cutout.length": 12,
        "augment.gaussian_noise.sigma": 0.1,
        "analysis.measures": (
            "clean",
            "curvature",
            "curvature_augmented",
            "corruptions",
            "attacks",
        ),
        "analysis.num_train_examples": 256,
        "analysis.num_test_examples": 500,
        "analysis.curvature.lanczos_steps": 20,
        "analysis.curvature.trace_max_probes": 20,
        "analysis.curvature.trace_min_probes": 10,
        "analysis.curvature.trace_rel_tol": 0.1,
        "analysis.corruptions.corrupted_dtype": "uint8",
        "analysis.attacks.norms": ("Linf",),
        "analysis.attacks.pgd_steps": 10,
        "analysis.attacks.autoattack": False,
    }
    augmentations = AUGMENTATIONS
    num_resamples = 2000
    if arg.smoke:
        overrides.update(
            {
                "train.num_steps": 6,
                "train.batch_size": 32,
                "log_every_steps": 3,
                "checkpoint.every_steps": 3,
                "dataset.num_train_examples": 512,
                "dataset.num_eval_examples": 128,
                "model.name": "cnn_tiny",
                "analysis.num_train_examples": 64,
                "analysis.num_test_examples": 64,
            }
        )
        augmentations = ("none", "standard", "cutout")
        num_resamples = 200
    return Sweep(
        base="../fashion_mnist_cnn.py",
        overrides=overrides,
        runs=[{"augment.name": name} for name in augmentations],
        title="Fashion-MNIST, small CNN: flatness vs robustness across augmentations",
        num_resamples=num_resamples,
    )
