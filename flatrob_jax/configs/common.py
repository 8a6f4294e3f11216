"""What every experiment config starts from: ``base_config()`` defines every field once, with
its default and what it means; an experiment file changes only what makes it different.

Vocabulary: None means "all" (devices, examples) or "not at all" (periodic evaluation or
checkpoints) and is declared with ``placeholder(int)``, so ``--config.num_devices=2`` still
type-checks; lists are tuples; yes/no fields are bool.
"""

import ml_collections
from ml_collections.config_dict import placeholder

from flatrob_jax import configuration
from flatrob_jax.analysis.config import default_config as analysis_config
from flatrob_jax.augment import default_config as augment_config
from flatrob_jax.data.catalog import get_info

FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"  # Debian's dataset-fashion-mnist


def parse(arg: str | None) -> ml_collections.ConfigDict:
    """The argument every experiment config takes (``x.py:smoke,seed=1``): ``smoke`` shrinks
    the run to a few steps on a few examples (seconds on a CPU), ``seed`` sets ``config.seed``."""
    return configuration.parse_arg(arg, smoke=False, seed=0)


def set_dataset(c: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Name the dataset and take its image size and normalization from the data catalog
    (``flatrob_jax.data.catalog``, the one place they are written down)."""
    info = get_info(name)
    c.dataset.name = name
    c.dataset.image_size = info.image_shape
    c.dataset.mean = info.mean
    c.dataset.std = info.std
    return c


def base_config() -> ml_collections.ConfigDict:
    """Every field the trainer, the analysis and the sweeps read, with its default."""
    c = ml_collections.ConfigDict()
    c.seed = 0  # parameters, batch order and augmentation keys all derive from it
    c.num_devices = placeholder(int)  # None: every device; n: the first n (tests, benchmarks)

    default = get_info("fashion_mnist")
    c.dataset = ml_collections.ConfigDict()
    c.dataset.name = default.name  # a dataset of flatrob_jax.data.catalog; see set_dataset()
    c.dataset.source = "idx"  # 'idx' (local IDX files) or 'tfds' (tfds.data_source, no TF)
    # Where the files are; "" means the tfds default (TFDS_DATA_DIR or ~/tensorflow_datasets).
    c.dataset.data_dir = FASHION_MNIST_DIR
    # Fetch the data when it is missing (needs internet; Colab): source 'tfds' lets tfds
    # download and prepare it into data_dir, source 'idx' downloads the IDX files
    # (Fashion-MNIST) into data_dir and checks their SHA-256. False: a missing dataset fails
    # at once, naming the path and how to get it (offline machines, CI).
    c.dataset.download = False
    c.dataset.train_split = "train"
    c.dataset.eval_split = "test"
    c.dataset.image_size = default.image_shape  # (H, W, C) the model sees; from the catalog
    c.dataset.mean = default.mean  # per-channel normalization (the model's first layer)
    c.dataset.std = default.std  # ... both from the catalog, set by set_dataset()
    c.dataset.num_train_examples = placeholder(int)  # None: all; n: the first n (smoke, tests)
    c.dataset.num_eval_examples = placeholder(int)  # None: all; n: the first n

    c.model = ml_collections.ConfigDict()
    c.model.name = "cnn_small"  # a name of flatrob_jax.models.get_model
    c.model.dtype = "float32"  # compute dtype of the model ('bfloat16' on TPU)

    # Training augmentation: `name` picks one, each has its own section of parameters.
    c.augment = augment_config()

    c.optimizer = ml_collections.ConfigDict()
    c.optimizer.name = "sgd"  # SGD as torch.optim.SGD (decay added to the gradient)
    c.optimizer.learning_rate = 0.1  # peak learning rate (after warmup)
    c.optimizer.momentum = 0.9
    c.optimizer.nesterov = True
    c.optimizer.weight_decay = 5e-4
    c.optimizer.warmup_epochs = 0.0  # linear warmup from 0 over this many epochs
    c.optimizer.schedule = "cosine"  # 'cosine' (to 0 at the last step) or 'constant'
    # Sharpness-aware minimization (Foret et al. 2021): radius of the ascent step; 0.0 = off.
    # Each step then costs two forward/backward passes (training/optimizer.py).
    c.optimizer.sam_rho = 0.0
    c.optimizer.sam_adaptive = False  # True: adaptive SAM (ASAM, Kwon et al.), ascent x |w|
    c.optimizer.sam_eta = 0.01  # ASAM: T = |w| + eta (keeps zero weights perturbable)

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 128  # global batch, split over devices and processes
    c.train.eval_batch_size = 1000  # global batch of the test-set evaluation
    c.train.num_epochs = 10.0  # training length, unless num_steps is set
    c.train.num_steps = placeholder(int)  # None: derived from num_epochs; n: exactly n steps
    c.train.label_smoothing = 0.0
    # A matched end point: stop at the first logged step whose mean training loss (over the
    # log_every_steps steps before it) is <= this value, instead of at num_steps (the run is
    # then finished, with summary.json's stopped_at). None: train the full length.
    c.train.stop_at_loss = placeholder(float)
    # Warm start: a run workdir whose latest params + BatchNorm statistics initialize this run
    # (step, optimizer state and schedule start fresh); '' = random init. Resuming from this
    # run's own checkpoint takes precedence.
    c.train.init_from = ""

    c.log_every_steps = 100  # training metrics (loss, accuracy, steps/s) every n steps
    c.eval_every_steps = placeholder(int)  # None: evaluate only at the end; n: every n steps
    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = placeholder(int)  # None: only the final one; n: every n steps
    c.checkpoint.every_steps = 500
    c.checkpoint.max_to_keep = 2  # older checkpoints are deleted once a newer one is complete

    # What `python -m flatrob_jax.analyze` and the sweeps measure on the trained checkpoint.
    c.analysis = analysis_config()
    return c


def shrink_for_smoke(
    c,
    *,
    batch_size: int,
    num_train_examples: int,
    num_eval_examples: int,
    num_steps: int,
    checkpoint_every_steps: int | None = None,
):
    """The ``smoke`` argument of every config: the same model and pipeline, a few steps on
    the first examples, so a whole run takes seconds on a CPU."""
    c.dataset.num_train_examples = num_train_examples
    c.dataset.num_eval_examples = num_eval_examples
    c.train.batch_size = batch_size
    c.train.eval_batch_size = batch_size * 2 if num_eval_examples >= 2 * batch_size else batch_size
    c.train.num_steps = num_steps
    c.optimizer.warmup_epochs = 0.0
    c.log_every_steps = max(1, num_steps // 2)
    c.eval_every_steps = None
    c.checkpoint.every_steps = checkpoint_every_steps
    return c
