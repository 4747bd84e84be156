"""Session fixtures built from the reference material (see tests/reference.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from reference import FIXTURES, reference_state_dict


@pytest.fixture(scope="session")
def expected() -> dict:
    return json.loads((FIXTURES / "expected.json").read_text())


@pytest.fixture(scope="session")
def ifqa_state_dict() -> dict[str, torch.Tensor]:
    return reference_state_dict("ifqa_cnn_keys.json")


@pytest.fixture(scope="session")
def ifqa_checkpoint(tmp_path_factory, ifqa_state_dict) -> Path:
    """The official layout {'D': state_dict} with the reference weights."""
    path = tmp_path_factory.mktemp("weights") / "IFQA_Metric.pth"
    torch.save({"D": ifqa_state_dict}, path)
    return path


@pytest.fixture(scope="session")
def ifqa_vit_checkpoint(tmp_path_factory, ifqa_vit_state_dict) -> Path:
    path = tmp_path_factory.mktemp("weights_vit") / "IFQA++_Metric.pth"
    torch.save({"D": ifqa_vit_state_dict}, path)
    return path


@pytest.fixture(scope="session")
def ifqa_vit_state_dict() -> dict[str, torch.Tensor]:
    return reference_state_dict("ifqa_vit_keys.json")


def _reference_net(build, state_dict):
    """A published-size network with the reference weights (built on meta, no double allocation)."""
    with torch.device("meta"):
        net = build()
    net.load_state_dict(state_dict, strict=True, assign=True)
    return net.eval()


@pytest.fixture(scope="session")
def ifqa_vit_net(ifqa_vit_state_dict):
    from ifqa_loss.nets.ifqa_vit import IFQAViT

    return _reference_net(IFQAViT, ifqa_vit_state_dict)


@pytest.fixture(scope="session")
def ifqa_net(ifqa_state_dict):
    from ifqa_loss.nets.ifqa_unet import IFQADiscriminator

    return _reference_net(IFQADiscriminator, ifqa_state_dict)
