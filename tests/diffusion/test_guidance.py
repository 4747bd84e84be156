"""Guidance in a hand-written loop: known answers first (a target brightness), then scale 0, latents, IFQA."""
import pytest
import torch

pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMScheduler  # noqa: E402

from ifqa_loss import IFQALoss  # noqa: E402
from ifqa_loss.diffusion.guidance import QualityGuidance, vae_decoder  # noqa: E402
from ifqa_loss.diffusion.models import tiny_unet, tiny_vae  # noqa: E402
from ifqa_loss.diffusion.sampling import sample, start_sample, unet_denoiser  # noqa: E402

from helpers import tiny_ifqa_metric  # noqa: E402

TARGET = 0.5


def brightness(image):
    """Known optimum: mean brightness TARGET."""
    return (image.mean(dim=(1, 2, 3)) - TARGET).pow(2).mean()


def gaussian_denoiser(scheduler, sigma_data=0.5):
    """The exact posterior-mean denoiser of x0 ~ N(0, sigma_data^2 I), for the scheduler's prediction type."""

    def denoise(x, t, cond=None):
        a = scheduler.alphas_cumprod[int(t)].to(x)
        x0 = a.sqrt() * sigma_data**2 * x / (a * sigma_data**2 + 1 - a)
        eps = (1 - a).sqrt() * x / (a * sigma_data**2 + 1 - a)
        return {"epsilon": eps, "sample": x0, "v_prediction": a.sqrt() * eps - (1 - a).sqrt() * x0}[
            scheduler.config.prediction_type]

    return denoise


def scheduler_for(kind, prediction_type="epsilon", steps=8):
    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[kind]
    scheduler = cls(num_train_timesteps=1000, prediction_type=prediction_type, clip_sample=False)
    scheduler.set_timesteps(steps)
    return scheduler


def run(denoiser, scheduler, shape, guidance=None, seed=0, **kwargs):
    x, steps = start_sample(scheduler, shape, generator=torch.Generator().manual_seed(seed))
    return sample(denoiser, scheduler, x, steps, guidance=guidance, generator=torch.Generator().manual_seed(seed + 1),
                  **kwargs)


@pytest.fixture(scope="module")
def pixel_denoiser():
    return unet_denoiser(tiny_unet().eval(), condition=None)


@pytest.mark.parametrize("kind,prediction_type", [("ddim", "epsilon"), ("ddpm", "epsilon"), ("ddim", "v_prediction"),
                                                  ("ddim", "sample")])
def test_guidance_moves_samples_to_the_known_optimum(kind, prediction_type):
    scheduler = scheduler_for(kind, prediction_type)
    denoiser = gaussian_denoiser(scheduler)
    guidance = QualityGuidance(quality=brightness, scale=0.5, normalize="rms")
    for seed in range(3):
        plain = run(denoiser, scheduler, (2, 3, 16, 16), seed=seed).sample
        guided = run(denoiser, scheduler, (2, 3, 16, 16), guidance, seed=seed).sample
        before = (plain.mean(dim=(1, 2, 3)) - TARGET).abs()
        after = (guided.mean(dim=(1, 2, 3)) - TARGET).abs()
        assert (after < 0.4 * before).all(), (seed, before.tolist(), after.tolist())


@pytest.mark.parametrize("kind", ["ddim", "ddpm"])
def test_scale_zero_is_bit_identical_to_the_unguided_loop(pixel_denoiser, kind):
    scheduler = scheduler_for(kind)
    guidance = QualityGuidance(quality=brightness, scale=0.0)
    plain = run(pixel_denoiser, scheduler, (2, 3, 16, 16))
    guided = run(pixel_denoiser, scheduler, (2, 3, 16, 16), guidance)
    assert len(guided.log) == len(scheduler.timesteps) and all(e["loss"] > 0 for e in guided.log)  # it did run
    assert torch.equal(plain.sample, guided.sample)


def test_steps_schedule_and_clipping(pixel_denoiser):
    scheduler = scheduler_for("ddim")
    guidance = QualityGuidance(quality=brightness, scale=2.0, schedule="sqrt_one_minus_alpha_bar", max_norm=0.01,
                               steps=slice(0.0, 0.5))
    out = run(pixel_denoiser, scheduler, (2, 3, 16, 16), guidance)
    assert [e["index"] for e in out.log] == [0, 1, 2, 3]
    weights = [e["weight"] for e in out.log]
    assert weights == sorted(weights, reverse=True) and weights[0] < 2.0  # decays with the noise level
    assert all(e["grad_rms"] <= 0.01 + 1e-6 for e in out.log)


def test_fidelity_term_pulls_towards_the_degraded_input():
    scheduler = scheduler_for("ddim")
    pixel_denoiser = gaussian_denoiser(scheduler)
    degraded = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(5)) * 2 - 1  # a 2x down-sampled LQ
    guidance = QualityGuidance(quality=None, fidelity_weight=1.0, scale=0.5, normalize="rms")
    plain = run(pixel_denoiser, scheduler, (2, 3, 16, 16)).sample
    guided = run(pixel_denoiser, scheduler, (2, 3, 16, 16), guidance, degraded=degraded).sample
    error = lambda img: torch.nn.functional.avg_pool2d(img, 2).sub(degraded).pow(2).mean()  # noqa: E731
    assert error(guided) < 0.5 * error(plain)


