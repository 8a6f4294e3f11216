"""Analyze trained runs: clean error, flatness (on clean and on augmented training data),
corruption error and adversarial error of a checkpoint, written to ``workdir/analysis.json``.

    python -m flatrob_jax.analyze --workdir DIR [--workdir DIR2 ...] \
        [--set analysis.attacks.autoattack=True ...]

The analysis settings are the run config's ``analysis`` section (``default_config()`` below);
``--set`` overrides them for this analysis only. ``analyze_run`` is the importable core the
sweep calls.
"""
import json
import os
import time

import jax
import ml_collections
import numpy as np

from flatrob_jax import checkpoint as ckpt_lib
from flatrob_jax.atomic_files import atomic_write_text

MEASURES = ("clean", "curvature", "curvature_augmented", "corruptions", "attacks")


def default_config() -> ml_collections.ConfigDict:
    """Every analysis field (the ``analysis`` section of a run config)."""
    from flatrob_jax.attacks import evaluate as attacks_eval
    from flatrob_jax.corruptions import evaluate as corruptions_eval
    from flatrob_jax.curvature import evaluate as curvature_eval

    return ml_collections.ConfigDict({
        "measures": "clean,curvature,curvature_augmented,corruptions,attacks",
        "seed": 0,
        "num_train_examples": 2000,  # flatness: the first n training examples (-1: all)
        "num_test_examples": 1000,  # clean / corruption / attack error: first n test (-1: all)
        "curvature": curvature_eval.default_config(),
        "corruptions": corruptions_eval.default_config(),
        "attacks": attacks_eval.default_config(),
    })


def parse_measures(spec: str) -> list:
    measures = [m.strip() for m in spec.split(",") if m.strip()]
    bad = [m for m in measures if m not in MEASURES]
    if bad:
        raise ValueError(f"unknown analysis measure(s) {bad}; valid: {', '.join(MEASURES)}")
    return measures


def _limit(n):
    return None if n is None or n < 0 else int(n)


def augmented_copy(config, images: np.ndarray, labels: np.ndarray, key) -> tuple:
    """The run's own training augmentation applied once to ``images`` (per-example keys).

    Multi-view policies (AugMix with JSD) contribute their first augmented view; label-mixing
    policies keep the label of the dominant component (argmax of the mixed label)."""
    from flatrob_jax.augment import build_train_augmentation, example_keys
    from flatrob_jax.data import get_info

    hook = build_train_augmentation(config.augment)
    num_classes = get_info(config.dataset.name).num_classes

    @jax.jit
    def apply(key, x, y):
        keys = example_keys(key, x.shape[0])
        out, soft = hook.apply(keys, x, jax.nn.one_hot(y, num_classes))
        if hook.num_views > 1:
            out = out[1]
        return out, jax.numpy.argmax(soft, -1)

    out_images, out_labels = [], []
    for start in range(0, images.shape[0], 500):
        x, y = apply(jax.random.fold_in(key, start), images[start:start + 500],
                     labels[start:start + 500])
        out_images.append(np.asarray(x))
        out_labels.append(np.asarray(y))
    return np.concatenate(out_images), np.concatenate(out_labels)


