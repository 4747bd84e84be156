"""Runs CodeFormer's stage-3 model (patched copy of its checkout) and prints a JSON report.

    python codeformer_driver.py PATCHED UNPATCHED DATA WEIGHT

Registration: CodeFormer's own basicsr is the one imported (a pip-installed basicsr would shadow it), the
patched joint model registers IFQALoss in that basicsr, and the patched stage-3 options build it.
Loop: two iterations (current_iter 1, then 2) of the patched ``CodeFormerJointModel.optimize_parameters``;
reports each iteration's generator objective (the tensor ``l_g_total.backward()`` is called on), the sum of
CodeFormer's own generator terms in the step's log and a plain IFQALoss on the restored image. Iteration 2
(GAN active: net_d_start_iter 1) is preceded by the unpatched upstream method (loaded from UNPATCHED) run on
the same model from the same state, seed and batch, whose objective is reported too. 512 px (CodeFormer's arch
hard-codes its 16x16 code grid), the widths the options expose made small, no EMA copy (ema_decay 0),
pre-computed ground-truth codes (latent_gt_path) instead of the frozen VQGAN.
Random values stand in for the ImageNet VGG16 weights of LPIPS (not downloadable here).

Time and memory (the suite's goals): one model, not one per class; one forward per run. A run whose update the
test does not need (iteration 1's, and the upstream method's) only records its objective at the first
``backward`` call: none of its ``backward`` calls runs (the adaptive weight's two ``autograd.grad`` passes do,
and leave nothing behind), so no gradient reaches a parameter and no optimiser steps (checked after each such
run: every ``.grad`` is None and both optimisers hold no state, which Adam only creates when it steps), and the
buffers its forwards move (the discriminator's batch-norm statistics) are restored from an in-memory copy. Iteration 2's
patched step runs in full (generator and discriminator updates). Every encoder and generator block, the
LPIPS loss and each of its VGG slices run under ``torch.utils.checkpoint`` (activations recomputed in
backward). Neither changes a forward value, so neither changes the objectives compared.
"""
import copy
import importlib.util
import json
import os
import sys
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).parent


