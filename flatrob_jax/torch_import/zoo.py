"""The public robustness zoo this library imports: where each checkpoint lives, what it is,
and the accuracy its publisher reports for it.

An entry (``ZooEntry``) names one PyTorch checkpoint: its download URL, its checksum where one
is published, the import's architecture (``layouts.arch_names()``), the input normalization
the weights were trained with, the dataset, and the published clean and robust accuracy with
the threat model they were measured under (``Published``). ``get(name)`` and
``names(dataset=, threat_model=, arch=)`` look entries up; ``fetch.fetch_entry`` downloads
one into the cache; ``prepare_entry`` turns a fetched entry into what
``torch_import.workdir.write_workdir`` writes.

Sources (RobustBench at commit 78fcc9e of github.com/RobustBench/robustbench; torchvision's
``torchvision/models/resnet.py``):

- RobustBench CIFAR-10 ``corruptions`` and ``Linf`` zoos: the Google Drive ids in
  ``robustbench/model_zoo/cifar10.py``, architecture and normalization from the model classes
  there, clean / robust accuracy from ``model_info/cifar10/<threat>/<name>.json``
  (``clean_acc``; ``autoattack_acc`` at the JSON's ``eps`` for Linf, ``corruptions_acc``, the
  CIFAR-10-C accuracy over 15 corruptions x 5 severities, for corruptions).
- RobustBench CIFAR-100 ``corruptions`` zoo, its one entry of a supported layout so far
  (Hendrycks2020AugMix_WRN): ``robustbench/model_zoo/cifar100.py`` and
  ``model_info/cifar100/corruptions/<name>.json`` (``corruptions_acc``: CIFAR-100-C).
- RobustBench ImageNet ``corruptions`` zoo, its torchvision-layout ResNet-50s (and the one
  Wide ResNet-50-2): ``robustbench/model_zoo/imagenet.py`` and
  ``model_info/imagenet/corruptions/<name>.json`` (``corruptions_acc``: ImageNet-C). Their
  published numbers use RobustBench's 'Res256Crop224' preprocessing.
- torchvision ``ResNet50_Weights.IMAGENET1K_V1`` and ``IMAGENET1K_V2``: URL and ``acc@1``
  (ImageNet-1k validation; resize 256 resp. 232, centre crop 224).

Checksums: RobustBench publishes none, so its entries are verified trust-on-first-use (the
sha256 of the first download is recorded in the cache's lock file and every later fetch must
match it; see ``fetch``). torchvision's file names carry the first 8 hex digits of the file's
sha256 (torch.hub's convention), checked as a prefix.

Not in the catalogue (their layouts are not among the import's, ``layouts``), by zoo:

- CIFAR-10 corruptions: Diffenderfer2021Winning_LRR, _LRR_CARD_Deck, _Binary,
  _Binary_CARD_Deck (LRR / wide PreAct ResNets, ensembles); Rebuffi2021Fixing_70_16_cutmix_
  extra_Linf, _L2 (DeepMind's DMWideResNet layout, Swish); Hendrycks2020AugMix_ResNeXt
  (ResNeXt-29). Calian2021Defending, Erichson2022NoisyMix and the four
  Gowal2020Uncovering_70_16 corruption rows have results JSONs but no checkpoint in the model
  zoo.
- CIFAR-100 corruptions: Diffenderfer2021Winning_LRR, _LRR_CARD_Deck, _Binary,
  _Binary_CARD_Deck (as for CIFAR-10); Gowal2020Uncovering_Linf, _extra_Linf (DMWideResNet);
  Hendrycks2020AugMix_ResNeXt (ResNeXt-29). Not yet catalogued although their layouts are
  supported (their 100-class checkpoints and normalization not reviewed here):
  Addepalli2021Towards_PARN18, Addepalli2021Towards_WRN34, Modas2021PRIMEResNet18,
  Addepalli2022Efficient_WRN_34_10. Erichson2022NoisyMix has a results JSON but no checkpoint
  in the model zoo.
- CIFAR-10 Linf, DMWideResNet / DMPreActResNet layout (unsupported): Gowal2020Uncovering_70_16,
  _70_16_extra, _34_20, _28_10_extra; Rebuffi2021Fixing_28_10_cutmix_ddpm,
  _106_16_cutmix_ddpm, _70_16_cutmix_ddpm, _70_16_cutmix_extra, _R18_ddpm;
  Rade2021Helper_R18_extra, _R18_ddpm, _extra, _ddpm; Gowal2021Improving_70_16_ddpm_100m,
  _28_10_ddpm_100m, _R18_ddpm_100m; Pang2022Robustness_WRN28_10, _WRN70_16;
  Wang2023Better_WRN-28-10, _WRN-70-16; Xu2023Exploring_WRN-28-10; Cui2023Decoupled_WRN-28-10;
  Bartoldson2024Adversarial_WRN-94-16, _WRN-82-8.
- CIFAR-10 Linf, other layouts or widths: Andriushchenko2020Understanding and Wong2020Fast
  (PreAct ResNet-18 with the shortcut on the block input and no BN before the classifier);
  Rice2020Overfitting, Cui2020Learnable_34_20, Chen2021LTD_WRN34_20, Chen2024Data_WRN_34_20
  (WRN-34-20), Sridhar2021Robust_34_15 (WRN-34-15), Ding2020MMA (WRN-28-4, per-image
  normalization); Engstrom2019Robustness (CIFAR ResNet-50), Chen2020Adversarial (ensemble),
  Pang2020Boosting, Huang2021Exploring(_ema), Sehwag2021Proxy_ResNest152,
  Dai2021Parameterizing, Kang2021Stable, Debenedetti2022Light_XCiT-*, Huang2022Revisiting_WRN-A4,
  Bai2023Improving_edm, Peng2023Robust, Bai2024MixedNUTS, Amini2024MeanSparse_*.
- ImageNet corruptions: AlexNet, Tian2022Deeper_DeiT-S, _DeiT-B (timm models).
"""

