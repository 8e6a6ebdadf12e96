"""`make bench` runs unchanged under the smoke profile: check the JSON schema and the files it writes."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from coursekit import bench, metrics

from _helpers import notebook_assignments


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COURSEKIT_CACHE_DIR", str(tmp_path_factory.mktemp("ckcache")))
        threads = torch.get_num_threads()
        returned = bench.main(["--profile", "smoke", "--out", str(out), "--no-progress"])
        assert torch.get_num_threads() == threads  # restored
    return out, returned


def _finite(v):
    return isinstance(v, float) and math.isfinite(v)


def test_results_json_schema(smoke_run):
    out, returned = smoke_run
    results = json.loads((out / "results.json").read_text())
    assert results == json.loads(json.dumps(returned))  # the file holds what run_bench returned
    assert results["schema_version"] == bench.SCHEMA_VERSION
    assert results["profile"] == "smoke" and results["n"] == metrics.COURSE_SAMPLE_SIZE == 250
    for key in ("coursekit_version", "torch_version", "device", "threads", "seed", "k", "kid_subsets",
                "kid_subset_size", "started_at", "total_seconds"):
        assert key in results, key
    acc = results["classifier"]["accuracy"]
    assert set(acc) == {"val", "test", "val_binarized", "test_binarized"} and acc["test"] >= 0.95

    for space in ("grayscale", "binarized"):
        floor = results["floor"][space]
        assert set(floor) == set(bench.METRIC_KEYS)
        assert all(_finite(floor[k]) for k in bench.METRIC_KEYS), floor
        curve = results["fid_vs_n"][space]
        assert [r["n"] for r in curve] == sorted(r["n"] for r in curve)
        assert curve[0]["fid_mean"] > curve[-1]["fid_mean"]  # FID's small-sample bias

    assert set(results["models"]) == set(bench.REGISTRY) and "vae" in results["models"]
    for name, m in results["models"].items():
        assert m["profile"] == "smoke" and m["floor"] in results["floor"]
        assert isinstance(m["parameters"], int) and m["parameters"] > 0
        assert isinstance(m["steps"], int) and m["steps"] > 0
        assert _finite(m["train_seconds"]) and m["train_seconds"] > 0
        assert m["steps_per_second"] == pytest.approx(m["steps"] / m["train_seconds"])
        per_image, bpd = m["sample_seconds_per_image"], m["likelihood"].get("test_nll_bits_per_dim")
        assert per_image is None or (_finite(per_image) and per_image > 0), name
        assert m["likelihood_kind"] in ("", "exact", "upper bound") and (bpd is None or (_finite(bpd) and bpd > 0))
        assert per_image is not None, f"{name}: the recipe does not time its headline samples"
        assert (m["likelihood_kind"] != "") == (bpd is not None), name
        for key in bench.METRIC_KEYS:
            assert _finite(m[key]), (name, key)
            assert m[key] == m["sample_sets"][m["headline_samples"]][key]
        assert 0 <= m["precision"] <= 1 and 0 <= m["recall"] <= 1 and 0 <= m["coverage"] <= 1
        assert m["fid"] >= 0 and 1 <= m["is_mean"] <= 10

    vae = results["models"]["vae"]
    lik = vae["likelihood"]
    for key in ("test_elbo_nats", "test_iwae_nats", "test_nll_bits_per_dim_elbo", "test_nll_bits_per_dim_iwae"):
        assert _finite(lik[key]), key
    assert lik["test_elbo_nats"] < 0  # a log-likelihood bound of binary data
    assert lik["test_nll_bits_per_dim_iwae"] == pytest.approx(-lik["test_iwae_nats"] / (64 * math.log(2)))
    hidden = bench.VAE_RECIPE["HIDDEN"]["smoke"]
    assert vae["parameters"] == sum(p.numel() for p in __import__("coursekit").vae.VAE(hidden=hidden).parameters())
    assert vae["steps"] == bench.VAE_RECIPE["STEPS"]["smoke"]  # the chapter's smoke budget
    assert vae["config"]["hidden"] == list(bench.VAE_RECIPE["HIDDEN"]["smoke"])


def test_sample_files(smoke_run):
    out, results = smoke_run
    for name, m in results["models"].items():
        assert m["samples_file"] == m["sample_sets"][m["headline_samples"]]["file"]
        for set_name, s in m["sample_sets"].items():
            x = np.load(out / s["file"])
            assert x.shape == (results["n"], 64) and x.dtype == np.float32, (name, set_name)
            assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    binary = np.load(out / results["models"]["vae"]["sample_sets"]["binary"]["file"])
    assert set(np.unique(binary)) <= {0.0, 1.0}


def test_table_lists_models_and_floor(smoke_run, capsys):
    _, results = smoke_run
    table = bench.format_table(results)
    assert "real-data floor (binarized)" in table and "real-data floor (grayscale)" in table
    assert "vae [mean]" in table and "FID" in table and "bits/dim" in table


def test_summary_rows_list_every_model_in_chapter_order_then_the_floors(smoke_run):
    _, results = smoke_run
    rows = bench.summary_rows(results)
    models = [r for r in rows if r["floor"] is not None]
    assert {r["name"] for r in models} == set(bench.REGISTRY)
    assert [r["chapter"] for r in models] == sorted(r["chapter"] for r in models)
    assert [r["name"] for r in rows[len(models):]] == ["floor (grayscale)", "floor (binarized)"]
    vae = next(r for r in models if r["name"] == "vae")
    entry = results["models"]["vae"]
    assert vae["space"] == "binarized" and vae["fid"] == entry["fid"]
    assert vae["bits_per_dim"] == entry["likelihood"]["test_nll_bits_per_dim_iwae"]
    assert vae["sample_ms_per_image"] == pytest.approx(1e3 * entry["sample_seconds_per_image"])
    table = bench.format_summary(rows)
    assert all(r["name"] in table for r in rows) and len(table.splitlines()) == len(rows) + 3
    line = bench.format_summary([dict(rows[0], bits_per_dim=None, sample_ms_per_image=None)]).splitlines()[2]
    assert line.split()[3] == "-" and line.split()[-1] == "-"  # a missing number is shown as "-"


def test_find_and_load_results(smoke_run, tmp_path, monkeypatch):
    out, results = smoke_run
    monkeypatch.delenv(bench.RESULTS_ENV_VAR, raising=False)
    root = tmp_path / "repo"
    (root / "_build" / "bench").mkdir(parents=True)
    (root / "notebooks").mkdir()
    assert bench.find_results(root / "notebooks") is None
    target = root / bench.RESULTS_FILE
    target.write_text((out / "results.json").read_text())
    assert bench.find_results(root / "notebooks") == target  # found from a subdirectory
    assert bench.load_results(target) == json.loads(json.dumps(results))
    monkeypatch.setenv(bench.RESULTS_ENV_VAR, str(out / "results.json"))
    assert bench.find_results(root) == out / "results.json"
    monkeypatch.setenv(bench.RESULTS_ENV_VAR, str(tmp_path / "missing.json"))
    assert bench.find_results(root) is None
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"schema_version": 0}))
    with pytest.raises(ValueError, match="schema_version"):
        bench.load_results(old)


def test_comparisons_put_each_course_model_beside_its_reference(smoke_run):
    """Every comparison ran (its course model is in the run), with both sides measured on the same steps and the
    difference and speed ratio computed from them; the loop comparisons time the very same model."""
    _, results = smoke_run
    comps = results["comparisons"]
    assert set(comps) == set(bench.COMPARISONS) >= {"loop_vae", "loop_moons", "vae_examples", "realnvp_zuko",
                                                    "nsf_zuko", "ddpm_diffusers"}
    for name, c in comps.items():
        course, ref = c["course"], c["reference"]
        for e in (course, ref):
            assert _finite(e["value"]) and _finite(e["steps_per_second"]) and e["steps_per_second"] > 0, name
            assert isinstance(e["parameters"], int) and e["parameters"] > 0 and e["steps"] > 0 and e["what"]
        assert course["steps"] == ref["steps"], name  # equal steps on both sides
        assert c["difference"] == pytest.approx(course["value"] - ref["value"])
        assert c["speed_ratio"] == pytest.approx(course["steps_per_second"] / ref["steps_per_second"])
    for name in ("loop_vae", "loop_moons"):
        c = comps[name]
        assert c["course"]["parameters"] == c["reference"]["parameters"]
        assert c["course"]["value"] == pytest.approx(c["course"]["steps_per_second"])
    for name in ("realnvp_zuko", "nsf_zuko"):  # each side's value is its mean over the same seeds
        c = comps[name]
        for side in ("course", "reference"):
            assert len(c[side]["seed_values"]) == len(c["seeds"]) >= 1
            assert c[side]["value"] == pytest.approx(np.mean(c[side]["seed_values"]))
    assert comps["vae_examples"]["course"]["value"] == -results["models"]["vae"]["likelihood"]["test_iwae_nats"]
    assert comps["ddpm_diffusers"]["course"]["value"] == results["models"]["ddpm"]["fid"]
    table = bench.format_table(results)
    assert "speed ratio (course / reference)" in table and "zuko.flows.RealNVP" in table


def test_comparisons_are_skipped_without_their_course_model(tmp_path):
    results = bench.run_bench("smoke", tmp_path, models=[], progress=False, verbose=False)
    standalone = {name for name, c in bench.COMPARISONS.items() if c.course_model is None}
    assert results["models"] == {} and set(results["comparisons"]) == standalone
    assert "vae_examples" not in standalone and "loop_vae" in standalone
    results = bench.run_bench("smoke", tmp_path, models=[], progress=False, verbose=False, references=False)
    assert results["comparisons"] == {}


def test_registry_and_errors(tmp_path):
    assert next(iter(bench.REGISTRY)) == "vae"
    with pytest.raises(ValueError, match="already registered"):
        bench.register(bench.REGISTRY["vae"])
    with pytest.raises(ValueError, match="unknown model"):
        bench.run_bench("smoke", tmp_path, models=["nope"])
    with pytest.raises(ValueError, match="profile"):
        bench.run_bench("laptop", tmp_path)
    with pytest.raises(ValueError, match="n must be"):
        bench.run_bench("smoke", tmp_path, n=400)
    with pytest.raises(SystemExit):
        bench.main(["--profile", "laptop"])




#: (registry name, recipe dict in coursekit.bench, chapter notebook): the bench must train each model exactly as
#: its chapter does, so its numbers are the chapter's.
RECIPE_CHAPTERS = [
    ("gmm", "GMM_RECIPE", "02_mixtures"),
    ("ae_gmm", "AE_GMM_RECIPE", "03_autoencoders"),
    ("vae", "VAE_RECIPE", "04_vae"),
    ("flow", "FLOW_RECIPE", "05_flows"),
    ("cgan", "CGAN_RECIPE", "06_gan"),  # CGAN_RECIPE = DCGAN_RECIPE + the conditional GAN's steps
    ("wgan_gp", "WGAN_GP_RECIPE", "07_wasserstein"),
    ("ddpm", "DIFFUSION_RECIPE", "08_diffusion"),
    ("ncsn", "NCSN_RECIPE", "09_score_matching"),
    ("flow_matching", "FLOW_MATCHING_RECIPE", "10_flow_matching"),
    ("pixelcnn", "PIXELCNN_RECIPE", "11_autoregressive"),
    ("vq_prior", "VQ_PRIOR_RECIPE", "11_autoregressive"),
    ("dalle", "DALLE_RECIPE", "11_autoregressive"),
    ("guided", "GUIDED_RECIPE", "12_guidance"),  # chapter 08's recipe + label dropout and the guidance sweep
    ("latent_diffusion", "LATENT_DIFFUSION_RECIPE", "12_guidance"),
]


@pytest.mark.parametrize("name, recipe_attr, chapter", RECIPE_CHAPTERS, ids=[c for _, _, c in RECIPE_CHAPTERS])
def test_recipe_matches_its_chapter(name, recipe_attr, chapter):
    notebook = Path(__file__).resolve().parents[1] / "notebooks" / f"{chapter}.ipynb"
    if not notebook.exists():
        pytest.skip(f"notebooks/{chapter}.ipynb not present")
    assert name in bench.REGISTRY and bench.REGISTRY[name].chapter == chapter
    recipe = getattr(bench, recipe_attr)
    found = notebook_assignments(notebook, set(recipe))
    assert set(found) == set(recipe), f"missing in notebooks/{chapter}.ipynb: {set(recipe) - set(found)}"
    assert found == recipe, f"update coursekit.bench.{recipe_attr} to the budgets of notebooks/{chapter}.ipynb"


def test_gmm_floors_match_chapter_02():
    found = notebook_assignments(Path(__file__).resolve().parents[1] / "notebooks" / "02_mixtures.ipynb", {"FLOOR"})
    assert found == {"FLOOR": bench.GMM_FLOOR}, "update coursekit.bench.GMM_FLOOR to notebooks/02_mixtures.ipynb"


def test_measure_recipe_rejects_an_unknown_name():
    ctx = bench.BenchContext(profile="smoke", seed=0, device=torch.device("cpu"), n_samples=100, progress=False)
    with pytest.raises(ValueError, match="unknown model"):
        bench.measure_recipe("nope", ctx)


def test_two_moons_recipe_matches_chapter_05():
    found = notebook_assignments(Path(__file__).resolve().parents[1] / "notebooks" / "05_flows.ipynb",
                                 set(bench.MOONS_RECIPE))
    assert found == bench.MOONS_RECIPE, "update coursekit.bench.MOONS_RECIPE to notebooks/05_flows.ipynb"


def test_guided_recipes_reuse_chapter_08_and_sample_every_weight(smoke_run):
    """The guided U-Net is chapter 08's recipe with label dropout; the latent model trains for the same steps; each
    stores one sample set per guidance weight, the unguided w = 1 first."""
    _, results = smoke_run
    diffusion = {k: v for k, v in bench.DIFFUSION_RECIPE.items() if k != "DDIM_STEPS"}
    assert {k: bench.GUIDED_RECIPE[k] for k in diffusion} == diffusion
    for key in ("T", "SCHEDULE", "STEPS", "BATCH_SIZE", "LR", "WARMUP", "EMA_DECAY", "P_UNCOND", "GUIDANCE_WEIGHTS"):
        assert bench.LATENT_DIFFUSION_RECIPE[key] == bench.GUIDED_RECIPE[key], key
    for name in ("guided", "latent_diffusion"):
        m = results["models"][name]
        assert m["headline_samples"] == "w1"
        assert len(m["sample_sets"]) == len(bench.GUIDED_RECIPE["GUIDANCE_WEIGHTS"])
        assert m["steps"] == bench.DIFFUSION_RECIPE["STEPS"]["smoke"]
        assert "Class agreement" in m["notes"]


def test_recipe_details():
    assert set(bench.DCGAN_RECIPE) < set(bench.CGAN_RECIPE)
    assert bench.REGISTRY["dcgan"].chapter == "06_gan"
    assert bench.REGISTRY["ncsn"].binarize is False
