"""Diffusion pipelines as shipped: DDIM, DiT and Stable Diffusion layouts sampled as diffusers samples them,
guidance, refusals at submit, and every layout through the three hallucination analyses."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from modelsci import catalogue
from modelsci.analyses.hallucination.diffusion import diffusion_model, sample
from modelsci.catalogue.integrity import check
from modelsci.executors import run_queue
from modelsci.ingest.loading import load_model
from modelsci.ingest.models import resolve_model
from modelsci.planner import submit
from modelsci.schemas.manifest import ManifestError, ModelSpec
from tests import diffusion_pipelines as make


def _model(folder: Path, task: str, **params):  # noqa: ANN003, ANN202
    handle = resolve_model(ModelSpec(source=str(folder), task=task))
    return diffusion_model(load_model(handle), SimpleNamespace(**params))


def _noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The float32 noise diffusers' pipelines draw from a generator seeded with ``seed``."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float32)


def _denoise_from(model, x: torch.Tensor) -> np.ndarray:  # noqa: ANN001
    from modelsci.analyses.hallucination.diffusion import denoise

    out, _ = denoise(model, x.double(), torch.Generator().manual_seed(0), keep_last=2)
    return out.numpy()


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
def test_ddim_sampling_reproduces_the_diffusers_ddim_pipeline(tmp_path: Path, spacing: str) -> None:
    from diffusers import DDIMPipeline, DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=100, steps_offset=1 if spacing == "leading" else 0,
                              timestep_spacing=spacing, clip_sample=True, set_alpha_to_one=False)
    folder = make.unconditional(tmp_path / "ddim", scheduler=scheduler)
    model = _model(folder, "unconditional-image-generation", num_inference_steps=10)
    assert model.record["scheduler"] == "DDIMScheduler" and model.record["steps"] == 10
    pipeline = DDIMPipeline.from_pretrained(folder)
    expected = pipeline(batch_size=3, generator=torch.Generator().manual_seed(7), eta=0.0, num_inference_steps=10,
                        output_type="np").images  # (x / 2 + 0.5) clamped to [0, 1], channels last
    ours = np.clip(_denoise_from(model, _noise((3, 1, 8, 8), 7)) / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)
    assert ((expected > 0.01) & (expected < 0.99)).mean() > 0.2  # not a match of clamped values only


def _sd_prompts(pipeline, prompts: list[str], latents: torch.Tensor, scale: float) -> np.ndarray:  # noqa: ANN001
    return pipeline(prompts, latents=latents.clone(), num_inference_steps=6, guidance_scale=scale,
                    output_type="latent", height=16, width=16).images.numpy()


@pytest.fixture(scope="module")
def sd_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make.stable_diffusion(tmp_path_factory.mktemp("sd") / "sd")


@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_text_to_image_guidance_matches_the_stable_diffusion_pipeline(sd_folder: Path, scale: float) -> None:
    from diffusers import StableDiffusionPipeline

    prompts = ["one square", "one disc"]
    model = _model(sd_folder, "text-to-image", prompts=prompts, guidance_scale=scale, num_inference_steps=6)
    latents = _noise((4, 4, 8, 8), 3)
    calls = []  # what reaches the UNet itself: (rows,) per call
    hook = model.eps_model.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    ours = _denoise_from(model, latents)
    hook.remove()
    # One forward per step, of the 4 samples without guidance; of both branches at once with it.
    assert calls == [4 * (2 if scale > 1 else 1)] * 6
    assert model.forwards == sum(calls)
    pipeline = StableDiffusionPipeline.from_pretrained(sd_folder, safety_checker=None, feature_extractor=None)
    expected = _sd_prompts(pipeline, [prompts[i % 2] for i in range(4)], latents, scale)
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4)
    assert model.record == {"pipeline": "StableDiffusionPipeline", "denoiser": "UNet2DConditionModel",
                            "scheduler": "DDIMScheduler", "prediction_type": "epsilon", "timestep_spacing": "leading",
                            "steps": 6, "guidance_scale": scale, "eta": 0.0, "latent": True, "conditioning": "text"}
    images = model.decode(ours)
    assert images.shape == (4, 1, 16, 16)
    decoded = pipeline.vae.decode(torch.as_tensor(ours[:1], dtype=torch.float32) / 0.5).sample.detach().numpy()
    np.testing.assert_allclose(images[:1], decoded, rtol=0, atol=1e-5)


def test_guidance_changes_what_is_sampled(sd_folder: Path) -> None:
    model = _model(sd_folder, "text-to-image", prompts=["one square"], num_inference_steps=4)
    one, _ = sample(model, 2, torch.Generator().manual_seed(0), keep_last=1)
    three, _ = sample(model.with_guidance(3.0), 2, torch.Generator().manual_seed(0), keep_last=1)
    assert np.abs(one - three).max() > 1e-3


def test_class_conditional_dit_matches_the_dit_pipeline(tmp_path: Path) -> None:
    from diffusers import DiTPipeline

    folder = make.dit(tmp_path / "dit")
    model = _model(folder, "text-to-image", class_labels=[0, 1], guidance_scale=4.0, num_inference_steps=5)
    assert model.conditions_of(np.arange(3)) == ["0", "1", "0"]
    pipeline = DiTPipeline.from_pretrained(folder)
    expected = pipeline(class_labels=[0, 1, 0], guidance_scale=4.0, num_inference_steps=5,
                        generator=torch.Generator().manual_seed(5), output_type="np").images
    ours = model.decode(_denoise_from(model, _noise((3, 4, 8, 8), 5)))
    np.testing.assert_allclose(np.clip(ours / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1), expected, rtol=0, atol=1e-4)
    assert model.forwards == 3 * 5 * 2


def _scheduler_config(folder: Path, **changes: object) -> None:
    path = folder / "scheduler" / "scheduler_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("change, named", [
    ({"_class_name": "EulerDiscreteScheduler"}, "EulerDiscreteScheduler"),
    ({"thresholding": True}, "dynamic thresholding"),
    ({"prediction_type": "flow"}, "prediction_type 'flow'"),
    ({"steps_offset": 5000}, "steps_offset 5000: it must be a whole number from 0 to 99"),
    ({"beta_end": "x"}, "beta_end 'x'"),
    ({"clip_sample": True, "clip_sample_range": "abc"}, "clip_sample_range 'abc'"),
    ({"num_train_timesteps": 0}, "num_train_timesteps 0"),
])
def test_a_scheduler_modelsci_cannot_honour_is_refused_at_submit(tmp_path: Path, change: dict, named: str) -> None:
    folder = make.unconditional(tmp_path / "pipe")
    _scheduler_config(folder, **change)
    manifest = (f"submitter: test <t@example.org>\nmodel: {{source: {folder}, task: unconditional-image-generation}}\n"
                "analyses: [{name: hallucination.trajectory_variance}]\n")
    cat = catalogue.open(tmp_path / "cat", create=True)
    with pytest.raises(ManifestError, match=named) as raised:
        submit(cat, manifest)
    assert raised.value.problems == [raised.value.problems[0]] and "model.source" in raised.value.problems[0]
    assert cat.sql("SELECT count(*) AS n FROM models").to_pylist() == [{"n": 0}]


@pytest.mark.parametrize("index, named", [
    ({"unet": ["diffusers", "UNet2DConditionModel"]}, "a DDIMPipeline's unet is a UNet2DConditionModel"),
    ({"_class_name": "FluxPipeline"}, "names the pipeline 'FluxPipeline'"),
    ({"_class_name": None}, "names the pipeline None"),
])
def test_a_model_index_modelsci_cannot_sample_is_refused_at_submit(tmp_path: Path, index: dict, named: str) -> None:
    folder = make.unconditional(tmp_path / "pipe")
    path = folder / "model_index.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **index}))
    manifest = {"submitter": "test <t@example.org>", "analyses": [{"name": "hallucination.lid"}],
                "model": {"source": str(folder), "task": "unconditional-image-generation"}}
    with pytest.raises(ManifestError, match=named):
        submit(catalogue.open(tmp_path / "cat", create=True), json.dumps(manifest))


def test_prompts_the_models_note_does_not_judge_are_refused_not_judged_by_another_rule(tmp_path: Path) -> None:
    from modelsci.analyses.hallucination.filters import ground_truth_of

    shapes = Path(__file__).parents[1] / "examples" / "demo" / "shapes_text_16"
    model = _model(shapes, "text-to-image", prompts=["one square", "square"], num_inference_steps=2)
    with pytest.raises(ValueError, match=r"judges the conditions \['one disc', 'one square'\], not \['square'\]"):
        ground_truth_of(model, np.zeros((2, 1, 16, 16)))
    with pytest.raises(ValueError, match="an empty prompt is not a condition"):
        _model(shapes, "text-to-image", prompts=[" "])


def test_a_bare_unet_is_sampled_with_the_scheduler_saved_beside_it(tmp_path: Path) -> None:
    from diffusers import DDIMPipeline, DDIMScheduler

    pipeline = DDIMPipeline.from_pretrained(make.unconditional(tmp_path / "pipe"))
    pipeline.unet.save_pretrained(tmp_path / "bare")
    DDIMScheduler(num_train_timesteps=100, prediction_type="v_prediction").save_pretrained(tmp_path / "bare" / "scheduler")
    model = _model(tmp_path / "bare", "unconditional-image-generation", num_inference_steps=5)
    assert (model.sampler, model.prediction_type, len(model.timesteps)) == ("ddim", "v_prediction", 5)
    assert model.record["scheduler"] == "DDIMScheduler" and model.record["pipeline"] == "UNet2DModel"


def test_a_conditional_pipeline_submitted_as_unconditional_is_refused(tmp_path: Path) -> None:
    folder = make.dit(tmp_path / "dit")
    cat = catalogue.open(tmp_path / "cat", create=True)
    with pytest.raises(ManifestError, match="submit it with task text-to-image"):
        submit(cat, f"submitter: test <t@example.org>\nmodel: {{source: {folder}, task: unconditional-image-generation}}\n"
                    "analyses: [{name: hallucination.trajectory_variance}]\n")


LAYOUTS = {
    "ddpm": (lambda d: make.unconditional(d, pipeline="DDPMPipeline"), "unconditional-image-generation", {}),
    "dit": (make.dit, "text-to-image", {"class_labels": [0, 1], "guidance_scale": 2.0}),
    "sd-latent": (make.stable_diffusion, "text-to-image", {"prompts": ["one square", "one disc"], "guidance_scale": 2.0}),
    # prompts from a dataset's text column (distinct, in order): "one disc", "one square"
    "sd-pixel": (lambda d: make.stable_diffusion(d, latent=False), "text-to-image", {}),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_layout_runs_the_three_hallucination_analyses_from_a_manifest(tmp_path: Path, layout: str) -> None:
    build, task, conditions = LAYOUTS[layout]
    folder = build(tmp_path / layout)
    common = {"n_samples": 6, "num_inference_steps": 4, **conditions}
    analyses = [{"name": "hallucination.trajectory_variance", "params": {**common, "last_steps": 3}},
                {"name": "hallucination.lid", "params": {**common, "draws": 2, "probes": 2}},
                {"name": "hallucination.quench", "params": {**common, "last_steps": 3, "draws": 2, "probes": 2,
                                                             "iterations": 1, "window": [0.0, 0.5]}}]
    manifest = {"submitter": "test <t@example.org>", "model": {"source": str(folder), "task": task},
                "analyses": analyses}
    prompts = conditions.get("prompts") or [str(c) for c in conditions.get("class_labels", [])]
    if layout == "sd-pixel":
        (tmp_path / "prompts.csv").write_text("text\none disc\none square\none disc\n")
        manifest["dataset"] = {"source": str(tmp_path / "prompts.csv")}
        prompts = ["one disc", "one square"]
    manifest = json.dumps(manifest)
    cat = catalogue.open(tmp_path / "cat", create=True)
    submit(cat, manifest)
    summary = run_queue(cat, device="cpu")
    errors = cat.sql("SELECT error FROM runs WHERE status = 'failed'").to_pylist()
    assert not summary.failed and not errors, errors
    runs = cat.sql("SELECT analysis_id, environment FROM runs ORDER BY analysis_id").to_pylist()
    assert [r["analysis_id"].split("@")[0] for r in runs] == [
        "hallucination.lid", "hallucination.quench", "hallucination.trajectory_variance"]
    for run in runs:
        run["sampler"] = sampler = json.loads(run["environment"])["sampler"]
        assert sampler["pipeline"] == json.loads((folder / "model_index.json").read_text())["_class_name"]
        assert sampler["steps"] == 4 and sampler["guidance_scale"] == conditions.get(
            "guidance_scale", 1.0 if prompts else None)
    # No ground truth for random weights: no hallucination_rate, only each filter's flagged_rate, which is the
    # share of its scores above median + 5 x MAD, recomputed here from the scores artifact.
    assert cat.sql("SELECT count(*) AS n FROM findings WHERE kind IN ('hallucination_rate', 'filter_auroc')"
                   ).to_pylist() == [{"n": 0}]
    flagged = cat.sql("SELECT f.subject, f.value, f.metrics, a.path FROM findings_current f JOIN artifacts a "
                      "ON a.finding_id = f.id WHERE f.kind = 'flagged_rate' ORDER BY f.subject").to_pylist()
    assert [f["subject"] for f in flagged] == ["lid_dsm", "lid_flipd", "trajectory_variance"]
    for row in flagged:
        assert json.loads(row["metrics"])["sampler"]["pipeline"] == runs[0]["sampler"]["pipeline"]
        scores = pq.read_table(cat.root / row["path"])
        values = scores.column("score").to_numpy()
        median = np.median(values)
        threshold = median + 5.0 * (np.median(np.abs(values - median)) or np.std(values))
        assert len(values) == 6 and row["value"] == (values > threshold).mean()
        if prompts:  # each sample's condition: prompt (or class) i mod P
            assert scores.column("condition").to_pylist() == [prompts[i % len(prompts)] for i in range(6)]
    assert check(cat).ok
