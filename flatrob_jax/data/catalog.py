"""What the library knows about each dataset: classes, shape, normalization statistics and
where its examples come from."""

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    image_shape: tuple  # (H, W, C) after preprocessing
    mean: tuple
    std: tuple
    tfds_name: str | None  # the tfds builder name (None: local files only)
    sources: tuple  # the source kinds that can provide it
    how_to_get: str


_CIFAR_HOW = (
    'build it once where there is internet: `python -c "import tensorflow_datasets as '
    "tfds; tfds.builder('{name}', data_dir='DATA_DIR').download_and_prepare("
    "file_format='array_record')\"`, then copy DATA_DIR here and set "
    "--config.dataset.data_dir=DATA_DIR"
)

CATALOG = {
    "fashion_mnist": DatasetInfo(
        "fashion_mnist",
        10,
        (28, 28, 1),
        (0.2860,),
        (0.3530,),
        "fashion_mnist",
        ("idx", "tfds"),
        "on Debian/Ubuntu: `apt-get install dataset-fashion-mnist` (IDX files in "
        "/usr/share/datasets/fashion-mnist/), or download the four *-ubyte.gz files from "
        "the Fashion-MNIST repository into the data_dir; for source='tfds' see cifar10",
    ),
    "mnist": DatasetInfo(
        "mnist",
        10,
        (28, 28, 1),
        (0.1307,),
        (0.3081,),
        "mnist",
        ("idx", "tfds"),
        "download the four MNIST *-ubyte.gz IDX files into the data_dir",
    ),
    "cifar10": DatasetInfo(
        "cifar10",
        10,
        (32, 32, 3),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "cifar10",
        ("tfds",),
        _CIFAR_HOW.format(name="cifar10"),
    ),
    "cifar100": DatasetInfo(
        "cifar100",
        100,
        (32, 32, 3),
        (0.5071, 0.4865, 0.4409),
        (0.2673, 0.2564, 0.2762),
        "cifar100",
        ("tfds",),
        _CIFAR_HOW.format(name="cifar100"),
    ),
    "cifar10_corrupted": DatasetInfo(
        "cifar10_corrupted",
        10,
        (32, 32, 3),
        (0.4914, 0.4822, 0.4465),
        (0.2470, 0.2435, 0.2616),
        "cifar10_corrupted",
        ("tfds",),
        _CIFAR_HOW.format(name="cifar10_corrupted/<corruption>_<severity>"),
    ),
    "imagenet2012": DatasetInfo(
        "imagenet2012",
        1000,
        (224, 224, 3),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        "imagenet2012",
        ("tfds",),
        "place ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in DATA_DIR/downloads/manual "
        "and run tfds.builder('imagenet2012', data_dir=DATA_DIR).download_and_prepare("
        "file_format='array_record')",
    ),
    "imagenet2012_corrupted": DatasetInfo(
        "imagenet2012_corrupted",
        1000,
        (224, 224, 3),
        (0.485, 0.456, 0.406),
        (0.229, 0.224, 0.225),
        "imagenet2012_corrupted",
        ("tfds",),
        "prepare tfds 'imagenet2012_corrupted/<corruption>_<severity>' (needs imagenet2012's "
        "validation tar in DATA_DIR/downloads/manual)",
    ),
}


def get_info(name: str) -> DatasetInfo:
    """Dataset info by name; a tfds config suffix ('cifar10_corrupted/fog_3') is allowed."""
    base = name.split("/")[0]
    if base not in CATALOG:
        raise ValueError(f"unknown dataset {name!r}; valid choices: {', '.join(sorted(CATALOG))}")
    return CATALOG[base]