def _load(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _import_their_basicsr(root: Path):
    sys.path.insert(0, str(root))
    os.chdir(root)
    import basicsr

    where = Path(basicsr.__file__).resolve().parent
    if where != (root / "basicsr").resolve():
        sys.exit(f"basicsr resolves to {where}, not CodeFormer's fork in {root}: a pip-installed basicsr shadows it")
    import basicsr.models  # noqa: F401  (imports the patched joint model, which registers IFQALoss)
    return basicsr


def _options(root: Path, data: str, metric) -> dict:
    opt = yaml.safe_load((root / "options" / "CodeFormer_stage3.yml").read_text())
    opt.update(num_gpu=0, dist=False, is_train=True, rank=0, world_size=1)
    opt["path"].update(pretrain_network_g=None, pretrain_network_d=None)
    opt["datasets"]["train"].update(dataroot_gt=data, batch_size_per_gpu=1, num_worker_per_gpu=0, phase="train")
    opt["network_g"].update(dim_embd=32, n_head=2, n_layers=1, connect_list=["32"])
    opt["network_vqgan"]["nf"] = 32  # GroupNorm(32 groups) needs >= 32
    opt["network_d"].update(ndf=4, n_layers=2)
    opt["train"].update(net_d_start_iter=1, ema_decay=0)
    opt["train"]["ifqa_opt"] = dict(opt["train"]["ifqa_opt"], checkpoint=None, metric=metric)
    return opt


def registration(root: Path, metric) -> dict:
    """What the patched options build in CodeFormer's (already imported) basicsr."""
    from basicsr.losses import build_loss
    from basicsr.utils.registry import LOSS_REGISTRY

    ifqa_opt = _options(root, "unused", metric)["train"]["ifqa_opt"]
    loss = build_loss(copy.copy(ifqa_opt))
    return {"registered": "IFQALoss" in LOSS_REGISTRY, "loss_type": type(loss).__module__ + "." + type(loss).__name__,
            "loss_weight": loss.loss_weight, "option_weight": ifqa_opt["loss_weight"]}


NETWORKS = ("net_g", "net_d")
# CodeFormer's generator terms as the joint model logs them (d_weight and the discriminator's are not).
CODEFORMER_TERMS = ("l_feat_encoder", "cross_entropy_loss", "l_g_pix", "l_g_percep", "l_g_gan")


def _buffers(model) -> dict:
    return {(net, name): value.clone() for net in NETWORKS for name, value in getattr(model, net).named_buffers()}


def _restore_after_record_only(model, buffers: dict) -> None:
    """Check that a record-only run (no ``backward`` call ran) left no gradient or optimiser state; put back the
    buffers its forwards moved."""
    for net in NETWORKS:
        assert all(p.grad is None for p in getattr(model, net).parameters()), f"a record-only run left grads on {net}"
        for name, value in getattr(model, net).named_buffers():
            value.copy_(buffers[(net, name)])
    for optimizer in (model.optimizer_g, model.optimizer_d):
        assert not optimizer.state, "a record-only run stepped an optimiser"


def _recompute_in_backward(module: torch.nn.Module) -> None:
    """Run ``module`` under non-reentrant activation checkpointing (same forward values, less memory)."""
    from torch.utils.checkpoint import checkpoint

    forward = module.forward
    module.forward = lambda *args, **kwargs: checkpoint(forward, *args, use_reentrant=False, **kwargs)


def loop(root: Path, unpatched: Path, data: str, weight: float) -> dict:
    sys.path.insert(0, str(HERE))
    import run_offline
    from torchvision.models import _api

    _api.load_state_dict_from_url = run_offline._random_imagenet_weights
    _import_their_basicsr(root)
    from basicsr.data import build_dataset
    from basicsr.models import build_model
    from basicsr.utils.registry import MODEL_REGISTRY

    from ifqa_loss import IFQALoss

    # The unpatched upstream class, loaded beside the patched one (the registry takes one name once).
    patched_class = MODEL_REGISTRY._obj_map.pop("CodeFormerJointModel")
    upstream = _load("basicsr.models.codeformer_joint_model_upstream",
                     unpatched / "basicsr" / "models" / "codeformer_joint_model.py").CodeFormerJointModel
    MODEL_REGISTRY._obj_map["CodeFormerJointModel"] = patched_class

    helpers = _load("ifqa_test_helpers", HERE.parent / "helpers.py")
    metric = helpers.tiny_ifqa_metric()
    torch.manual_seed(0)
    opt = _options(root, data, metric)
    opt["train"]["ifqa_opt"]["loss_weight"] = weight
    # Pre-computed ground-truth codes (CodeFormer's latent_gt_path option) instead of its frozen VQGAN: random
    # indices of the 16x16 grid stand in for the codes of a trained VQGAN (not available here).
    codes = torch.Generator().manual_seed(0)
    names = sorted(path.stem for path in Path(data).iterdir())
    latent_gt = {flip: {name: torch.randint(0, 1024, (256,), generator=codes) for name in names}
                 for flip in ("orig", "hflip")}
    torch.save(latent_gt, "latent_gt.pth")
    opt["datasets"]["train"]["latent_gt_path"] = str(Path("latent_gt.pth").resolve())
    model = build_model(copy.deepcopy(opt))
    assert type(model) is patched_class and not hasattr(model, "net_g_ema")
    # The joint model reaches net_g through .module (basicsr wraps it in DataParallel/DDP on GPUs);
    # without CUDA, DataParallel is a pass-through wrapper.
    model.net_g = torch.nn.DataParallel(model.net_g)
    for block in (*model.net_g.module.encoder.blocks, *model.net_g.module.generator.blocks):
        _recompute_in_backward(block)
    # LPIPS: whole (its per-layer differences at 512 px too), and inside it each VGG slice again, so that its
    # backward recomputes the restored image's features one slice at a time (measured for the driver: peak RSS
    # 3,304-3,370 MiB and 96-98 s, against 3,415 MiB and 105 s with the whole loss only).
    _recompute_in_backward(model.cri_perceptual)
    for index in range(1, 6):
        _recompute_in_backward(getattr(model.cri_perceptual.perceptual.net, f"slice{index}"))
    dataset = build_dataset(opt["datasets"]["train"])
    # The recipe's region weights (eyes/mouth/nose emphasised, background ignored) and the basicsr adapter's clamp.
    plain_ifqa = IFQALoss(metric=metric, out_of_range="clamp",
                          region_weights=opt["train"]["ifqa_opt"]["region_weights"])

    seen, record_only = [], [False]
    original_backward = torch.Tensor.backward

    def recording_backward(self, *args, **kwargs):
        seen.append(self.detach().clone())
        if not record_only[0]:
            original_backward(self, *args, **kwargs)

    def run(method, current_iter, batch, record) -> float:
        model.feed_data(batch)
        seen.clear()
        record_only[0] = record
        buffers = _buffers(model) if record else None
        torch.manual_seed(current_iter)
        method(model, current_iter)
        if record:
            _restore_after_record_only(model, buffers)
        return seen[0].item()  # l_g_total.backward() is the step's first backward

    torch.Tensor.backward = recording_backward
    report = []
    for current_iter in (1, 2):
        batch = torch.utils.data.default_collate([dataset[current_iter - 1]])
        totals = {}
        if current_iter == 2:  # the GAN-active step, where the upstream method's adaptive weight comes in
            totals["upstream"] = run(upstream.optimize_parameters, current_iter, batch, record=True)
        totals["patched"] = run(patched_class.optimize_parameters, current_iter, batch, record=current_iter == 1)
        with torch.no_grad():
            ifqa = plain_ifqa(model.output).item()
        logged = [key for key in CODEFORMER_TERMS if key in model.log_dict]
        report.append({"iter": current_iter, **totals, "ifqa": ifqa, "codeformer_terms_logged": logged,
                       "codeformer_terms": sum(model.log_dict[key] for key in logged),
                       "logged_ifqa": float(model.log_dict["l_g_ifqa"]),
                       "gan_active": "l_g_gan" in model.log_dict})
    torch.Tensor.backward = original_backward
    return {"registration": registration(root, metric), "iterations": report}


if __name__ == "__main__":
    print(json.dumps(loop(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve(), sys.argv[3], float(sys.argv[4]))))
