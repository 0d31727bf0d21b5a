"""Metrics against independent computations (numpy formulas, scikit-image) on real photographs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity

from defocuskit.eval import metrics
from defocuskit.io.images import read_image, write_image

VABD = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real" / "VABD" / "train"  # ../shared/fixtures


@pytest.fixture(scope="module")
def pair8() -> tuple[np.ndarray, np.ndarray]:
    sharp = read_image(VABD / "input" / "0001.JPG")
    blur = read_image(VABD / "1_8" / "0001.JPG")
    assert sharp.dtype == np.uint8 and sharp.shape == blur.shape
    return sharp, blur


def _numpy_psnr(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    # Independent form: integers, 20 log10(peak / RMSE).
    d = a.astype(np.int64) - b.astype(np.int64)
    rmse = np.sqrt((d * d).sum() / d.size)
    return float(20.0 * np.log10(peak / rmse))


def test_to_unit_scales_by_bit_depth() -> None:
    assert metrics.to_unit(np.array([[[255, 0, 51]]], np.uint8)).tolist() == [[[1.0, 0.0, 0.2]]]
    assert metrics.to_unit(np.array([[[65535, 0, 257]]], np.uint16)).tolist() == [[[1.0, 0.0, 257 / 65535]]]
    with pytest.raises(ValueError, match="int32"):
        metrics.to_unit(np.zeros((1, 1, 3), np.int32))


def test_psnr_mae_match_numpy_and_skimage_8bit(pair8) -> None:
    sharp, blur = pair8
    x, y = metrics.to_unit(blur), metrics.to_unit(sharp)
    got = metrics.psnr(x, y)
    assert got == pytest.approx(_numpy_psnr(blur, sharp, 255.0), abs=1e-6)
    assert got == pytest.approx(peak_signal_noise_ratio(sharp, blur, data_range=255), abs=1e-6)
    assert 10 < got < 40  # a real defocused photo against its reference
    mae_ref = np.abs(blur.astype(np.int64) - sharp.astype(np.int64)).sum() / (blur.size * 255.0)
    assert metrics.mae(x, y) == pytest.approx(mae_ref, abs=1e-9)
    assert mean_squared_error(x, y) == pytest.approx(10 ** (-got / 10), rel=1e-9)


def test_ssim_matches_skimage_both_variants(pair8) -> None:
    sharp, blur = pair8
    x, y = metrics.to_unit(blur[300:556, 600:856]), metrics.to_unit(sharp[300:556, 600:856])
    ref7 = structural_similarity(x, y, channel_axis=-1, data_range=1)
    ref11 = structural_similarity(x, y, channel_axis=-1, data_range=1, gaussian_weights=True, sigma=1.5,
                                  use_sample_covariance=False)
    assert metrics.ssim(x, y) == pytest.approx(ref7, abs=1e-12)  # OpenCV box filter, same formula as skimage
    assert metrics.ssim(x, y, "gaussian11") == pytest.approx(ref11, abs=1e-6)
    assert abs(ref7 - ref11) > 1e-4  # the variants differ, so naming one matters
    # Independent 7x7 uniform-window SSIM (sample covariance), one channel at a time, with numpy only.
    k1, k2, w = 0.01, 0.03, 7
    vals = []
    for c in range(3):
        a, b = x[:, :, c], y[:, :, c]

        def box(img: np.ndarray) -> np.ndarray:
            win = np.lib.stride_tricks.sliding_window_view(img, (w, w))
            return win.mean(axis=(-1, -2))

        mu_a, mu_b = box(a), box(b)
        n = w * w
        va = (box(a * a) - mu_a**2) * n / (n - 1)
        vb = (box(b * b) - mu_b**2) * n / (n - 1)
        cov = (box(a * b) - mu_a * mu_b) * n / (n - 1)
        s = ((2 * mu_a * mu_b + k1**2) * (2 * cov + k2**2)) / ((mu_a**2 + mu_b**2 + k1**2) * (va + vb + k2**2))
        vals.append(s.mean())  # skimage crops (w-1)/2 at each border: the 'valid' windows here
    assert metrics.ssim(x, y) == pytest.approx(float(np.mean(vals)), abs=1e-6)
    with pytest.raises(ValueError, match="unknown SSIM variant"):
        metrics.ssim(x, y, "gauss")


def test_16bit_png_read_as_16bit(pair8, tmp_path: Path) -> None:
    sharp8, blur8 = (a[:200, :300] for a in pair8)
    rng = np.random.default_rng(0)
    # 8-bit values in the high byte plus random low bits: information only a 16-bit reader keeps.
    sharp16 = (sharp8.astype(np.uint16) << 8) + rng.integers(0, 256, sharp8.shape, dtype=np.uint16)
    blur16 = (blur8.astype(np.uint16) << 8) + rng.integers(0, 256, blur8.shape, dtype=np.uint16)
    write_image(tmp_path / "s.png", sharp16)
    write_image(tmp_path / "b.png", blur16)
    s, b = read_image(tmp_path / "s.png"), read_image(tmp_path / "b.png")
    assert s.dtype == np.uint16 and np.array_equal(s, sharp16) and np.array_equal(b, blur16)
    x, y = metrics.to_unit(b), metrics.to_unit(s)
    assert metrics.psnr(x, y) == pytest.approx(_numpy_psnr(blur16, sharp16, 65535.0), abs=1e-6)
    assert metrics.psnr(x, y) == pytest.approx(peak_signal_noise_ratio(s, b, data_range=65535), abs=1e-6)
    mae_ref = np.abs(blur16.astype(np.int64) - sharp16.astype(np.int64)).sum() / (blur16.size * 65535.0)
    assert metrics.mae(x, y) == pytest.approx(mae_ref, abs=1e-9)
    assert metrics.ssim(x, y) == pytest.approx(
        structural_similarity(s.astype(np.float64) / 65535, b.astype(np.float64) / 65535, channel_axis=-1, data_range=1),
        abs=1e-6,
    )
    # Scoring the 16-bit files as 8-bit would give a different number: the low bits count.
    assert abs(metrics.psnr(x, y) - metrics.psnr(metrics.to_unit(blur8), metrics.to_unit(sharp8))) > 1e-3


def test_identical_images(pair8) -> None:
    x = metrics.to_unit(pair8[0][:64, :64])
    assert metrics.psnr(x, x) == float("inf")
    assert metrics.psnr(x, x, max_db=100.0) == 100.0  # the evaluator's documented cap
    assert metrics.ssim(x, x) == pytest.approx(1.0, abs=1e-12)
    assert metrics.mae(x, x) == 0.0


def test_shape_mismatch_is_an_error(pair8) -> None:
    x = metrics.to_unit(pair8[0][:64, :64])
    with pytest.raises(ValueError, match="differ in shape"):
        metrics.psnr(x, x[:63])


def _write_lpips_files(tmp_path: Path, layout: str) -> tuple[list[Path], torch.nn.Module]:
    from safetensors.torch import save_file

    from defocuskit.eval.lpips import LPIPSAlex

    torch.manual_seed(0)
    ref = LPIPSAlex()
    for lin in ref.lin:
        lin.weight.data.abs_()
    state = ref.state_dict()
    if layout == "lpips":  # one lpips.LPIPS(net="alex") state dict
        slice_of = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}
        out = {f"net.slice{slice_of[int(k.split('.')[1])]}.{k.split('.', 1)[1]}": v
               for k, v in state.items() if k.startswith("features.")}
        out.update({f"lin{k.split('.')[1]}.model.1.weight": v for k, v in state.items() if k.startswith("lin.")})
        save_file({k: v.contiguous() for k, v in out.items()}, tmp_path / "lpips_alex.safetensors")
        return [tmp_path / "lpips_alex.safetensors"], ref
    backbone = {k: v for k, v in state.items() if k.startswith("features.")}
    heads = {f"lin{k.split('.')[1]}.model.1.weight": v for k, v in state.items() if k.startswith("lin.")}
    torch.save(backbone, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex.pth")
    return [tmp_path / "alexnet.pth", tmp_path / "alex.pth"], ref


@pytest.mark.parametrize("layout", ["lpips", "torchvision"])
def test_lpips_loads_both_layouts(tmp_path: Path, layout: str, pair8) -> None:
    from defocuskit.eval.lpips import load_lpips, lpips_distance

    paths, ref = _write_lpips_files(tmp_path, layout)
    model = load_lpips(paths)
    for name, value in ref.state_dict().items():
        assert torch.equal(model.state_dict()[name], value), name
    sharp, blur = (metrics.to_unit(a[300:364, 600:664]) for a in pair8)
    assert lpips_distance(model, sharp, sharp) == pytest.approx(0.0, abs=1e-7)
    d = lpips_distance(model, blur, sharp)
    assert d > 0
    assert lpips_distance(model, sharp, blur) == pytest.approx(d, rel=1e-5)


def test_lpips_missing_tensors_named(tmp_path: Path) -> None:
    from defocuskit.eval.lpips import load_lpips

    torch.save({"lin0.model.1.weight": torch.ones(1, 64, 1, 1)}, tmp_path / "alex.pth")
    with pytest.raises(ValueError, match="lack"):
        load_lpips([tmp_path / "alex.pth"])
    with pytest.raises(FileNotFoundError):
        load_lpips([tmp_path / "nope.pth"])
    (tmp_path / "page.pth").write_text("<html>Google Drive - virus scan warning</html>")  # a failed download
    (tmp_path / "page.safetensors").write_text("<html>")
    import os
    import pickle

    class Runs:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"params": Runs()}, tmp_path / "evil.pth")  # as a release would be saved
    (tmp_path / "evil5.pth").write_bytes(pickle.dumps(Runs(), protocol=5))
    for name, said in (("page.pth", "not a readable PyTorch checkpoint"), ("evil.pth", "refused: it needs the Python "
                       "object"), ("evil5.pth", "not a readable PyTorch checkpoint"),
                      ("page.safetensors", "not a readable safetensors file")):
        with pytest.raises(ValueError) as info:
            load_lpips([tmp_path / name])
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name}: {said}") and "\n" not in message, message
        assert "weights_only" not in message.replace("weights_only=True", "")  # never torch's advice to unpickle


@pytest.mark.parametrize("shape", [(9, 7, 1), (31, 50, 3), (200, 131, 3), (6, 40, 3)])
def test_uniform7_ssim_is_skimages_to_the_last_digits(shape) -> None:
    rng = np.random.default_rng(sum(shape))
    x = rng.random(shape)
    y = np.clip(x + 0.2 * rng.standard_normal(shape), 0.0, 1.0)
    if min(shape[:2]) < 7:  # too small for a 7x7 window: skimage's own error
        with pytest.raises(ValueError):
            metrics.ssim(x, y)
        return
    assert metrics.ssim(x, y) == pytest.approx(structural_similarity(x, y, channel_axis=-1, data_range=1), abs=1e-12)
