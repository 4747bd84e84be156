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
