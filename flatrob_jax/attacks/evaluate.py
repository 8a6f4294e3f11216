"""Adversarial evaluation of a checkpoint for the analysis entry point.

``evaluate(eval_model, data, cfg, *, key, log)`` runs, for each configured threat model
(Linf at ``cfg.linf_eps``, default 8/255, and L2 at ``cfg.l2_eps``, default 0.5): clean
accuracy, PGD-``cfg.pgd_steps`` and (if ``cfg.autoattack``) the AutoAttack cascade, and returns
JSON-serialisable accuracies and errors with their binomial standard errors
``sqrt(p (1 - p) / n)``.  Robust accuracy counts an example as robust only if it is clean-
correct and the attack failed.
"""
from __future__ import annotations

import functools
import time
from typing import Callable

import jax
import ml_collections
import numpy as np

from flatrob_jax.attacks import runner
from flatrob_jax.attacks.autoattack import autoattack, predict
from flatrob_jax.attacks.norms import NORMS
from flatrob_jax.attacks.pgd import pgd


def default_config() -> ml_collections.ConfigDict:
    """Every field ``evaluate`` reads, with its default."""
    cfg = ml_collections.ConfigDict()
    cfg.num_examples = 1000          # first examples of the split; 0 = all
    cfg.batch_size = 500             # fixed global batch (rounded up to the device count)
    cfg.num_devices = 0              # 0 = all devices
    cfg.norms = ("Linf", "L2")       # threat models to evaluate
    cfg.linf_eps = 8 / 255
    cfg.l2_eps = 0.5
    cfg.pgd_steps = 20
    cfg.pgd_rel_step_size = 0.25     # PGD step = pgd_rel_step_size * eps (2/255 at 8/255)
    cfg.pgd_restarts = 1
    cfg.pgd_loss = "ce"              # 'ce' or 'margin'
    cfg.autoattack = True
    cfg.autoattack_version = "standard"
    return cfg


def _apply_eval(model, variables, x):
    return model.apply(variables, x, train=False)


def model_apply_fn(eval_model) -> Callable:
    """``x -> logits`` of an object with ``.model`` and ``.variables`` (BatchNorm in eval
    mode), as a ``jax.tree_util.Partial`` so the weights are arguments of compiled attacks;
    a callable is returned unchanged."""
    if hasattr(eval_model, "model") and hasattr(eval_model, "variables"):
        return jax.tree_util.Partial(functools.partial(_apply_eval, eval_model.model),
                                     eval_model.variables)
    if callable(eval_model):
        return eval_model
    raise TypeError("eval_model must have .model and .variables, or be a callable x -> logits; "
                    f"got {type(eval_model).__name__}")


def _split_data(data):
    if isinstance(data, dict):
        missing = [k for k in ("images", "labels") if k not in data]
        if missing:
            raise ValueError(f"data dict lacks {missing}; expected keys 'images' and 'labels'")
        return data["images"], data["labels"]
    images, labels = data
    return images, labels


def _accuracy_entry(correct: np.ndarray) -> dict:
    n = int(correct.shape[0])
    acc = float(correct.mean())
    stderr = float(np.sqrt(acc * (1 - acc) / n))
    return {"accuracy": acc, "error": 1.0 - acc, "stderr": stderr, "num_examples": n}


def evaluate(eval_model, data, cfg: ml_collections.ConfigDict, *, key: jax.Array,
             log: Callable[[str], None] = print) -> dict:
    """Clean, PGD and AutoAttack accuracy of ``eval_model`` on ``data = (images, labels)``.

    Returns ``{'clean': {...}, 'Linf': {'eps', 'pgd': {...}, 'autoattack': {...}}, 'L2': ...}``
    where each leaf dict holds ``accuracy``, ``error``, ``stderr``, ``num_examples`` (the
    AutoAttack entry also per-attack cumulative accuracies, times and sanity checks).
    """
    for norm in cfg.norms:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r} in cfg.norms; allowed: {NORMS}")
    if cfg.pgd_steps < 1:
        raise ValueError(f"cfg.pgd_steps must be >= 1, got {cfg.pgd_steps}")
    images, labels = _split_data(data)
    if cfg.num_examples:
        images, labels = images[: cfg.num_examples], labels[: cfg.num_examples]
    images = np.asarray(images, np.float32)
    labels = np.asarray(labels, np.int32)
    apply_fn = model_apply_fn(eval_model)
    mesh = runner.default_mesh(cfg.num_devices or None)
    bs = cfg.batch_size

    _, pred = predict(apply_fn, images, batch_size=bs, mesh=mesh)
    clean_correct = pred == labels
    results = {"clean": _accuracy_entry(clean_correct)}
    log(f"clean accuracy {results['clean']['accuracy']:.2%} on {labels.shape[0]} examples")
    for i, norm in enumerate(cfg.norms):
        eps = float(cfg.linf_eps if norm == "Linf" else cfg.l2_eps)
        k = jax.random.fold_in(runner.typed_key(key), i)
        entry = {"eps": eps}
        t0 = time.perf_counter()
        x_adv = pgd(apply_fn, images, labels, jax.random.fold_in(k, 0), eps=eps, norm=norm,
                    steps=cfg.pgd_steps, step_size=cfg.pgd_rel_step_size * eps,
                    restarts=cfg.pgd_restarts, loss=cfg.pgd_loss, batch_size=bs, mesh=mesh,
                    log=log)
        _, pred_adv = predict(apply_fn, x_adv, batch_size=bs, mesh=mesh)
        entry["pgd"] = dict(_accuracy_entry(clean_correct & (pred_adv == labels)),
                            steps=cfg.pgd_steps, step_size=cfg.pgd_rel_step_size * eps,
                            restarts=cfg.pgd_restarts, loss=cfg.pgd_loss,
                            time_s=time.perf_counter() - t0)
        log(f"{norm} eps={eps:.5f}: PGD-{cfg.pgd_steps} accuracy {entry['pgd']['accuracy']:.2%}")
        if cfg.autoattack:
            t0 = time.perf_counter()
            res = autoattack(apply_fn, images, labels, jax.random.fold_in(k, 1), eps=eps,
                             norm=norm, version=cfg.autoattack_version, batch_size=bs, mesh=mesh,
                             log=log)
            aa = res.to_dict()
            aa.update(_accuracy_entry(res.robust))
            aa["version"] = cfg.autoattack_version
            aa["time_s_total"] = time.perf_counter() - t0
            entry["autoattack"] = aa
        results[norm] = entry
    return results
