"""Adversarial evaluation of a checkpoint for the analysis entry point.

``evaluate(apply_fn, data, *, key, log, **settings)`` runs, for each threat model of
``norms`` (Linf at ``linf_eps``, default 8/255, and L2 at ``l2_eps``, default 0.5): clean
accuracy, PGD-``pgd_steps`` and (if ``autoattack``) the AutoAttack cascade, and returns
JSON-serialisable accuracies and errors with their binomial standard errors
``sqrt(p (1 - p) / n)``.  Robust accuracy counts an example as robust only if it is clean-
correct and the attack failed.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import numpy as np

from flatrob_jax import execution
from flatrob_jax.attacks.autoattack import autoattack as run_autoattack
from flatrob_jax.attacks.autoattack import predict
from flatrob_jax.attacks.norms import NORMS
from flatrob_jax.attacks.pgd import pgd
from flatrob_jax.execution import Execution


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


def threat_name(norm: str, eps: float) -> str:
    """The results key of a threat model, its norm and radius: Linf as ``'Linf_8over255'``
    when 255 eps is a whole number, else ``'Linf_0.0123'``; L2 as ``'L2_0.5'``."""
    k = float(eps) * 255
    if norm == "Linf" and abs(k - round(k)) < 1e-6:
        return f"{norm}_{round(k)}over255"
    return f"{norm}_{float(eps):.4g}"


def evaluate(
    apply_fn,
    data,
    *,
    key: jax.Array,
    log: Callable[[str], None] = print,
    num_examples: int | None = 1000,
    batch_size: int = 500,
    num_devices: int | None = None,
    norms: tuple[str, ...] = ("Linf", "L2"),
    linf_eps: float = 8 / 255,
    l2_eps: float = 0.5,
    extra_linf_eps: tuple = (),
    pgd_steps: int = 20,
    pgd_rel_step_size: float = 0.25,
    pgd_restarts: int = 1,
    pgd_loss: str = "ce",
    autoattack: bool = True,
    autoattack_version: str = "standard",
) -> dict:
    """Clean, PGD and AutoAttack accuracy of a model on ``data = (images, labels)``.

    Args:
      apply_fn: the model: ``x -> logits``, a ``jax.tree_util.Partial`` or an object with
        ``.model`` and ``.variables`` (``execution.as_model_fn``).
      data: ``(images float32 [N, H, W, C] in [0, 1], int labels [N])`` or a dict with
        ``'images'`` and ``'labels'``.
      key: PRNG key; threat model ``i`` uses ``fold_in(key, i)``, its PGD ``fold_in(., 0)``
        and its AutoAttack ``fold_in(., 1)``.
      log: progress and result lines.
      num_examples: the first examples of ``data``; None: all.
      batch_size: fixed global batch (rounded up to the device count).
      num_devices: devices of the mesh; None: all.
      norms: threat models, ``'Linf'`` (at ``linf_eps``) and/or ``'L2'`` (at ``l2_eps``).
      extra_linf_eps: further Linf radii, each attacked like the first (PGD, and AutoAttack
        if on); every threat model is reported under :func:`threat_name`, its norm and
        radius (``'Linf_8over255'``, ``'L2_0.5'``, ``'Linf_2over255'`` for 2/255); the
        ``j``-th uses ``fold_in(key, 100 + j)``, so the other threat models keep their keys.
      pgd_steps, pgd_rel_step_size, pgd_restarts, pgd_loss: PGD with step
        ``pgd_rel_step_size * eps`` and loss ``'ce'`` or ``'margin'``.
      autoattack, autoattack_version: also run the AutoAttack cascade (``'standard'``).

    Returns ``{'clean': {...}, 'Linf_8over255': {'eps', 'pgd': {...}, 'autoattack': {...}},
    'L2_0.5': ..., 'Linf_2over255': ...}`` (at the default radii)
    where each leaf dict holds ``accuracy``, ``error``, ``stderr``, ``num_examples`` (the
    AutoAttack entry also per-attack cumulative accuracies, times and sanity checks).
    """
    threats = _threat_models(norms, linf_eps, l2_eps, extra_linf_eps)
    if pgd_steps < 1:
        raise ValueError(f"pgd_steps must be >= 1, got {pgd_steps}")
    execution.check_count("num_examples", num_examples)
    how = Execution(batch_size=batch_size, num_devices=num_devices, log=log)
    images, labels = _split_data(data)
    images = np.asarray(images, np.float32)[:num_examples]
    labels = np.asarray(labels, np.int32)[:num_examples]
    apply_fn = execution.as_model_fn(apply_fn)

    _, pred = predict(apply_fn, images, execution=how)
    clean_correct = pred == labels
    results = {"clean": _accuracy_entry(clean_correct)}
    log(f"clean accuracy {results['clean']['accuracy']:.2%} on {labels.shape[0]} examples")
    pgd_settings = dict(
        steps=pgd_steps, rel_step_size=pgd_rel_step_size, restarts=pgd_restarts, loss=pgd_loss
    )
    for norm, eps, index, name in threats:
        k = jax.random.fold_in(execution.typed_key(key), index)
        entry = {"eps": eps}
        entry["pgd"] = _pgd_entry(
            apply_fn,
            images,
            labels,
            clean_correct,
            jax.random.fold_in(k, 0),
            norm=norm,
            eps=eps,
            execution=how,
            **pgd_settings,
        )
        log(f"{name} eps={eps:.5f}: PGD-{pgd_steps} accuracy {entry['pgd']['accuracy']:.2%}")
        if autoattack:
            entry["autoattack"] = _autoattack_entry(
                apply_fn,
                images,
                labels,
                jax.random.fold_in(k, 1),
                norm=norm,
                eps=eps,
                version=autoattack_version,
                execution=how,
            )
        results[name] = entry
    return results


def _threat_models(norms, linf_eps, l2_eps, extra_linf_eps) -> list[tuple[str, float, int, str]]:
    """``(norm, eps, key index, results name)`` of each threat model, checked."""
    norms = (norms,) if isinstance(norms, str) else tuple(norms)
    extra_linf_eps = (extra_linf_eps,) if np.ndim(extra_linf_eps) == 0 else tuple(extra_linf_eps)
    for eps in (linf_eps, *extra_linf_eps):
        if not (isinstance(eps, (int, float, np.floating)) and 0 < eps <= 1):
            raise ValueError(f"Linf radius {eps!r}: must be a number in (0, 1] (pixel scale)")
    for norm in norms:
        if norm not in NORMS:
            raise ValueError(f"unknown norm {norm!r} in norms; allowed: {NORMS}")
    threats = [
        (norm, eps, i, threat_name(norm, eps))
        for i, norm in enumerate(norms)
        for eps in [float(linf_eps if norm == "Linf" else l2_eps)]
    ]
    threats += [
        ("Linf", float(eps), 100 + j, threat_name("Linf", eps))
        for j, eps in enumerate(extra_linf_eps)
    ]
    names = [t[3] for t in threats]
    if len(set(names)) != len(names):
        raise ValueError(f"two threat models have the same name: {names}")
    return threats


def _pgd_entry(
    apply_fn,
    images,
    labels,
    clean_correct,
    key,
    *,
    norm: str,
    eps: float,
    steps: int,
    rel_step_size: float,
    restarts: int,
    loss: str,
    execution: Execution,
) -> dict:
    """PGD accuracy (robust only where clean-correct) with its settings and time."""
    t0 = time.perf_counter()
    x_adv = pgd(
        apply_fn,
        images,
        labels,
        key,
        eps=eps,
        norm=norm,
        steps=steps,
        step_size=rel_step_size * eps,
        restarts=restarts,
        loss=loss,
        execution=execution,
    )
    _, pred_adv = predict(apply_fn, x_adv, execution=execution)
    return dict(
        _accuracy_entry(clean_correct & (pred_adv == labels)),
        steps=steps,
        step_size=rel_step_size * eps,
        restarts=restarts,
        loss=loss,
        time_s=time.perf_counter() - t0,
    )


def _autoattack_entry(
    apply_fn, images, labels, key, *, norm: str, eps: float, version: str, execution: Execution
) -> dict:
    """The AutoAttack cascade's summary with its accuracy entry and total time."""
    t0 = time.perf_counter()
    res = run_autoattack(
        apply_fn, images, labels, key, eps=eps, norm=norm, version=version, execution=execution
    )
    aa = res.to_dict()
    aa.update(_accuracy_entry(res.robust))
    aa["version"] = version
    aa["time_s_total"] = time.perf_counter() - t0
    return aa