from __future__ import annotations

import dataclasses
import os

from flatrob_jax.torch_import import layouts

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IDENTITY_MEAN, IDENTITY_STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
HALF = (0.5, 0.5, 0.5)  # x -> 2 x - 1

NO_CHECKSUM = "none published: verified trust-on-first-use against the cache's lock file"
ROBUSTBENCH_COMMIT = "78fcc9e"
GDRIVE_URL = "https://drive.google.com/uc?export=download&id={}"

CORRUPTIONS, LINF, NONE = "corruptions", "Linf", "none"
THREAT_MODELS = (CORRUPTIONS, LINF, NONE)


@dataclasses.dataclass(frozen=True)
class Published:
    """The accuracy the zoo publishes for a checkpoint (fractions in [0, 1]; None: unknown)."""

    clean_accuracy: float | None
    robust_accuracy: float | None
    threat_model: str  # 'corruptions', 'Linf' or 'none' (no robust accuracy published)
    eps: float | None  # the Linf radius of robust_accuracy (pixel scale), else None
    robust_measure: str  # what robust_accuracy is, in words
    source: str  # where the numbers are published
    note: str = ""


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str  # '<dataset>/<threat>/<model>' for RobustBench, 'torchvision/<weights enum>'
    url: str
    arch: str  # an ARCH of the import (layouts.arch_names())
    dataset: str  # a dataset of the import (workdir.dataset_names())
    mean: tuple | None  # input normalization; None: the checkpoint's own mu/sigma buffers
    std: tuple | None
    filename: str  # path of the file inside the cache directory
    published: Published
    sha256: str | None = None  # the full published sha256, where there is one
    sha256_prefix: str | None = None  # a published prefix of the sha256 (torchvision)
    state_dict_key: str | None = None  # the key the state_dict is stored under, if unusual
    note: str = ""

    @property
    def checksum(self) -> str:
        """How the downloaded file is verified, in words."""
        if self.sha256:
            return f"sha256 {self.sha256} (published)"
        if self.sha256_prefix:
            return (
                f"sha256 starting {self.sha256_prefix} (published in the file name); the "
                f"full digest is recorded on first download"
            )
        return NO_CHECKSUM


def _eps(text: str) -> float:
    """RobustBench's eps strings: '8/255' or '0.031'."""
    num, _, den = text.partition("/")
    return float(num) / float(den) if den else float(num)


