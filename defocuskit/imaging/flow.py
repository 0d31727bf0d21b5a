"""Dense optical flow on the CPU (OpenCV DIS) and the backward warp that uses it.

Convention (used by every function here and by the JDRL loss):

    flow = estimate_flow(target, moving)        # (B, 2, H, W), channels (dx, dy), in pixels
    moving(x + flow(x)) ~= target(x)            # for every pixel x of the target's grid
    backward_warp(moving, flow)[x] = moving(x + flow(x))   # `moving` brought onto `target`'s grid

So if `moving` is `target` with its content moved by +d (moving(x) = target(x - d)), the flow is +d.
This is OpenCV's `calc(prev=target, next=moving)` and the convention of the released JDRL code
(liyucs/JDRL utils/warp.py: `get_backwarp(im_b, im_gt)` estimates the flow from the first image to the
second and resamples the second, i.e. the ground truth, onto the first one's grid).

The released code estimates the flow with PWC-Net (CUDA correlation); DIS (Kroeger et al., ECCV 2016)
runs on any CPU, needs no weights and takes a few milliseconds per 256 x 256 pair. The flow carries no
gradient; the warp is differentiable with respect to the warped image.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


def _gray_u8(images: torch.Tensor) -> np.ndarray:
    """(B, C, H, W) in [0, 1] -> (B, H, W) uint8 luminance (Rec. 601 weights for RGB)."""
    x = images.detach().float().clamp(0, 1).cpu()
    if x.shape[1] == 3:
        x = 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]
    else:
        x = x.mean(1)
    return np.ascontiguousarray((x.numpy() * 255.0 + 0.5).astype(np.uint8))


def estimate_flow(target: torch.Tensor, moving: torch.Tensor, preset: str = "medium") -> torch.Tensor:
    """Dense flow (B, 2, H, W) with moving(x + flow(x)) ~= target(x); no gradient, on target's device."""
    if target.shape != moving.shape or target.dim() != 4:
        raise ValueError(f"estimate_flow: needs two (B, C, H, W) batches of one shape, got {tuple(target.shape)} "
                         f"and {tuple(moving.shape)}")
    if preset not in PRESETS:
        raise ValueError(f"flow preset '{preset}' is not one of {', '.join(PRESETS)}")
    dis = cv2.DISOpticalFlow_create(PRESETS[preset])
    a, b = _gray_u8(target), _gray_u8(moving)
    flows = [dis.calc(a[i], b[i], None) for i in range(a.shape[0])]  # (H, W, 2): target(x) ~ moving(x + f)
    out = torch.from_numpy(np.stack(flows)).permute(0, 3, 1, 2).contiguous()
    return out.to(device=target.device, dtype=torch.float32)


def backward_warp(moving: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """moving(x + flow(x)) by bilinear sampling (zeros outside the frame); differentiable in `moving`."""
    b, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device, dtype=flow.dtype),
                            torch.arange(w, device=flow.device, dtype=flow.dtype), indexing="ij")
    gx = xs + flow[:, 0]  # sample positions in pixels
    gy = ys + flow[:, 1]
    # normalised to [-1, 1] with align_corners=True: pixel centre 0 -> -1, pixel centre W-1 -> +1
    grid = torch.stack([2.0 * gx / max(w - 1, 1) - 1.0, 2.0 * gy / max(h - 1, 1) - 1.0], dim=-1)
    return F.grid_sample(moving, grid.to(moving.dtype), mode="bilinear", padding_mode="zeros", align_corners=True)


def in_frame_mask(flow: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W): 1 where x + flow(x) samples only pixels inside the frame (the warped ones-mask)."""
    ones = flow.new_ones(flow.shape[0], 1, *flow.shape[2:])
    return (backward_warp(ones, flow) > 0.999).to(flow.dtype)  # released utils/warp.py warps a ones channel too


def consistency_mask(flow_ab: torch.Tensor, flow_ba: torch.Tensor, alpha: float = 0.01,
                     beta: float = 0.5) -> torch.Tensor:
    """(B, 1, H, W) on a's grid: 1 where the forward and backward flows agree (not occluded).

    |f_ab + f_ba(x + f_ab)|^2 <= alpha (|f_ab|^2 + |f_ba(x + f_ab)|^2) + beta  (Sundaram et al., ECCV 2010).
    """
    back = backward_warp(flow_ba, flow_ab)
    err = (flow_ab + back).pow(2).sum(1, keepdim=True)
    bound = alpha * (flow_ab.pow(2).sum(1, keepdim=True) + back.pow(2).sum(1, keepdim=True)) + beta
    return (err <= bound).to(flow_ab.dtype)


def valid_mask(flow_ab: torch.Tensor, flow_ba: torch.Tensor | None = None, alpha: float = 0.01,
               beta: float = 0.5) -> torch.Tensor:
    """In-frame mask of `flow_ab`, times the forward-backward consistency mask when `flow_ba` is given."""
    mask = in_frame_mask(flow_ab)
    if flow_ba is not None:
        mask = mask * consistency_mask(flow_ab, flow_ba, alpha, beta)
    return mask


def warp_onto(target: torch.Tensor, moving: torch.Tensor, preset: str = "medium") -> tuple[torch.Tensor, torch.Tensor]:
    """`moving` warped onto `target`'s grid and the flow used (see the module docstring)."""
    flow = estimate_flow(target, moving, preset)
    return backward_warp(moving, flow), flow
