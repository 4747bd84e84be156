"""GFP-GAN's real training loop with the IFQA term, on CPU: dataset -> model -> save -> resume.

Runs the recipe's launcher (integrations/gfpgan/train_gfpgan_ifqa.py) on the recipe's options file
with the smallest widths GFP-GAN allows: 512 px (the facial-component crops are sized for 512),
narrow generator and discriminator, one VGG layer. Everything else is the recipe: basicsr's pipeline,
GFP-GAN's FFHQDegradationDataset with components, GFPGANIFQAModel with StyleGAN2Discriminator,
facial-component discriminators, ArcFace identity, perceptual/style, pyramid and pixel losses.
"""
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

ROOT = Path(__file__).parents[2]
RECIPE = ROOT / "integrations" / "gfpgan"
RUN_OFFLINE = Path(__file__).with_name("run_offline.py")
SAMPLE = ROOT / "ifqa_loss" / "samples" / "face512.png"
# Boxes (x, y, half size) around the FFHQ-template eyes and mouth, the layout of FFHQ_eye_mouth_landmarks_512.pth.
COMPONENTS = {"left_eye": [193.0, 240.0, 24.0], "right_eye": [319.0, 240.0, 24.0], "mouth": [257.0, 371.0, 45.0]}


def _faces(folder: Path, count: int = 2) -> None:
    folder.mkdir(parents=True)
    face = Image.open(SAMPLE).convert("RGB")
    for index in range(count):
        shifted = Image.fromarray(np.roll(np.asarray(face), 4 * index, axis=1))
        shifted.save(folder / f"{index:08d}.png")


def _component_file(path: Path, count: int = 2) -> None:
    # numpy values as in GFP-GAN's released file: torch >= 2.6 weights-only loading refuses them by default.
    torch.save({f"{i:08d}": {k: np.array(v) for k, v in COMPONENTS.items()} for i in range(count)}, path)


def _options(tmp_path: Path, ifqa_checkpoint: Path, total_iter: int, resume_state: str | None = None) -> Path:
    opt = yaml.safe_load((RECIPE / "train_gfpgan_ifqa.yml").read_text())
    opt["name"] = "gfpgan_ifqa_ci"
    data = opt["datasets"]["train"]
    data.update(dataroot_gt=str(tmp_path / "ffhq_512"), component_path=str(tmp_path / "components.pth"),
                num_worker_per_gpu=0, batch_size_per_gpu=1, color_jitter_prob=None, color_jitter_pt_prob=None)
    del opt["datasets"]["val"], opt["val"]
    opt["network_g"].update(num_style_feat=16, channel_multiplier=1, num_mlp=1, narrow=0.0625)
    opt["network_d"]["narrow"] = 0.0625
    opt["network_identity"]["layers"] = [1, 1, 1, 1]
    opt["path"].update(pretrain_network_g=None, pretrain_network_identity=None, resume_state=resume_state)
    train = opt["train"]
    train["total_iter"] = total_iter
    train["perceptual_opt"]["layer_weights"] = {"conv1_1": 0.1}  # the style/perceptual code path, one VGG layer
    train["ifqa_opt"]["checkpoint"] = str(ifqa_checkpoint)
    opt["logger"].update(print_freq=1, save_checkpoint_freq=2, use_tb_logger=False)
    path = tmp_path / f"options_{total_iter}.yml"
    path.write_text(yaml.safe_dump(opt))
    return path