def _robustbench(row) -> ZooEntry:
    dataset, threat, model, gdrive_id, arch, clean, robust, eps, norm, extra = row
    mean, std = norm
    source = f"RobustBench {ROBUSTBENCH_COMMIT}: model_info/{dataset}/{threat}/{model}.json"
    if threat == LINF:
        measure = f"AutoAttack (standard) accuracy at Linf eps={eps}"
    elif dataset == "cifar10":
        measure = "CIFAR-10-C accuracy, mean over 15 corruptions x 5 severities"
    elif dataset == "cifar100":
        measure = "CIFAR-100-C accuracy, mean over 15 corruptions x 5 severities"
    else:
        measure = "ImageNet-C accuracy, mean over 15 corruptions x 5 severities"
    note = extra.get("note", "")
    if dataset == "imagenet":
        note = "published with RobustBench's Res256Crop224 preprocessing. " + note
    return ZooEntry(
        name=f"{dataset}/{threat}/{model}",
        url=extra.get("url") or GDRIVE_URL.format(gdrive_id),
        arch=arch,
        dataset="imagenet2012" if dataset == "imagenet" else dataset,
        mean=mean,
        std=std,
        filename=extra.get("filename") or f"{dataset}/{threat}/{model}.pt",
        sha256_prefix=extra.get("sha256_prefix"),
        state_dict_key=extra.get("state_dict_key"),
        published=Published(
            clean_accuracy=float(clean) / 100,
            robust_accuracy=float(robust) / 100,
            threat_model=threat,
            eps=_eps(eps) if threat == LINF else None,
            robust_measure=measure,
            source=source,
            note=extra.get("footnote", ""),
        ),
        note=note.strip(),
    )


_IDENTITY = (IDENTITY_MEAN, IDENTITY_STD)
_CIFAR = (CIFAR10_MEAN, CIFAR10_STD)
_IMAGENET = (IMAGENET_MEAN, IMAGENET_STD)
_FROM_CHECKPOINT = (None, None)
_R18, _PRE, _W28, _W34, _W70, _W40 = (
    "resnet18_cifar",
    "preact_resnet18",
    "wrn_28_10",
    "wrn_34_10",
    "wrn_70_16",
    "wrn_40_2",
)
_EPS31 = {"footnote": "RobustBench: uses Linf = 0.031 (about 7.9/255) instead of 8/255"}
_SYNTH = {"footnote": "RobustBench: uses additional 10M synthetic images in training"}
# RobustBench's Kireev2021EffectivenessNet adds CIFAR-10 mean/std buffers that the checkpoint
# lacks; the checkpoint holds {'last': state_dict, 'best': ...} and RobustBench loads 'last'.
_KIREEV = {"state_dict_key": "last"}
# torchvision's ResNet50_Weights.IMAGENET1K_V1 file (torch.hub names carry a sha256 prefix).
_TV_V1_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
_TV_V2_URL = "https://download.pytorch.org/models/resnet50-11ad3fa6.pth"

