"""The one-prompt protocol end to end with the fake predictor."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synth.errors import ConfigError, SourceError, SynthError
from synth.evaluation import Predictor, read_dataset, run_eval, seeded_prompt
from synth.evaluation.datasets import load_image
from synth.evaluation.protocol import load_prompt_list, parse_seeds, parse_size
from synth.metrics import METRIC_NAMES


def test_fake_predictor_satisfies_the_protocol(fake_predictor):
    assert isinstance(fake_predictor, Predictor)


def test_end_to_end_every_layout(any_tree, fake_predictor):
    kind, root = any_tree
    res = run_eval(fake_predictor, kind, root, progress=False)
    assert res.categories == ["bottle", "cable"] and res.runs == ["seed 0"]
    for cat in res.categories:
        vals = res.per_run[0][cat]
        assert set(vals) == set(METRIC_NAMES)
        # the difference model sees every pasted square: image level is perfect
        assert vals["I-ROC"] == pytest.approx(1.0)
        assert all(0.5 < v <= 1.0 for v in vals.values())
    assert len(res.images) == 12
    assert res.config["eval_size"] == [32, 32] and res.config["model_size"] == [32, 32]


def test_seeds_give_runs_with_mean_and_std(mvtec_tree, fake_predictor):
    res = run_eval(fake_predictor, "mvtec", mvtec_tree, seeds=(1, 3, 5), progress=False)
    assert res.runs == ["seed 1", "seed 3", "seed 5"]
    cats = read_dataset("mvtec", mvtec_tree)
    for seed in (1, 3, 5):
        for cat in cats:
            used = {
                rec.prompt
                for rec in res.images
                if rec.run == f"seed {seed}" and rec.category == cat.name
            }
            assert used == {str(seeded_prompt(cat, seed))}
    summary = res.summary()
    for m in METRIC_NAMES:
        per_run = [run["cable"][m] for run in res.per_run]
        assert summary["cable"][m] == pytest.approx((np.mean(per_run), np.std(per_run)))
        means = [np.mean([run[c][m] for c in res.categories]) for run in res.per_run]
        assert summary["mean"][m] == pytest.approx((np.mean(means), np.std(means)))
    # query images are decoded once per category, not once per run
    assert fake_predictor.predict_calls == 3 * 2


def test_same_seed_same_numbers(folder_tree, fake_predictor):
    a = run_eval(fake_predictor, "folder", folder_tree, seeds=(7,), progress=False)
    b = run_eval(fake_predictor, "folder", folder_tree, seeds=(7,), progress=False)
    assert a.per_run == b.per_run


def test_nearest_picks_the_most_similar_training_image(visa_tree, fake_predictor):
    res = run_eval(
        fake_predictor, "visa", visa_tree, prompt_select="nearest", seeds=(1, 2), progress=False
    )
    assert res.runs == ["nearest"]
    assert any("--prompt-seed ignored" in n for n in res.notes)
    for cat in read_dataset("visa", visa_tree):
        pool = np.stack([load_image(p, (32, 32)) for p in cat.train])
        f = fake_predictor.embed(pool)
        f /= np.linalg.norm(f, axis=1, keepdims=True)
        chosen = set()
        for rec in (r for r in res.images if r.category == cat.name):
            q = fake_predictor.embed(load_image(rec.image, (32, 32))[None])[0]
            sim = f @ (q / np.linalg.norm(q))
            assert sim[[str(p) for p in cat.train].index(rec.prompt)] == pytest.approx(sim.max())
            chosen.add(rec.prompt)
        assert len(chosen) > 1  # retrieval follows the query, unlike one prompt per category


def test_prompt_lists_official_and_per_image_formats(mvtec_tree, fake_predictor, tmp_path):
    per_cat = tmp_path / "oneprompt_seed1.json"
    per_cat.write_text(
        json.dumps(
            {
                "bottle": {
                    "filename": "bottle/train/good/002.png",
                    "label": 0,
                    "clsname": "bottle",
                },
                "cable": "cable/train/good/001.png",
            }
        )
    )
    per_image = tmp_path / "top10.jsonl"
    per_image.write_text(
        json.dumps({"bottle/test/crack/000.png": ["bottle/train/good/003.png", "x.png"]})
        + "\n"
        + json.dumps({"bottle": "bottle/train/good/000.png", "cable": "cable/train/good/000.png"})
    )
    res = run_eval(
        fake_predictor, "mvtec", mvtec_tree, prompt_lists=[per_cat, per_image], progress=False
    )
    assert res.runs == ["list oneprompt_seed1.json", "list top10.jsonl"]
    prompts = {(r.run, r.image.split("mvtec/")[1]): r.prompt.split("mvtec/")[1] for r in res.images}
    assert prompts["list oneprompt_seed1.json", "bottle/test/good/000.png"] == (
        "bottle/train/good/002.png"
    )
    assert prompts["list oneprompt_seed1.json", "cable/test/crack/000.png"] == (
        "cable/train/good/001.png"
    )
    assert prompts["list top10.jsonl", "bottle/test/crack/000.png"] == "bottle/train/good/003.png"
    assert prompts["list top10.jsonl", "bottle/test/crack/001.png"] == "bottle/train/good/000.png"


def test_prompt_list_errors(mvtec_tree, fake_predictor, tmp_path):
    missing_cat = tmp_path / "p.json"
    missing_cat.write_text(json.dumps({"bottle": "bottle/train/good/000.png"}))
    with pytest.raises(ConfigError, match="no prompt for category 'cable'"):
        run_eval(fake_predictor, "mvtec", mvtec_tree, prompt_lists=[missing_cat], progress=False)
    bad_path = tmp_path / "q.json"
    bad_path.write_text(json.dumps({"bottle": "bottle/train/good/999.png"}))
    with pytest.raises(SourceError, match="999.png: prompt image listed in"):
        load_prompt_list(bad_path, mvtec_tree)
    garbage = tmp_path / "g.json"
    garbage.write_text("{not json")
    with pytest.raises(SourceError, match="not JSON or JSON lines"):
        load_prompt_list(garbage, mvtec_tree)
    with pytest.raises(ConfigError, match="exclude each other"):
        run_eval(
            fake_predictor,
            "mvtec",
            mvtec_tree,
            prompt_lists=[missing_cat],
            prompt_select="nearest",
            progress=False,
        )


def test_eval_size_differs_from_model_size(folder_tree, fake_predictor):
    res = run_eval(fake_predictor, "folder", folder_tree, size=(40, 48), progress=False)
    assert res.config["eval_size"] == [40, 48]
    assert res.per_run[0]["bottle"]["P-ROC"] > 0.9


def test_paper_convention_and_topk_are_recorded(mvtec_tree, fake_predictor):
    res = run_eval(
        fake_predictor,
        "mvtec",
        mvtec_tree,
        convention="paper",
        image_score="topk",
        topk_frac=0.05,
        progress=False,
    )
    desc = res.config["convention_description"]
    assert desc.startswith("paper") and "top 5.00% pixels" in desc


def test_overlays_of_best_and_worst_cases(mvtec_tree, fake_predictor, tmp_path):
    out = tmp_path / "maps"
    run_eval(fake_predictor, "mvtec", mvtec_tree, save_maps=out, overlays=2, progress=False)
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 8
    assert sum(n.startswith("bottle_worst") for n in names) == 2
    assert sum(n.startswith("cable_best") for n in names) == 2


class _Broken:
    size = (32, 32)

    def __init__(self, out):
        self.out = out

    def predict(self, prompts, queries):
        return self.out(len(queries))

    def embed(self, images):
        return np.zeros((len(images), 3), np.float32)


@pytest.mark.parametrize(
    "out, match",
    [
        (lambda b: np.zeros((b, 16, 16), np.float32), r"returned \(\d+, 16, 16\)"),
        (lambda b: np.full((b, 32, 32), np.nan, np.float32), "NaN"),
    ],
)
def test_bad_predictor_output_is_a_clear_error(folder_tree, out, match):
    with pytest.raises(SynthError, match=match):
        run_eval(_Broken(out), "folder", folder_tree, progress=False)


def test_option_validation(folder_tree, fake_predictor):
    with pytest.raises(ConfigError, match="--convention"):
        run_eval(fake_predictor, "folder", folder_tree, convention="x", progress=False)
    with pytest.raises(ConfigError, match="--topk-frac"):
        run_eval(fake_predictor, "folder", folder_tree, topk_frac=0, progress=False)
    assert parse_size("256") == (256, 256) and parse_size("256x320") == (256, 320)
    assert parse_size(None) is None
    for bad in ("abc", "2", "1x2x3"):
        with pytest.raises(ConfigError, match="--size"):
            parse_size(bad)
    assert parse_seeds("1, 3,5") == (1, 3, 5)
    for bad in ("", "a", "1,1"):
        with pytest.raises(ConfigError, match="--prompt-seed"):
            parse_seeds(bad)
