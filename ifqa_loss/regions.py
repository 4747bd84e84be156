"""Soft facial-region masks for region-weighted quality losses.

Every builder returns ``dict[str, Tensor]`` with one (N,1,H,W) mask in [0,1] per
name in :data:`REGION_NAMES`. The masks form a soft partition of the image
(they sum to ~1 at every pixel): features first, ``skin`` is the rest of the
face, ``background`` the rest of the image. Edges are feathered with a Gaussian
blur whose width is a fraction of the image size, so masks look the same at any
resolution. No gradient flows through masks.

"left"/"right" are image sides (the 5-point template's first point, GFP-GAN's
``loc_left_eye`` and iBUG-68 points 36-41 are the eye on the image's left).

Sources:
    * :func:`template_regions` – the FFHQ-aligned 5-point template (default for aligned faces)
    * :func:`regions_from_landmarks` – per-sample 5- or 68-point landmarks
    * :func:`regions_from_boxes` – GFP-GAN component boxes ``loc_left_eye``/``loc_right_eye``/``loc_mouth``
    * :func:`regions_from_parsing` – a CelebAMask-HQ 19-class face-parsing label map
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from kornia.filters import gaussian_blur2d

FEATURE_NAMES = ("left_eye", "right_eye", "left_brow", "right_brow", "nose", "mouth")
REGION_NAMES = (*FEATURE_NAMES, "skin", "background")
REGION_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes": ("left_eye", "right_eye"),
    "brows": ("left_brow", "right_brow"),
}

# The 5-point template of FFHQ-aligned 512x512 faces (eye, eye, nose tip, mouth corners), as published in
# facexlib 0.3.0, facexlib/utils/face_restoration_helper.py, FaceRestoreHelper.face_template ("standard 5
# landmarks for FFHQ faces with 512 x 512"), which GFP-GAN, CodeFormer and GPEN's facexlib path align to.
# facexlib scales it to other sizes by multiplying (template * size / 512): see template_points().
FFHQ_TEMPLATE_512 = torch.tensor(
    [[192.98138, 239.94708], [318.90277, 240.1936], [256.63416, 314.01935], [201.26117, 371.41043],
     [313.08905, 371.15118]]
)
TEMPLATE_SIZE = 512
DEFAULT_FEATHER = 0.008  # Gaussian sigma as a fraction of the image side (4 px at 512)

# iBUG 68-point groups (0-based): the points each region's ellipse is fitted to.
_IBUG68_GROUPS = {
    "left_eye": range(36, 42),
    "right_eye": range(42, 48),
    "left_brow": range(17, 22),
    "right_brow": range(22, 27),
    "nose": range(27, 36),
    "mouth": range(48, 68),
    "face": range(0, 27),
}

# CelebAMask-HQ / face-parsing 19-class labels. Glasses and ears count as skin (they sit on the face).
CELEBAMASK_HQ_LABELS = (
    "background", "skin", "l_brow", "r_brow", "l_eye", "r_eye", "eye_g", "l_ear", "r_ear", "ear_r",
    "nose", "mouth", "u_lip", "l_lip", "neck", "neck_l", "cloth", "hair", "hat",
)
_PARSING_TO_REGION = {
    "left_eye": (4,), "right_eye": (5,), "left_brow": (2,), "right_brow": (3,), "nose": (10,),
    "mouth": (11, 12, 13), "skin": (1, 6, 7, 8),
}


def _scale_points(points: torch.Tensor, source_size: float, size: int) -> torch.Tensor:
    """Pixel coordinates at ``source_size`` -> at ``size`` (pixel-centre convention, as align_corners=False)."""
    return (points + 0.5) * (size / source_size) - 0.5


def template_points(size: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The FFHQ 5-point template for ``size`` x ``size`` faces, (5,2) x,y: facexlib's ``template * size / 512``.

    Example:
        >>> template_points(256)[0].tolist()
        [96.49069213867188, 119.97354125976562]
    """
    return FFHQ_TEMPLATE_512.to(device) * (size / TEMPLATE_SIZE)