# (dataset, threat, model, Google Drive id, ARCH, clean_acc %, robust acc %, eps,
#  (mean, std), extra). Values as in RobustBench's model_info JSONs.
_ROBUSTBENCH_ROWS = (
    # CIFAR-10 corruptions zoo
    ("cifar10", CORRUPTIONS, "Kireev2021Effectiveness_Gauss50percent",
     "1zR6lwYLkO3TFSgeqvu_CMYTq_IS-eicQ", _PRE, "93.24", "85.04", None, _CIFAR, _KIREEV),
    ("cifar10", CORRUPTIONS, "Kireev2021Effectiveness_AugMixNoJSD",
     "1p_1v1Oa-FSrjHTAq63QX4WtLYETkcbdH", _PRE, "94.97", "86.60", None, _CIFAR, _KIREEV),
    ("cifar10", CORRUPTIONS, "Kireev2021Effectiveness_RLAT",
     "16bCDA_5Rhr6qMKHRAO5W-4nu9_10kFyF", _PRE, "93.10", "84.10", None, _CIFAR, _KIREEV),
    ("cifar10", CORRUPTIONS, "Kireev2021Effectiveness_RLATAugMixNoJSD",
     "1hgJuvLPSVQMbUczn8qnIphONlJePsWgU", _PRE, "94.77", "88.53", None, _CIFAR, _KIREEV),
    # Its JSON says 'ResNet-18'; the model zoo builds it as Kireev2021EffectivenessNet (PreAct).
    ("cifar10", CORRUPTIONS, "Kireev2021Effectiveness_RLATAugMix",
     "19HNTdqJiuNyqFqIarPejniJEjZ3RQ_nj", _PRE, "94.75", "89.60", None, _CIFAR, _KIREEV),
    ("cifar10", CORRUPTIONS, "Standard",
     "1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC", _W28, "94.78", "73.46", None, _IDENTITY, {}),
    ("cifar10", CORRUPTIONS, "Addepalli2021Towards_WRN34",
     "1-3vgjTNfSq7LSMKuayEQ-jLflAP196dB", _W34, "85.32", "76.78", None, _IDENTITY, {}),
    # Modas2021PRIMEResNet18's mu/sigma buffers are learned with the weights.
    ("cifar10", CORRUPTIONS, "Modas2021PRIMEResNet18",
     "13oDyqi16FeXy5j4Vm6IghnjTVqp_XF5U", _R18, "93.06", "89.05", None, _FROM_CHECKPOINT, {}),
    ("cifar10", CORRUPTIONS, "Addepalli2022Efficient_WRN_34_10",
     "1--dVDtZhAk4D2zMtTDwIGnImuCGxTcBA", _W34, "88.71", "80.12", None, _IDENTITY, {}),
    # AugMix's own WRN-40-2 (Hendrycks2020AugMixWRNNet): trained on 2 x - 1 inputs; RobustBench
    # adds them as mu/sigma buffers of 0.5 that the checkpoint lacks (loaded non-strictly).
    ("cifar10", CORRUPTIONS, "Hendrycks2020AugMix_WRN",
     "1wy7gSRsUZzCzj8QhmTbcnwmES_2kkNph", _W40, "95.08", "88.82", None, (HALF, HALF), {}),
    # CIFAR-10 Linf zoo, supported layouts
    ("cifar10", LINF, "Sehwag2021Proxy_R18",
     "1-ZgoSlD_AMhtXdnUElilxVXnzK2DcHuu", _R18, "84.59", "55.54", "8/255", _IDENTITY, _SYNTH),
    ("cifar10", LINF, "Addepalli2021Towards_RN18",
     "1-1DxecXz5U_xZ54DVdE-GVm71Tiox-Ri", _R18, "80.24", "51.06", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Addepalli2022Efficient_RN18",
     "1m5vhdzIUUKhDbsZdOG9z76Eyp6f4xe_f", _R18, "85.71", "52.48", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Carmon2019Unlabeled",
     "15tUx-gkZMYx7BfEOw1GY5OKC-jECIsPQ", _W28, "89.69", "59.53", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Sehwag2020Hydra",
     "1pi8GHwAVkxVH41hEnf0IAJb_7y-Q8a2Y", _W28, "88.98", "57.14", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Wang2020Improving",
     "1T939mU4kXYt5bbvM55aT4fLBvRhyzjiQ", _W28, "87.50", "56.29", "8/255", _IDENTITY, {}),
    # Hendrycks2019UsingNet feeds 2 x - 1 to the network.
    ("cifar10", LINF, "Hendrycks2019Using",
     "1-DcJsYw2dNEOyF9epks2QS7r9nqBDEsw", _W28, "87.11", "54.92", "8/255", (HALF, HALF), {}),
    ("cifar10", LINF, "Wu2020Adversarial_extra",
     "1-WJWpAZLlmc4gJ8XXNf7IETjnSZzaCNp", _W28, "88.25", "60.04", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Zhang2020Geometry",
     "1UoG1JhbAps1MdMc6PEFiZ2yVXl_Ii5Jk", _W28, "89.36", "59.64", "8/255", _IDENTITY, _EPS31),
    ("cifar10", LINF, "Sridhar2021Robust",
     "1muDMpOyRlgJ7n2rhS2NpfFGp3rzjuIu0", _W28, "89.46", "59.66", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Standard",
     "1t98aEuzeTL8P7Kpd5DIrCoCL21BNZUhC", _W28, "94.78", "0.0", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Zhang2019Theoretically",
     "1hPz9QQwyM7QSuWu-ANG_uXR-29xtL8t_", _W34, "84.92", "53.08", "0.031", _IDENTITY, _EPS31),
    ("cifar10", LINF, "Huang2020Self",
     "1nInDeIyZe2G-mJFxQJ3UoclQNomWjMgm", _W34, "83.48", "53.34", "0.031", _IDENTITY, _EPS31),
    ("cifar10", LINF, "Zhang2019You",
     "1kB2qqPQ8qUNmK8VKuTOhT1X4GT46kAoA", _W34, "87.20", "44.83", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Zhang2020Attacks",
     "1lBVvLG6JLXJgQP2gbsTxNHl6s3YAopqk", _W34, "84.52", "53.51", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Wu2020Adversarial",
     "13LBcgNvhFppCFG22i1xATrahFPfMgXGf", _W34, "85.36", "56.17", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Sehwag2021Proxy",
     "1QFA5fPMj2Qw4aYNG33PkFqiv_RTDWvzm", _W34, "86.68", "60.27", "8/255", _IDENTITY, _SYNTH),
    ("cifar10", LINF, "Sitawarin2020Improving",
     "12teknvo6dQGSWBaGnbNFwFO3-Y8j2eB6", _W34, "86.84", "50.72", "8/255", _IDENTITY, {}),
    # Chen2020EfficientNet normalizes with CIFAR-10 mean/std buffers the checkpoint lacks.
    ("cifar10", LINF, "Chen2020Efficient",
     "1c5EXpd3Kn_s6qQIbkLX3tTOOPC8VslHg", _W34, "85.32", "51.12", "8/255", _CIFAR, {}),
    ("cifar10", LINF, "Cui2020Learnable_34_10",
     "16s9pi_1QgMbFLISVvaVUiNfCzah6g2YV", _W34, "88.22", "52.86", "0.031", _IDENTITY, _EPS31),
    ("cifar10", LINF, "Addepalli2021Towards_WRN34",
     "1-3vgjTNfSq7LSMKuayEQ-jLflAP196dB", _W34, "85.32", "58.04", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Chen2021LTD_WRN34_10",
     "1-0RoQKYvHLNh7hZ71wJjSit1XtrJQo9D", _W34, "85.21", "56.94", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Jia2022LAS-AT_34_10",
     "1-3l7xKhIPyes3O4QSz0HU6L-hfOoS0xD", _W34, "84.98", "56.26", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Jia2022LAS-AT_70_16",
     "1-4p-Gr0hjl8wq6qvvTza4x4a5Rmu-Bfr", _W70, "85.66", "57.61", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Addepalli2022Efficient_WRN_34_10",
     "1--dVDtZhAk4D2zMtTDwIGnImuCGxTcBA", _W34, "88.71", "57.81", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Cui2023Decoupled_WRN-34-10",
     "1-ArD-TugRXUbH3VtM9qnzvby6NvdXNUN", _W34, "85.31", "57.09", "8/255", _IDENTITY, {}),
    ("cifar10", LINF, "Chen2024Data_WRN_34_10",
     "1-AzyMQaoUuwxec6O_Yri5OVtVqnNgR4R", _W34, "86.54", "57.30", "8/255", _IDENTITY, {}),
    # CIFAR-100 corruptions zoo (its JSON says "dataset": "cifar10"; the model zoo's
    # cifar100.py builds it with num_classes=100, as above otherwise)
    ("cifar100", CORRUPTIONS, "Hendrycks2020AugMix_WRN",
     "1XpFFdCdU9LcDtcyNfo6_BV1RZHKKkBVE", _W40, "76.28", "64.11", None, (HALF, HALF), {}),
    # ImageNet corruptions zoo: torchvision ResNet-50s (and one Wide ResNet-50-2)
    ("imagenet", CORRUPTIONS, "Erichson2022NoisyMix",
     "1wFsiB5h4Fgv6HqOkI_1jR1SZOB_eNK9r", "resnet50", "76.98", "52.47", None, _IMAGENET,
     {"footnote": "RobustBench: basic model"}),
    ("imagenet", CORRUPTIONS, "Erichson2022NoisyMix_new",
     "1Na79fzPZ0Azg01h6kGn1Xu5NoWOElSuG", "resnet50", "76.9", "53.28", None, _IMAGENET,
     {"footnote": "RobustBench: better tuned model"}),
    ("imagenet", CORRUPTIONS, "Geirhos2018_SIN",
     "1hLgeY_rQIaOT4R-t_KyOqPNkczfaedgs", "resnet50", "60.08", "39.92", None, _IMAGENET,
     {"footnote": "RobustBench: model A, trained on Stylized ImageNet"}),
    ("imagenet", CORRUPTIONS, "Geirhos2018_SIN_IN",
     "139pWopDnNERObZeLsXUysRcLg6N1iZHK", "resnet50", "74.98", "45.76", None, _IMAGENET,
     {"footnote": "RobustBench: model B, Stylized ImageNet + ImageNet"}),
    ("imagenet", CORRUPTIONS, "Geirhos2018_SIN_IN_IN",
     "1xOvyuxpOZ8I5CZOi0EGYG_R6tu3ZaJdO", "resnet50", "77.56", "42.0", None, _IMAGENET,
     {"footnote": "RobustBench: model C, B fine-tuned on ImageNet"}),
    ("imagenet", CORRUPTIONS, "Hendrycks2020Many",
     "1kylueoLtYtxkpVzoOA1B6tqdbRl2xt9X", "resnet50", "76.86", "52.9", None, _IMAGENET, {}),
    ("imagenet", CORRUPTIONS, "Hendrycks2020AugMix",
     "1xRMj1GlO93tLoCMm0e5wEvZwqhIjxhoJ", "resnet50", "77.34", "49.33", None, _IMAGENET, {}),
    ("imagenet", CORRUPTIONS, "Salman2020Do_50_2_Linf",
     "1OT7xaQYljrTr3vGbM37xK9SPoPJvbSKB", "wide_resnet50_2", "68.64", "36.09", None, _IMAGENET,
     {}),
    # RobustBench loads torchvision's resnet50(pretrained=True) for it: the V1 file.
    ("imagenet", CORRUPTIONS, "Standard_R50",
     "", "resnet50", "76.72", "39.48", None, _IMAGENET,
     {"url": _TV_V1_URL, "filename": "torchvision/resnet50-0676ba61.pth",
      "sha256_prefix": "0676ba61",
      "note": "the weights of torchvision's ResNet50_Weights.IMAGENET1K_V1."}),
)  # fmt: skip