def test_latent_guidance_through_the_vae_decoder():
    vae = tiny_vae().eval()
    scheduler = scheduler_for("ddim")
    denoiser = gaussian_denoiser(scheduler, sigma_data=1.0)  # a N(0, I) latent prior; the decoder is random
    guidance = QualityGuidance(quality=brightness, scale=0.5, normalize="rms", decode=vae_decoder(vae))
    decode = vae_decoder(vae)
    with torch.no_grad():
        plain = decode(run(denoiser, scheduler, (2, 4, 8, 8)).sample)
        guided = decode(run(denoiser, scheduler, (2, 4, 8, 8), guidance).sample)
    assert guided.shape == (2, 3, 16, 16)
    assert ((guided.mean(dim=(1, 2, 3)) - TARGET).abs() < (plain.mean(dim=(1, 2, 3)) - TARGET).abs()).all()


def test_decoder_checkpointing_gives_the_same_gradient_and_decode_every_skips():
    vae = tiny_vae().eval()
    z = torch.randn(1, 4, 8, 8, requires_grad=True)
    grads = []
    for checkpointing in (False, True):
        vae.disable_gradient_checkpointing()
        (grad,) = torch.autograd.grad(brightness(vae_decoder(vae, checkpointing=checkpointing)(z)), z)
        grads.append(grad)
    assert vae.decoder.gradient_checkpointing
    torch.testing.assert_close(grads[0], grads[1])

    denoiser = unet_denoiser(tiny_unet(in_channels=4, out_channels=4, sample_size=8).eval(), condition=None)
    guidance = QualityGuidance(quality=brightness, fidelity_weight=0.1, scale=0.1, decode=vae_decoder(vae),
                               decode_every=2, degraded_latent=torch.zeros(2, 4, 8, 8))
    out = run(denoiser, scheduler_for("ddim", steps=4), (2, 4, 8, 8), guidance, degraded=torch.zeros(2, 3, 16, 16))
    assert ["quality" in e for e in out.log] == [True, False, True, False]
    assert all("latent_fidelity" in e for e in out.log[1::2])


def test_ifqa_loss_guides_with_its_options(pixel_denoiser):
    ifqa = IFQALoss(metric=tiny_ifqa_metric(), input_range=(-1, 1), mode="nonsaturating",
                    region_weights={"eyes": 2.0, "background": 0.0})
    scheduler = scheduler_for("ddim")
    guidance = QualityGuidance(quality=ifqa, scale=0.3, normalize="rms", fidelity_weight=0.0)
    with torch.no_grad():
        plain = ifqa(run(pixel_denoiser, scheduler, (2, 3, 16, 16)).sample.clamp(-1, 1))
        guided = ifqa(run(pixel_denoiser, scheduler, (2, 3, 16, 16), guidance).sample.clamp(-1, 1))
    assert guided < plain
    assert sum(p.requires_grad for p in ifqa.metric.net.parameters()) == 0


def test_refusals_name_the_fix():
    with pytest.raises(ValueError, match="quality="):
        QualityGuidance(quality=None)
    with pytest.raises(ValueError, match="schedule"):
        QualityGuidance(quality=brightness, schedule="cosine")
    guidance = QualityGuidance(quality=brightness, fidelity_weight=1.0)
    with pytest.raises(ValueError, match="degraded="):
        guidance.objective(torch.zeros(1, 3, 8, 8), None)


def test_steps_as_an_iterable_guide_exactly_those_steps_every_run():
    scheduler = scheduler_for("ddim", steps=5)
    guidance = QualityGuidance(quality=brightness, scale=0.1, steps=(i for i in (1, 3)))  # a one-shot generator
    for _ in range(2):
        out = run(gaussian_denoiser(scheduler), scheduler, (1, 3, 8, 8), guidance)
        assert [e["index"] for e in out.log] == [1, 3]


def test_guidance_report_script_runs_and_refuses_missing_weights(tmp_path, capsys):
    import importlib.util
    from pathlib import Path

    from ifqa_loss.nets.ifqa_unet import IFQADiscriminator
    from ifqa_loss.weights import save_checkpoint

    script = Path(__file__).resolve().parents[2] / "integrations" / "diffusion" / "guidance_report.py"
    spec = importlib.util.spec_from_file_location("guidance_report", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(tmp_path / f"d{seed}.pth", IFQADiscriminator(widths=(4, 8, 8, 16, 16),
                                                                                   num_bottleneck=1), "ifqa"))
    assert module.main(["--guide", str(tmp_path / "missing.pth"), "--judge", str(paths[1])]) == 2
    assert "train-ifqa" in capsys.readouterr().err
    out = tmp_path / "report.json"
    assert module.main(["--guide", str(paths[0]), "--judge", str(paths[1]), "--images", "2", "--seeds", "2",
                        "--steps", "4", "--size", "32", "--out", str(out)]) == 0
    import json

    report = json.loads(out.read_text())
    # Unit = image (its two noise seeds averaged first), not (image, seed) pair.
    assert report["n"] == 2 and set(report["arms"]) == {"unguided", "fidelity_only", "ifqa+fidelity"}
    guided = report["arms"]["ifqa+fidelity"]
    for key in ("judge_minus_unguided", "judge_minus_fidelity_only"):
        mean, low, high = guided[key]
        assert low <= mean <= high