def _grid(size: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    coords = torch.arange(size, device=device, dtype=dtype)
    return coords.view(1, 1, size, 1), coords.view(1, 1, 1, size)  # y, x


def feather(masks: torch.Tensor, size: int, amount: float = DEFAULT_FEATHER) -> torch.Tensor:
    """Soften hard (N,K,H,W) masks with a Gaussian of sigma ``amount * size`` pixels (kornia)."""
    sigma = amount * size
    if sigma <= 0:
        return masks
    kernel = 2 * math.ceil(3 * sigma) + 1
    kernel = min(kernel, 2 * (size // 2) - 1)  # reflect padding needs kernel < size
    return gaussian_blur2d(masks, (kernel, kernel), (sigma, sigma), border_type="replicate").clamp_(0, 1)


def ellipse_masks(centers: torch.Tensor, axes: torch.Tensor, angles: torch.Tensor, size: int) -> torch.Tensor:
    """Hard ellipse masks.

    Args:
        centers: (N,K,2) x,y in pixels. axes: (N,K,2) semi-axes along the rotated x and y.
        angles: (N,K) rotation in radians (image coordinates, y down).
    Returns:
        (N,K,size,size) float masks.
    """
    yy, xx = _grid(size, centers.device, centers.dtype)
    dx = xx - centers[..., 0, None, None]
    dy = yy - centers[..., 1, None, None]
    cos, sin = angles.cos()[..., None, None], angles.sin()[..., None, None]
    u = (dx * cos + dy * sin) / axes[..., 0, None, None].clamp_min(1e-3)
    v = (-dx * sin + dy * cos) / axes[..., 1, None, None].clamp_min(1e-3)
    return (u.square() + v.square() <= 1).to(centers.dtype)


def _compose(features: torch.Tensor, face: torch.Tensor, size: int, amount: float) -> dict[str, torch.Tensor]:
    """Hard (N,6,H,W) features and (N,1,H,W) face -> feathered soft partition."""
    soft = feather(torch.cat([features, face], dim=1), size, amount)
    features, face = soft[:, :-1], soft[:, -1:]
    features = features * (1.0 / features.sum(1, keepdim=True).clamp_min(1.0))  # overlaps share, never exceed 1
    out = {name: features[:, i : i + 1] for i, name in enumerate(FEATURE_NAMES)}
    out["skin"] = (face - features.sum(1, keepdim=True)).clamp_min(0)
    out["background"] = 1 - face
    return out


def _five_point_ellipses(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N,5,2) landmarks -> centers (N,7,2), semi-axes (N,7,2), angles (N,7) for the 6 features + face.

    Proportions are in units of the inter-ocular distance ``d``, chosen to cover
    the features of FFHQ-aligned faces (see docs/regions.png).
    """
    left_eye, right_eye, nose, mouth_l, mouth_r = points.unbind(1)
    eye_vec = right_eye - left_eye
    d = eye_vec.norm(dim=-1, keepdim=True)
    ex = eye_vec / d
    ey = torch.stack([-ex[:, 1], ex[:, 0]], dim=-1)  # points down the face
    eye_mid, mouth_mid = (left_eye + right_eye) / 2, (mouth_l + mouth_r) / 2
    nose_len = ((nose - eye_mid) * ey).sum(-1, keepdim=True).abs()
    mouth_half = (mouth_r - mouth_l).norm(dim=-1, keepdim=True) / 2
    centers = torch.stack(
        [
            left_eye,
            right_eye,
            left_eye - 0.30 * d * ey,
            right_eye - 0.30 * d * ey,
            eye_mid + 0.6 * (nose - eye_mid),
            mouth_mid,
            eye_mid + 0.42 * (mouth_mid - eye_mid),
        ],
        dim=1,
    )
    axes = torch.stack(
        [
            torch.cat([0.25 * d, 0.14 * d], -1),
            torch.cat([0.25 * d, 0.14 * d], -1),
            torch.cat([0.30 * d, 0.09 * d], -1),
            torch.cat([0.30 * d, 0.09 * d], -1),
            torch.cat([0.20 * d, 0.5 * nose_len + 0.10 * d], -1),
            torch.cat([mouth_half + 0.12 * d, 0.22 * d], -1),
            torch.cat([1.15 * d, 1.55 * d], -1),
        ],
        dim=1,
    )
    angles = torch.atan2(ex[:, 1], ex[:, 0])[:, None].expand(-1, 7)
    return centers, axes, angles


def _fitted_ellipses(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N,68,2) landmarks -> ellipses fitted to each iBUG group by its second moments."""
    centers, axes, angles = [], [], []
    for name in (*FEATURE_NAMES, "face"):
        group = points[:, list(_IBUG68_GROUPS[name])]
        mean = group.mean(1)
        centred = group - mean[:, None]
        cov = centred.transpose(1, 2) @ centred / group.shape[1]
        eigvals, eigvecs = torch.linalg.eigh(cov)  # ascending
        # Points spread along an ellipse's outline have variance a^2/2 along each axis.
        major = (2 * eigvals[:, 1]).clamp_min(0).sqrt() * 1.2
        minor = torch.maximum((2 * eigvals[:, 0]).clamp_min(0).sqrt() * 1.2, 0.35 * major)
        direction = eigvecs[:, :, 1]
        centers.append(mean)
        axes.append(torch.stack([major, minor], -1))
        angles.append(torch.atan2(direction[:, 1], direction[:, 0]))
    return torch.stack(centers, 1), torch.stack(axes, 1), torch.stack(angles, 1)


@torch.no_grad()
def regions_from_landmarks(
    landmarks: torch.Tensor, size: int, source_size: float | None = None, feather_amount: float = DEFAULT_FEATHER
) -> dict[str, torch.Tensor]:
    """Masks from per-sample landmarks.

    Args:
        landmarks: (N,5,2) (eyes, nose tip, mouth corners) or (N,68,2) iBUG points, x,y in pixels.
        size: side of the square output masks.
        source_size: side of the image the landmarks refer to (default: ``size``).
    """
    if landmarks.ndim != 3 or landmarks.shape[1:] not in ((5, 2), (68, 2)):
        raise ValueError(f"landmarks must be (N,5,2) or (N,68,2) x,y pixel coordinates, got {tuple(landmarks.shape)}")
    if not bool(torch.isfinite(landmarks).all()):  # a NaN point would silently make the whole face "background"
        bad = sorted({int(i) for i in (~torch.isfinite(landmarks)).flatten(1).any(1).nonzero().flatten()})
        raise ValueError(f"landmarks of sample(s) {bad} hold NaN or Inf: the detector found no face there; drop "
                         "those samples or use template_regions for aligned faces")
    points = _scale_points(landmarks.float(), source_size or size, size)
    check_landmark_spread(points, size)
    fit = _five_point_ellipses if points.shape[1] == 5 else _fitted_ellipses
    centers, axes, angles = fit(points)
    hard = ellipse_masks(centers, axes, angles, size)
    return _compose(hard[:, :6], hard[:, 6:], size, feather_amount)


# Landmarks farther than this many image sides outside the image, or spanning less than this fraction of the
# side, describe no face in it: a detector's failure, or coordinates of another image size.
FAR_OUTSIDE_SIDES = 1.0
MIN_SPREAD_FRACTION = 0.01


def check_landmark_spread(points: torch.Tensor, size: int) -> None:
    """Refuse (N,K,2) landmarks (pixels of a ``size`` image) that collapse to a point or a line, or lie far outside
    the image; the message names the samples.

    Example:
        >>> check_landmark_spread(torch.zeros(2, 5, 2), 64)
        Traceback (most recent call last):
        ...
        ValueError: landmarks of sample(s) [0, 1] coincide (they span less than 0.6 px of a 64-px image): ...
    """
    extent = points.amax(1) - points.amin(1)  # (N,2)
    collapsed = (extent.amin(1) < MIN_SPREAD_FRACTION * size).nonzero().flatten().tolist()
    if collapsed:
        raise ValueError(f"landmarks of sample(s) {collapsed} coincide (they span less than "
                         f"{MIN_SPREAD_FRACTION * size:.1f} px of a {size}-px image): no face was located there; "
                         "drop those samples, or check that the points are x,y pixels of this image")
    margin = FAR_OUTSIDE_SIDES * size
    outside = ((points < -margin) | (points > size + margin)).flatten(1).any(1).nonzero().flatten().tolist()
    if outside:
        raise ValueError(f"landmarks of sample(s) {outside} lie far outside the {size}x{size} image (more than "
                         f"{FAR_OUTSIDE_SIDES:g} image side beyond its edge): pass source_size= when the points refer "
                         "to an image of another size, or drop those samples")


def template_regions(
    size: int, batch: int = 1, device: torch.device | str | None = None, feather_amount: float = DEFAULT_FEATHER
) -> dict[str, torch.Tensor]:
    """Masks for FFHQ-aligned faces (GFP-GAN/CodeFormer/GPEN inputs) from the 5-point template, (batch,1,size,size)."""
    masks = regions_from_landmarks(template_points(size, device)[None], size, size, feather_amount)
    return {k: v.expand(batch, -1, -1, -1) for k, v in masks.items()}


@torch.no_grad()
def regions_from_boxes(
    loc_left_eye: torch.Tensor,
    loc_right_eye: torch.Tensor,
    loc_mouth: torch.Tensor,
    size: int,
    source_size: float = TEMPLATE_SIZE,
    feather_amount: float = DEFAULT_FEATHER,
) -> dict[str, torch.Tensor]:
    """Masks from GFP-GAN component boxes: (N,4) ``x1,y1,x2,y2`` pixels at ``source_size`` (512).

    Eyes and mouth are the boxes; brows, nose and the face outline come from the
    template, so the result is a full partition like the other builders.
    """
    boxes = torch.stack([torch.as_tensor(b, dtype=torch.float32) for b in (loc_left_eye, loc_right_eye, loc_mouth)], 1)
    if boxes.ndim != 3 or boxes.shape[-1] != 4:
        raise ValueError(f"component boxes must be (N,4) x1,y1,x2,y2 each, got {tuple(boxes.shape)}")
    n = boxes.shape[0]
    boxes = _scale_points(boxes.view(n, 3, 2, 2), source_size, size).view(n, 3, 4)
    yy, xx = _grid(size, boxes.device, boxes.dtype)
    x1, y1, x2, y2 = (boxes[..., i, None, None] for i in range(4))
    box_masks = ((xx >= x1) & (xx <= x2) & (yy >= y1) & (yy <= y2)).float()
    points = template_points(size, boxes.device)[None].expand(n, -1, -1)
    hard = ellipse_masks(*_five_point_ellipses(points), size)
    features = torch.cat([box_masks[:, :2], hard[:, 2:5], box_masks[:, 2:]], dim=1)
    return _compose(features, hard[:, 6:], size, feather_amount)


@torch.no_grad()
def regions_from_parsing(
    labels: torch.Tensor, size: int, feather_amount: float = DEFAULT_FEATHER
) -> dict[str, torch.Tensor]:
    """Masks from a CelebAMask-HQ 19-class label map (N,H,W) or (N,1,H,W) of integer labels, resized to ``size``."""
    if labels.ndim == 4 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 3 or labels.is_floating_point():
        raise ValueError(f"parsing labels must be an integer (N,H,W) map, got {labels.dtype} {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= len(CELEBAMASK_HQ_LABELS):
        raise ValueError(f"parsing labels must lie in 0..{len(CELEBAMASK_HQ_LABELS) - 1} (CelebAMask-HQ convention)")
    onehot = F.one_hot(labels.long(), len(CELEBAMASK_HQ_LABELS)).permute(0, 3, 1, 2).float()
    onehot = F.interpolate(onehot, size=(size, size), mode="area" if labels.shape[-1] >= size else "bilinear")
    features = torch.cat([onehot[:, list(_PARSING_TO_REGION[name])].sum(1, keepdim=True) for name in FEATURE_NAMES], 1)
    face = features.sum(1, keepdim=True) + onehot[:, list(_PARSING_TO_REGION["skin"])].sum(1, keepdim=True)
    return _compose(features, face.clamp(0, 1), size, feather_amount)


def expand_region_weights(region_weights: dict[str, float]) -> dict[str, float]:
    """``{"eyes": 2, "mouth": 2}`` -> a weight for every name in :data:`REGION_NAMES` (unnamed regions: 1.0)."""
    weights = dict.fromkeys(REGION_NAMES, 1.0)
    for key, value in region_weights.items():
        names = REGION_GROUPS.get(key, (key,))
        if any(name not in weights for name in names):
            valid = sorted((*REGION_NAMES, *REGION_GROUPS))
            raise ValueError(f"unknown region {key!r} in region_weights; valid names: {valid}")
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"region weight for {key!r} must be a finite number >= 0, got {value}")
        weights.update(dict.fromkeys(names, float(value)))
    return weights


def check_region_masks(regions: dict[str, torch.Tensor], batch: int | None = None) -> None:
    """Refuse masks that are not float (N,1,H,W) tensors of one size, with N the batch (or 1); names the region.

    Example:
        >>> check_region_masks({"mouth": torch.ones(2, 8, 8)}, batch=2)
        Traceback (most recent call last):
        ...
        ValueError: region 'mouth' must be a float mask of shape (N,1,H,W), got shape (2, 8, 8) ...
    """
    sizes = set()
    for name, mask in regions.items():
        if not isinstance(mask, torch.Tensor):
            raise TypeError(f"region {name!r} must be a torch.Tensor mask of shape (N,1,H,W), got "
                            f"{type(mask).__name__}")
        if mask.ndim != 4 or mask.shape[1] != 1:
            hint = " (add the channel with mask[:, None])" if mask.ndim == 3 else ""
            raise ValueError(f"region {name!r} must be a float mask of shape (N,1,H,W), got shape "
                             f"{tuple(mask.shape)}{hint}")
        if not mask.is_floating_point():
            raise TypeError(f"region {name!r} must be a float mask of shape (N,1,H,W) with values in [0,1], got dtype "
                            f"{mask.dtype}: convert it with mask.float()")
        if batch is not None and mask.shape[0] not in (batch, 1):
            raise ValueError(f"region {name!r} holds {mask.shape[0]} masks for a batch of {batch}: expected (N,1,H,W) "
                             f"with N={batch} (or 1, shared by every image)")
        sizes.add(tuple(mask.shape[-2:]))
    if len(sizes) > 1:
        raise ValueError(f"region masks differ in size ({sorted(sizes)}); build them with one ifqa_loss.regions call")


def region_weight_map(regions: dict[str, torch.Tensor], region_weights: dict[str, float],
                      batch: int | None = None) -> torch.Tensor:
    """Per-pixel weights (N,1,H,W) = sum over regions of weight * mask (masks checked: float (N,1,H,W))."""
    weights = expand_region_weights(region_weights)
    missing = [name for name in REGION_NAMES if name not in regions]
    if missing:
        raise ValueError(f"regions is missing {missing}; build it with an ifqa_loss.regions function")
    check_region_masks({name: regions[name] for name in REGION_NAMES}, batch)
    return sum(weights[name] * regions[name] for name in REGION_NAMES)