def _torchvision(name, url, prefix, acc1, preprocessing) -> ZooEntry:
    return ZooEntry(
        name=f"torchvision/{name}",
        url=url,
        arch="resnet50",
        dataset="imagenet2012",
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        filename=f"torchvision/{url.rsplit('/', 1)[-1]}",
        sha256_prefix=prefix,
        published=Published(
            clean_accuracy=acc1 / 100,
            robust_accuracy=None,
            threat_model=NONE,
            eps=None,
            robust_measure="none published",
            source="torchvision torchvision/models/resnet.py (acc@1, ImageNet-1k val)",
            note=f"torchvision evaluates with {preprocessing}",
        ),
    )


_TORCHVISION = (
    _torchvision(
        "ResNet50_Weights.IMAGENET1K_V1", _TV_V1_URL, "0676ba61", 76.130, "resize 256, crop 224"
    ),
    _torchvision(
        "ResNet50_Weights.IMAGENET1K_V2", _TV_V2_URL, "11ad3fa6", 80.858, "resize 232, crop 224"
    ),
)

ENTRIES = {e.name: e for e in (*map(_robustbench, _ROBUSTBENCH_ROWS), *_TORCHVISION)}


def get(name: str) -> ZooEntry:
    """The entry called ``name``, or KeyError listing the known names."""
    if name not in ENTRIES:
        raise KeyError(f"unknown zoo entry {name!r}; known entries: {', '.join(sorted(ENTRIES))}")
    return ENTRIES[name]


