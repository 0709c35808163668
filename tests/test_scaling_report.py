"""benchmarks/scaling.py's report: what the speed-up table says must follow from the saved curves.

Pure bookkeeping on hand-made runs (no training): crossings interpolated between checkpoints,
runs of one setting merged, and a target not reached reported as a bound, never as a figure.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks.scaling import first_reached, load_runs, same_setting, scale_adam_betas, table
from gossipnet.nn import make_optimizer


def run(k: int, curve, lr: float = 1e-3, split: str = "iid", **kw) -> dict:
    return {"k": k, "split": split, "lr": lr, "chunk": 4, "fanout": min(2, k - 1), "curve": curve,
            "node_images": curve[-1][0], "node_images_to": {}, "bytes_sent_per_node_per_s": 0.0,
            "merges": 0, "finished": True, **kw}


def test_crossings_are_interpolated_between_the_checkpoints_either_side():
    curve = [(0, 0.5), (1000, 0.80), (2000, 0.90)]
    assert first_reached(curve, 0.85) == 1500
    assert first_reached(curve, 0.80) == 1000
    assert first_reached(curve, 0.95) is None


def test_a_dense_run_refines_a_long_run_of_the_same_setting_and_other_settings_stay_apart(tmp_path):
    long = run(1, [(128, 0.3), (15000, 0.84), (30000, 0.88)])
    dense = run(1, [(128, 0.3), (2000, 0.77), (10000, 0.85), (12000, 0.86)])
    swarm = run(8, [(1000, 0.80), (2000, 0.90)], lr=2.8e-3)
    other = run(8, [(2000, 0.80), (6000, 0.84)], lr=8e-3)  # another rate: not merged, and not the furthest
    f1, f2 = tmp_path / "a.json", tmp_path / "b.json"
    f1.write_text(json.dumps({"runs": [long, swarm]}))
    f2.write_text(json.dumps({"runs": [dense]}))
    runs = {r["k"]: r for r in load_runs([str(f1), str(f2)], [0.85, 0.88, 0.90])}
    one = runs[1]
    assert one["node_images"] == 30000 and one["runs_merged"] == 2
    assert one["node_images_to"]["0.85"] == 10000  # the dense checkpoint, not 15000's interpolation
    assert runs[8]["speedup_to"]["0.85"] == round(10000 / 1500, 2)
    assert runs[8]["speedup_to"]["0.88"] == round(30000 / 1800, 2)
    # one node never reached 90% here: no figure and no bound, whatever the swarm did
    assert runs[8]["speedup_to"]["0.90"] is None
    f3 = tmp_path / "c.json"
    f3.write_text(json.dumps({"runs": [long, other]}))
    runs = {r["k"]: r for r in load_runs([str(f1), str(f2), str(f3)], [0.85, 0.88])}
    assert runs[8]["lr"] == 8e-3  # the further run of K = 8 (6000 images) wins, unmerged
    assert runs[8]["node_images_to"]["0.85"] is None
    assert runs[8]["speedup_below"]["0.85"] == round(10000 / 6000, 2)  # it needs > 6000: < 1.67x
    text = table(list(runs.values()))
    assert "not reached by 6,000" in text and "< 1.67" in text


def test_adam_beta_scaling_scales_one_minus_each_beta_and_refuses_a_beta_of_one_or_more():
    params = {"w": np.zeros(3, np.float32)}
    adam = make_optimizer("adam", params, lr=1e-3)
    scale_adam_betas(adam, 8)
    assert (adam.b1, adam.b2) == pytest.approx((0.2, 0.992))
    sgd = make_optimizer("sgd", params, lr=1e-3)
    scale_adam_betas(sgd, 8)  # no betas: nothing to scale
    with pytest.raises(SystemExit, match="must stay in"):
        scale_adam_betas(make_optimizer("adam", params, lr=1e-3), 11)  # beta1 -0.1
    # and a run with scaled betas is another setting, never merged with the plain one
    assert not same_setting(run(8, [(1, 0.5)], adam_beta_scale=8.0), run(8, [(1, 0.5)]))
    assert same_setting(run(8, [(1, 0.5)], adam_beta_scale=1.0), run(8, [(1, 0.5)]))
