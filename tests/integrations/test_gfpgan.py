"""One real GFPGANIFQAModel.optimize_parameters() step on CPU.

GFP-GAN's default StyleGAN2 discriminator needs compiled CUDA ops, so this uses the
extension-free GFPGANv1Clean generator and basicsr's VGGStyleDiscriminator at 128 px.
"""
import torch


def _options(ifqa_checkpoint, tmp_path):
    return {
        "name": "ifqa_test", "model_type": "GFPGANIFQAModel", "num_gpu": 0, "dist": False, "is_train": True,
        "rank": 0, "world_size": 1,
        "network_g": {"type": "GFPGANv1Clean", "out_size": 128, "num_style_feat": 64, "channel_multiplier": 1,
                      "decoder_load_path": None, "fix_decoder": False, "num_mlp": 2, "input_is_latent": True,
                      "different_w": True, "narrow": 0.25, "sft_half": True},
        "network_d": {"type": "VGGStyleDiscriminator", "num_in_ch": 3, "num_feat": 8, "input_size": 128},
        "path": {"pretrain_network_g": None, "pretrain_network_d": None, "experiments_root": str(tmp_path)},
        "train": {
            "optim_g": {"type": "Adam", "lr": 2e-3}, "optim_d": {"type": "Adam", "lr": 2e-3},
            "scheduler": {"type": "MultiStepLR", "milestones": [100], "gamma": 0.5},
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
            "L1_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
            "gan_opt": {"type": "GANLoss", "gan_type": "wgan_softplus", "loss_weight": 0.1},
            "ifqa_opt": {"type": "IFQALoss", "loss_weight": 0.5, "checkpoint": str(ifqa_checkpoint),
                         "region_weights": {"eyes": 2.0, "mouth": 2.0, "background": 0.0}},
            "r1_reg_weight": 10, "net_d_iters": 1, "net_d_init_iters": 0, "net_d_reg_every": 16,
        },
    }


def test_one_optimisation_step_logs_l_g_ifqa_and_moves_net_g(ifqa_checkpoint, tmp_path):
    from basicsr.models import build_model

    from ifqa_loss.integrations.gfpgan import GFPGANIFQAModel

    torch.manual_seed(0)
    model = build_model(_options(ifqa_checkpoint, tmp_path))
    assert isinstance(model, GFPGANIFQAModel)
    before = [p.detach().clone() for p in model.net_g.parameters()]
    box = torch.tensor([[40.0, 50.0, 60.0, 70.0]])  # component boxes at the 128 px training size
    model.feed_data({"lq": torch.rand(1, 3, 128, 128) * 2 - 1, "gt": torch.rand(1, 3, 128, 128) * 2 - 1,
                     "loc_left_eye": box, "loc_right_eye": box + torch.tensor([30.0, 0, 30, 0]),
                     "loc_mouth": torch.tensor([[45.0, 85.0, 85.0, 105.0]])})
    model.optimize_parameters(current_iter=1)

    logs = model.get_current_log()
    assert "l_g_ifqa" in logs and 0 < logs["l_g_ifqa"] < 0.5 + 1e-6  # loss_weight 0.5 x a value in [0,1]
    assert "l_g_pix" in logs and logs["l_g_pix"] > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, model.net_g.parameters(), strict=True))
    assert all(p.grad is None for p in model.cri_ifqa.parameters())


def test_ifqa_weights_are_not_saved_with_the_networks(ifqa_checkpoint, tmp_path):
    from basicsr.models import build_model

    model = build_model(_options(ifqa_checkpoint, tmp_path))
    saved = {k for net in (model.net_g, model.net_d) for k in net.state_dict()}
    assert not any("encoder128" in k for k in saved)


def test_example_options_file_names_our_model_and_a_buildable_ifqa_term(ifqa_checkpoint):
    from pathlib import Path

    import yaml
    from basicsr.losses import build_loss

    from ifqa_loss.integrations.basicsr import IFQALoss

    root = Path(__file__).parents[2]
    opt = yaml.safe_load((root / "integrations" / "gfpgan_ifqa.yml").read_text())
    assert opt["model_type"] == "GFPGANIFQAModel"
    ifqa_opt = dict(opt["train"]["ifqa_opt"], checkpoint=str(ifqa_checkpoint))
    loss = build_loss(ifqa_opt)
    assert isinstance(loss, IFQALoss) and loss.loss_weight == 0.1


def test_adapter_and_launcher_import_in_a_fresh_process():
    """Import order matters (the torchvision alias must precede basicsr): check without help from other tests."""
    import subprocess
    import sys
    from pathlib import Path

    launcher = Path(__file__).parents[2] / "integrations" / "train_gfpgan_ifqa.py"
    code = (f"import importlib.util as u; s = u.spec_from_file_location('launcher', {str(launcher)!r}); "
            "s.loader.exec_module(u.module_from_spec(s))")
    for snippet in ("import ifqa_loss.integrations.basicsr", "import ifqa_loss.integrations.gfpgan", code):
        done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-800:]