def names(*, dataset: str | None = None, threat_model: str | None = None, arch=None) -> list:
    """Entry names in catalogue order, filtered by dataset, published threat model
    (``THREAT_MODELS``) and architecture (an ARCH or a tuple of them)."""
    if threat_model is not None and threat_model not in THREAT_MODELS:
        raise ValueError(f"unknown threat model {threat_model!r}; valid: {THREAT_MODELS}")
    archs = (arch,) if isinstance(arch, str) else arch
    return [
        e.name
        for e in ENTRIES.values()
        if (dataset is None or e.dataset == dataset)
        and (threat_model is None or e.published.threat_model == threat_model)
        and (archs is None or e.arch in archs)
    ]


def check_catalogue() -> None:
    """Every entry names a known ARCH and dataset and has a sane published record."""
    from flatrob_jax.torch_import.workdir import dataset_names

    for e in ENTRIES.values():
        layouts.get_arch(e.arch)
        if e.dataset not in dataset_names():
            raise ValueError(f"{e.name}: dataset {e.dataset!r} is not one of {dataset_names()}")
        if (e.mean is None) != (e.std is None):
            raise ValueError(f"{e.name}: give mean and std together")
        p = e.published
        for v in (p.clean_accuracy, p.robust_accuracy):
            if v is not None and not 0.0 <= v <= 1.0:
                raise ValueError(f"{e.name}: published accuracy {v} is not a fraction")
        if (p.threat_model == LINF) != (p.eps is not None):
            raise ValueError(f"{e.name}: a Linf robust accuracy needs its eps (and only it)")


