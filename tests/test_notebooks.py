"""The quickstart notebook runs top to bottom (its code cells, in order, on tiny sizes)."""
import json
import os

import pytest

from tests.helpers import REPO, make_idx_dataset


@pytest.mark.slow
def test_quickstart_notebook_runs(tmp_path, monkeypatch):
    data = make_idx_dataset(str(tmp_path / "data"), n_train=256, n_test=64)
    nb = json.load(open(os.path.join(REPO, "notebooks", "quickstart.ipynb")))
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    monkeypatch.chdir(REPO)
    namespace = {}
    for src in cells:
        if "IPython.display" in src:
            continue  # display only
        src = src.replace("/tmp/flatrob_quickstart", str(tmp_path / "qs"))
        # Point the notebook at the small fake dataset (the real one may not be installed).
        src = src.replace('{"augment.name": "augmix", "train.num_steps": 20}',
                          f'{{"augment.name": "augmix", "train.num_steps": 4, '
                          f'"dataset.data_dir": {data!r}, "model.name": "cnn_tiny"}}')
        src = src.replace("num_steps=30", "num_steps=5").replace("num_probes=30", "num_probes=4")
        src = src.replace("num_examples=512", "num_examples=64").replace(
            "num_examples=256", "num_examples=32").replace("steps=10,", "steps=2,")
        if "run_sweep" in src:
            continue  # the sweep itself is covered by tests/test_sweep.py
        exec(compile(src, "quickstart", "exec"), namespace)
    assert namespace["summary"]["steps"] == 4
    assert namespace["top"].eigenvalues[0] > 0
