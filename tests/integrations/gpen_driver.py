"""Runs GPEN's own ``train()`` (patched copy) for 2 iterations on CPU and prints what the generator objective was.

    python gpen_driver.py PATCHED UNPATCHED DATA OUT WEIGHT

Builds GPEN's models and losses the way its ``__main__`` does (``__main__`` itself hard-codes
``device = 'cuda'``), at 256 px (GPEN's identity crop needs >= 256) with narrow widths, and records
every call of the patched ``g_nonsaturating_loss``: its value, the unpatched upstream function's
value on the same tensors, and a plain ``IFQALoss`` on the same fake image. Prints one JSON object.
Random values stand in for the IR-SE50 and AlexNet weights (not downloadable here).
"""
import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch


def main():
    patched_dir, unpatched_dir, data_dir, out_dir, weight = sys.argv[1:6]
    weight = float(weight)
    sys.path.insert(0, patched_dir)
    os.chdir(patched_dir)
    torch.manual_seed(0)
    import train_simple as patched  # the patched upstream script; its __main__ does not run

    spec = importlib.util.spec_from_file_location("train_simple_upstream", Path(unpatched_dir) / "train_simple.py")
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    from face_model.gpen_model import Discriminator, FullGenerator
    from model_irse import Backbone

    from ifqa_loss import IFQALoss
    from ifqa_loss.integrations.gpen import IFQATerm

    helpers_spec = importlib.util.spec_from_file_location("ifqa_test_helpers", Path(__file__).parents[1] / "helpers.py")
    helpers = importlib.util.module_from_spec(helpers_spec)
    helpers_spec.loader.exec_module(helpers)

    out = Path(out_dir)
    args = argparse.Namespace(iter=2, start_iter=0, batch=1, size=256, r1=10, path_regularize=2, path_batch_shrink=2,
                              d_reg_every=16, g_reg_every=4, save_freq=1, distributed=False,
                              ckpt=str(out / "ckpt"), sample=str(out / "sample"), val_dir=str(Path(data_dir) / "val"))
    os.makedirs(args.ckpt, exist_ok=True)
    os.makedirs(args.sample, exist_ok=True)
    size, latent, n_mlp, narrow = 256, 32, 2, 1 / 16
    generator = FullGenerator(size, latent, n_mlp, channel_multiplier=1, narrow=narrow, device="cpu")
    discriminator = Discriminator(size, channel_multiplier=1, narrow=narrow, device="cpu")
    g_ema = FullGenerator(size, latent, n_mlp, channel_multiplier=1, narrow=narrow, device="cpu")
    g_ema.eval()
    patched.accumulate(g_ema, generator, 0)
    g_reg_ratio, d_reg_ratio = args.g_reg_every / (args.g_reg_every + 1), args.d_reg_every / (args.d_reg_every + 1)
    g_optim = torch.optim.Adam(generator.parameters(), lr=0.002 * g_reg_ratio,
                               betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    d_optim = torch.optim.Adam(discriminator.parameters(), lr=0.002 * d_reg_ratio,
                               betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))
    id_weights = Backbone(input_size=112, num_layers=50, drop_ratio=0.6, mode="ir_se").state_dict()
    id_loss = patched.IDLoss(patched_dir, "cpu", ckpt_dict=id_weights)
    lpips_func = patched.lpips.LPIPS(net="alex", version="0.1", pnet_rand=True)
    metric = helpers.tiny_ifqa_metric()
    ifqa_term = IFQATerm(weight=weight, metric=metric)  # as the patched __main__ builds it
    plain_ifqa = IFQALoss(metric=metric, input_range=(-1, 1), out_of_range="clamp")
    dataset = patched.FaceDataset(str(Path(data_dir) / "hq"), size)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch, drop_last=True,
                                         sampler=patched.data_sampler(dataset, shuffle=True, distributed=False))

    records = []
    patched_loss = patched.g_nonsaturating_loss

    def recording_loss(fake_pred, loss_funcs=None, fake_img=None, real_img=None, input_img=None):
        total = patched_loss(fake_pred, loss_funcs, fake_img, real_img, input_img)
        with torch.no_grad():
            original = upstream.g_nonsaturating_loss(fake_pred, loss_funcs[:2], fake_img, real_img, input_img)
            ifqa = plain_ifqa(fake_img)
        records.append({"total": total.item(), "upstream": original.item(), "ifqa": ifqa.item(),
                        "fake_min": fake_img.min().item(), "fake_max": fake_img.max().item()})
        return total

    patched.g_nonsaturating_loss = recording_loss  # train() looks the function up at call time
    before = [p.detach().clone() for p in generator.parameters()]
    patched.train(args, loader, generator, discriminator, [torch.nn.SmoothL1Loss(), id_loss, ifqa_term],
                  g_optim, d_optim, g_ema, lpips_func, "cpu")
    moved = any(not torch.equal(b, p) for b, p in zip(before, generator.parameters(), strict=False))
    saved = {name: sorted(torch.load(path, map_location="cpu", weights_only=True)) for name, path in
             ((p.name, p) for p in sorted(Path(args.ckpt).glob("*.pth")))}
    print(json.dumps({"records": records, "generator_moved": moved, "saved": saved,
                      "saved_keys": sorted(k for p in Path(args.ckpt).glob("*.pth")
                                           for k in torch.load(p, map_location="cpu", weights_only=True)["g"])}))


if __name__ == "__main__":
    main()