def prepare_entry(entry: ZooEntry, path: str):
    """``workdir.prepare_import`` for the fetched file ``path`` of ``entry``: its ARCH,
    dataset and normalization, the state_dict under ``entry.state_dict_key`` if it has one;
    returns ``(config, variables, provenance)`` with the zoo entry in the provenance."""
    from flatrob_jax.torch_import import loading, workdir

    weights = os.fspath(path)
    if entry.state_dict_key is not None:
        weights = _nested_state_dict(weights, entry.state_dict_key)
    config, variables, provenance = workdir.prepare_import(
        entry.arch, weights, entry.dataset, mean=entry.mean, std=entry.std
    )
    if entry.state_dict_key is not None:  # prepare_import saw a dict: name the file
        provenance["source"] = os.fspath(path)
        provenance["sha256"] = loading.sha256_of(os.fspath(path))
        provenance["state_dict_key"] = entry.state_dict_key
    provenance["zoo_entry"] = entry.name
    provenance["zoo_url"] = entry.url
    provenance["zoo_checksum"] = entry.checksum
    provenance["published"] = dataclasses.asdict(entry.published)
    return config, variables, provenance


def import_entry(name: str, workdir: str, *, cache_dir: str | None = None, log=print) -> dict:
    """Fetch the zoo entry ``name`` into the cache (``fetch.fetch_entry``) and import it into
    the new run directory ``workdir``; returns the provenance record. The file stays in the
    cache, so a failed import (say, into an existing workdir) downloads nothing again."""
    import datetime

    from flatrob_jax.torch_import import fetch
    from flatrob_jax.torch_import import workdir as import_workdir

    entry = get(name)
    path = fetch.fetch_entry(entry, cache_dir, log=log)
    config, variables, provenance = prepare_entry(entry, path)
    provenance["imported_at"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
        timespec="seconds"
    )
    import_workdir.write_workdir(workdir, config, variables, provenance)
    return provenance


def _nested_state_dict(path: str, key: str) -> dict:
    """The state_dict stored under ``key`` of the checkpoint dict in ``path``."""
    import io

    from flatrob_jax import fileio
    from flatrob_jax.torch_import import loading

    torch = loading.require_torch()
    obj = torch.load(io.BytesIO(fileio.read_bytes(path)), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or key not in obj:
        found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"weights file {path!r}: expected a dict with key {key!r}; found {found}")
    return loading.unwrap(obj[key], torch, f"{path!r}[{key!r}]")