def analyze_run(workdir: str, cfg: ml_collections.ConfigDict, log=print,
                cache: dict | None = None) -> dict:
    """Run the configured measures on the latest checkpoint of ``workdir``; returns the
    results dict and writes it atomically to ``workdir/analysis.json``.

    ``cache``: a dict the caller keeps across runs (the sweep does); model-independent work,
    the corrupted test sets, is done once per (dataset, settings) and reused from it."""
    from flatrob_jax.data import load_arrays

    t0 = time.time()
    measures = parse_measures(cfg.measures)
    run = ckpt_lib.load_for_eval(workdir)
    config = run.config
    key = jax.random.key(cfg.seed)
    results = {"step": run.step, "workdir": os.path.abspath(workdir),
               "augment": config.augment.name, "model": config.model.name,
               "dataset": config.dataset.name, "measures": measures,
               "analysis_config": json.loads(cfg.to_json(sort_keys=True))}
    out_dir = os.path.join(workdir, "analysis")
    os.makedirs(out_dir, exist_ok=True)
    need_test = any(m in measures for m in ("clean", "corruptions", "attacks"))
    need_train = any(m.startswith("curvature") for m in measures)
    if need_test:
        test = load_arrays(config.dataset, config.dataset.eval_split,
                           _limit(cfg.num_test_examples))
    if need_train:
        train = load_arrays(config.dataset, config.dataset.train_split,
                            _limit(cfg.num_train_examples))
    if "clean" in measures:
        logits = np.concatenate([np.asarray(_logits(run.apply_fn, test[0][i:i + 500]))
                                 for i in range(0, test[0].shape[0], 500)])
        error = float(np.mean(np.argmax(logits, -1) != test[1]))
        results["clean"] = {"error": error, "num_examples": int(test[0].shape[0])}
        log(f"[{workdir}] clean error {error:.4f} on {test[0].shape[0]} test images")
    if "curvature" in measures:
        from flatrob_jax.curvature import evaluate as curvature_eval

        log(f"[{workdir}] curvature on {train[0].shape[0]} clean training images")
        results.setdefault("curvature", {})["clean"] = curvature_eval.evaluate(
            run, train, _curvature_cfg(cfg.curvature, out_dir, "clean"),
            key=jax.random.fold_in(key, 1), log=log)
    if "curvature_augmented" in measures:
        from flatrob_jax.curvature import evaluate as curvature_eval

        augmented = augmented_copy(config, train[0], train[1], jax.random.fold_in(key, 2))
        log(f"[{workdir}] curvature on {train[0].shape[0]} augmented training images "
            f"({config.augment.name})")
        results.setdefault("curvature", {})["augmented"] = curvature_eval.evaluate(
            run, augmented, _curvature_cfg(cfg.curvature, out_dir, "augmented"),
            key=jax.random.fold_in(key, 1), log=log)
    if "corruptions" in measures:
        from flatrob_jax.corruptions import evaluate as corruptions_eval

        corruption_key = jax.random.fold_in(key, 3)
        corrupted = None
        if cache is not None and cfg.corruptions.source == "on_the_fly":
            cache_key = json.dumps([config.dataset.to_dict(), cfg.corruptions.to_dict(),
                                    cfg.num_test_examples, cfg.seed], sort_keys=True, default=str)
            if cache_key not in cache:
                log(f"[{workdir}] corrupting {test[0].shape[0]} test images once for the sweep")
                cache[cache_key] = corruptions_eval.corrupted_sets(test[0], corruption_key,
                                                                   cfg.corruptions)
            corrupted = cache[cache_key]
        results["corruptions"] = corruptions_eval.evaluate(
            run.apply_fn, test, cfg.corruptions, key=corruption_key, log=log, out_dir=out_dir,
            corrupted=corrupted)
    if "attacks" in measures:
        from flatrob_jax.attacks import evaluate as attacks_eval

        results["attacks"] = attacks_eval.evaluate(
            run, test, cfg.attacks, key=jax.random.fold_in(key, 4), log=log)
    results["seconds"] = time.time() - t0
    atomic_write_text(os.path.join(workdir, "analysis.json"),
                               json.dumps(_jsonable(results), indent=2))
    log(f"[{workdir}] analysis done in {results['seconds']:.0f}s -> analysis.json")
    return results


@jax.jit
def _logits(apply_fn, x):
    return apply_fn(x)


def _curvature_cfg(cfg, out_dir: str, which: str):
    """The density plot goes beside the analysis unless the config names a path."""
    cfg = cfg.copy_and_resolve_references()
    if cfg.density and not cfg.density_png:
        cfg.density_png = os.path.join(out_dir, f"hessian_density_{which}.png")
    return cfg


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.generic, np.ndarray)) or hasattr(x, "__array__"):
        arr = np.asarray(x)
        return arr.item() if arr.ndim == 0 else arr.tolist()
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def analysis_config_for(workdir: str, overrides=()) -> ml_collections.ConfigDict:
    """The run's stored ``analysis`` section, completed with defaults, plus overrides."""
    from flatrob_jax.configuration import apply_overrides

    cfg = ml_collections.ConfigDict({"analysis": default_config()})
    stored = ckpt_lib.load_config(workdir)
    if "analysis" in stored:
        cfg = apply_overrides(cfg, _flatten("analysis", stored.analysis.to_dict()))
    return apply_overrides(cfg, list(overrides)).analysis


def _flatten(prefix, d):
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(f"{prefix}.{k}", v))
        else:
            out[f"{prefix}.{k}"] = tuple(v) if isinstance(v, list) else v
    return out


def main(argv):
    del argv
    from absl import flags, logging

    logging.set_verbosity(logging.WARNING)
    for workdir in flags.FLAGS.workdir:
        cfg = analysis_config_for(workdir, flags.FLAGS.set)
        analyze_run(workdir, cfg)


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_multi_string("workdir", None, "run directory (repeat for several)")
    flags.DEFINE_multi_string("set", [], "override, e.g. analysis.attacks.autoattack=True")
    flags.mark_flag_as_required("workdir")
    app.run(main)