def _train(tmp_path: Path, options: Path) -> str:
    """Stdout, stderr and the log file(s) this run wrote (each basicsr run starts a new log file)."""
    earlier_logs = set(tmp_path.glob("experiments/*/train_*.log"))
    command = [sys.executable, str(RUN_OFFLINE), str(RECIPE / "train_gfpgan_ifqa.py"), "-opt", str(options)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    logs = sorted(set(tmp_path.glob("experiments/*/train_*.log")) - earlier_logs)
    return done.stdout + done.stderr + "".join(p.read_text() for p in logs)


def _saved_keys(value, prefix=""):
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _saved_keys(item, f"{prefix}{key}.")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _saved_keys(item, f"{prefix}{index}.")
    else:
        yield prefix[:-1]


@pytest.fixture(scope="module")
def tiny_ifqa(tmp_path_factory):
    """A narrow IFQA checkpoint (same code path and key names as the published one, milliseconds per call)."""
    from ifqa_loss.weights import save_checkpoint

    from helpers import tiny_ifqa_metric

    net = tiny_ifqa_metric().net
    return save_checkpoint(tmp_path_factory.mktemp("tiny_ifqa") / "ifqa_tiny.pth", net, "ifqa"), set(net.state_dict())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_ifqa):
    """2 iterations with a checkpoint at 2, then a resume from it to 3."""
    ifqa_checkpoint = tiny_ifqa[0]
    tmp_path = tmp_path_factory.mktemp("gfpgan")
    _faces(tmp_path / "ffhq_512")
    _component_file(tmp_path / "components.pth")
    first = _train(tmp_path, _options(tmp_path, ifqa_checkpoint, total_iter=2))
    state = tmp_path / "experiments" / "gfpgan_ifqa_ci" / "training_states" / "2.state"
    second = _train(tmp_path, _options(tmp_path, ifqa_checkpoint, total_iter=3, resume_state=str(state)))
    return tmp_path, first, second


def test_the_component_file_needs_our_loader():
    from ifqa_loss.integrations.compat import load_component_file

    path = Path(pytest.importorskip("tempfile").mkdtemp()) / "components.pth"
    _component_file(path, count=1)
    with pytest.raises(Exception, match="Weights only load failed"):
        torch.load(path)
    assert load_component_file(path)["00000000"]["mouth"].tolist() == COMPONENTS["mouth"]


def test_training_logs_the_ifqa_term_every_iteration(trained):
    _, first, _ = trained
    iterations = {int(m.group(1)) for m in re.finditer(r"iter:\s+(\d+),.*l_g_ifqa: [0-9.e+-]+", first)}
    assert iterations == {1, 2}
    for name in ("l_g_pix", "l_p_8", "l_g_percep", "l_g_style", "l_g_gan", "l_g_gan_left_eye",
                 "l_g_comp_style_loss", "l_identity", "l_d"):
        assert f"{name}: " in first, f"the recipe's {name} is missing from the log"


def test_resume_continues_from_the_saved_iteration(trained):
    tmp_path, _, second = trained
    assert re.search(r"Resuming training from epoch: \d+, iter: 2\.", second)
    iterations = {int(m.group(1)) for m in re.finditer(r"iter:\s+(\d+),.*l_g_ifqa: ", second)}
    assert iterations == {3}
    assert (tmp_path / "experiments" / "gfpgan_ifqa_ci" / "models" / "net_g_latest.pth").is_file()


def test_no_saved_file_holds_ifqa_weights(trained, tiny_ifqa):
    tmp_path, _, _ = trained
    saved = sorted((tmp_path / "experiments").rglob("*.pth")) + sorted((tmp_path / "experiments").rglob("*.state"))
    assert len(saved) >= 10  # net_g, net_d, 3 component Ds at 2 and latest, training state
    ifqa_keys = tiny_ifqa[1]
    for path in saved:
        keys = set(_saved_keys(torch.load(path, map_location="cpu", weights_only=False)))
        leaked = {k for k in keys if any(k == i or k.endswith("." + i) for i in ifqa_keys) or "ifqa" in k.lower()}
        assert not leaked, f"{path.name} holds IFQA weights: {sorted(leaked)[:3]}"
    state = torch.load(saved[-1], map_location="cpu", weights_only=False)
    assert json.dumps(sorted(state)) == json.dumps(["epoch", "iter", "optimizers", "schedulers"])
