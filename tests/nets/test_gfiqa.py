import pytest
import torch
import torchvision

from ifqa_loss.nets.gfiqa import GFIQA, ResNetEncoder

from helpers import TINY_GFIQA, tiny_gfiqa


def test_codes_after_k_do_not_change_the_prior_features():
    model = tiny_gfiqa().eval()
    codes, _ = model.encode(torch.rand(2, 3, 32, 32) * 2 - 1)
    k = model.num_injected
    changed = codes.clone()
    changed[:, k:] += 5.0
    with torch.no_grad():
        torch.testing.assert_close(model.prior_features(codes), model.prior_features(changed))
        changed[:, k - 1] += 5.0
        assert not torch.allclose(model.prior_features(codes), model.prior_features(changed))


def test_forward_skips_the_discarded_codes_and_is_the_same_function():
    """forward computes only the K injected codes; MOS and input gradient equal the all-codes path."""
    model = tiny_gfiqa(seed=2).eval()
    x = (torch.rand(2, 3, 32, 32) * 2 - 1).requires_grad_()
    codes, f_e = model.encode(x)
    assert codes.shape[1] == model.generator.num_latent
    reference = model.predict(x, codes, f_e)
    (reference_grad,) = torch.autograd.grad(reference.sum(), x)
    short_codes, _ = model.encode(x, num_codes=model.num_injected)
    assert short_codes.shape[1] == model.num_injected
    mos = model(x)
    (grad,) = torch.autograd.grad(mos.sum(), x)
    assert torch.equal(mos, reference)
    torch.testing.assert_close(grad, reference_grad, rtol=0, atol=1e-12)


def test_too_few_codes_for_the_injected_count_is_refused():
    model = tiny_gfiqa()
    with pytest.raises(ValueError, match="4 codes are injected but only 2"):
        model.latents(torch.ones(1, 2, 16), num_injected=4)
    with pytest.raises(ValueError, match="num_codes must be in 1..8"):
        model.encode(torch.zeros(1, 3, 32, 32), num_codes=9)


def test_uninjected_codes_sit_at_the_mean_latent():
    model = tiny_gfiqa()
    latents = model.latents(torch.ones(1, 8, 16), num_injected=3)
    torch.testing.assert_close(latents[0, 3:], model.w_avg.expand(5, -1))
    torch.testing.assert_close(latents[0, :3], model.w_avg.expand(3, -1) + 1)


def test_forward_predicts_one_mos_in_unit_range_and_the_prior_stays_frozen():
    model = tiny_gfiqa().train()
    mos = model(torch.rand(3, 3, 32, 32) * 2 - 1)
    assert mos.shape == (3,) and ((mos > 0) & (mos < 1)).all()
    assert not model.generator.training and not any(p.requires_grad for p in model.generator.parameters())
    mos.sum().backward()
    assert model.head[0].weight.grad is not None


def test_state_dict_round_trip():
    model = tiny_gfiqa(seed=1).eval()
    clone = GFIQA(**TINY_GFIQA).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(clone(x), model(x))


def test_encoder_loads_torchvision_resnet50_weights():
    encoder = ResNetEncoder()
    reference = torchvision.models.resnet50(weights=None).state_dict()
    missing, unexpected = encoder.load_state_dict(reference, strict=False)
    assert missing == [] and sorted(unexpected) == ["fc.bias", "fc.weight"]
    assert encoder.stage_channels == (256, 512, 1024, 2048)


def test_code_groups_must_cover_every_code():
    with pytest.raises(ValueError, match="must sum to"):
        GFIQA(**{**TINY_GFIQA, "code_groups": (2, 2, 2)})


def test_default_is_the_papers_table_1_layout():
    """Shapes of every stage of the default model (built and run on meta: no memory, no weights)."""
    from ifqa_loss.nets.stylegan2_original import StyleGAN2GeneratorOriginal

    with torch.device("meta"):
        model = GFIQA().eval()
        seen = {}
        model.map2quality.register_forward_hook(lambda m, i, o: seen.update(f_g=tuple(i[0].shape),
                                                                            refined=tuple(o.shape)))
        model.encoder_proj.register_forward_hook(lambda m, i, o: seen.update(c4=tuple(i[0].shape), f_e=tuple(o.shape)))
        model.head.register_forward_hook(lambda m, i, o: seen.update(pooled=tuple(i[0].shape)))
        mos = model(torch.empty(1, 3, 512, 512))
    assert isinstance(model.generator, StyleGAN2GeneratorOriginal) and model.num_injected == 12
    assert seen == {"f_g": (1, 32, 512, 512), "refined": (1, 1024, 16, 16), "c4": (1, 2048, 16, 16),
                    "f_e": (1, 1024, 16, 16), "pooled": (1, 2048)}
    linears = [(m.in_features, m.out_features) for m in model.head if isinstance(m, torch.nn.Linear)]
    assert linears == [(2048, 1024), (1024, 512), (512, 1)]  # 3 fully connected layers
    assert mos.shape == (1,)


@torch.no_grad()
@pytest.mark.parametrize("fusion", ["e_mod", "e_g"])
def test_head_reads_f_e_concatenated_with_f_mod_or_f_g(fusion):
    model = GFIQA(**{**TINY_GFIQA, "fusion": fusion}).eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    seen = {}
    model.head.register_forward_hook(lambda m, i, o: seen.update(pooled=i[0]))
    model(x)
    codes, c4 = model.encode(x)
    f_g = model.map2quality(model.prior_features(codes))
    # the tiny model's 1x1 stage 4 is resized to f_G's grid (at the paper's 512 both are 16x16)
    f_e = torch.nn.functional.interpolate(model.encoder_proj(c4), size=f_g.shape[-2:], mode="bilinear")
    other = model.spade(f_e, f_g) if fusion == "e_mod" else f_g
    torch.testing.assert_close(seen["pooled"], torch.cat([f_e, other], 1).mean((2, 3)))


def test_spade_normalises_f_e_per_channel_over_the_batch_by_default():
    assert isinstance(GFIQA(**{k: v for k, v in TINY_GFIQA.items() if k != "spade_norm"}).spade.norm,
                      torch.nn.BatchNorm2d)


def test_clean_prior_option_uses_the_gfpgan_v14_layout():
    from ifqa_loss.nets.stylegan2 import StyleGAN2Generator

    model = GFIQA(**{**TINY_GFIQA, "prior": "clean"})
    assert type(model.generator) is StyleGAN2Generator and model.config["prior"] == "clean"


def test_config_of_the_removed_variant_is_refused_with_the_reason():
    from ifqa_loss.nets.gfiqa import build_gfiqa

    legacy = {**{k: v for k, v in TINY_GFIQA.items() if k != "prior"}, "channel_multiplier": 1}
    with pytest.raises(ValueError, match="pre-paper variant.*Retrain"):
        build_gfiqa(**legacy)


def test_checkpoint_of_the_removed_variant_is_refused_by_load_metric(tmp_path):
    """A best.pth of the pre-paper trainer (same file layout, config without 'prior') gets the reason, not a crash."""
    from ifqa_loss.metric import load_metric

    legacy_config = {**{k: list(v) if isinstance(v, tuple) else v for k, v in TINY_GFIQA.items() if k != "prior"},
                     "channel_multiplier": 1}
    torch.save({"model": tiny_gfiqa().state_dict(), "arch": "gfiqa", "config": legacy_config}, tmp_path / "best.pth")
    from ifqa_loss.weights import CheckpointError

    with pytest.raises(CheckpointError, match="pre-paper variant"):
        load_metric("gfiqa", checkpoint=tmp_path / "best.pth")
