"""Reports: aggregation with spread and per source, the aperture figure, the contact sheet, the crop figure."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from rich.console import Console

from defocuskit.data.inspect import TILE, contact_sheet, crop_size, pick_samples, sample_label, sample_row
from defocuskit.eval import metrics
from defocuskit.eval.figure import CELL, figure_row, write_figure
from defocuskit.eval.plots import aperture_figure, plot_aperture
from defocuskit.eval.report import ROW_KEYS, aggregate, print_table, write_report
from defocuskit.imaging.drawing import pick_crop, repeat_pixels, to_display
from defocuskit.io.images import read_image

# Hand-made per-image scores: (method, source, f-number, psnr, input psnr).
SCORES = [
    ("input", "dpdd", 2.8, 20.0, 20.0), ("input", "dpdd", 2.8, 24.0, 24.0), ("input", "vabd", 2.8, 30.0, 30.0),
    ("input", "dpdd", 4.0, 26.0, 26.0), ("input", "vabd", 4.0, 31.0, 31.0),
    ("net", "dpdd", 2.8, 21.0, 20.0), ("net", "dpdd", 2.8, 27.0, 24.0), ("net", "vabd", 2.8, 30.5, 30.0),
    ("net", "dpdd", 4.0, 26.0, 26.0), ("net", "vabd", 4.0, 33.0, 31.0),
]


def _images() -> list[dict]:
    out = []
    for i, (method, source, f, psnr, psnr_in) in enumerate(SCORES):
        out.append({"key": f"k{i % 5}", "method": method, "source": source, "f_number": f, "psnr": psnr,
                    "psnr_input": psnr_in, "ssim": psnr / 40, "ssim_input": psnr_in / 40, "mae": 0.01,
                    "mae_input": 0.01, "lpips": None, "lpips_input": None})
    return out


def test_aggregate_mean_std_gain_and_sources(tmp_path: Path) -> None:
    rows = aggregate(_images(), ["input", "net"], by_aperture=True, by_source=True)
    by = {(r["method"], r["source"], r["f_number"]): r for r in rows}
    net = by[("net", None, 2.8)]  # pooled over sources: gains 1, 3, 0.5
    assert net["n"] == 3
    assert net["psnr"] == pytest.approx(np.mean([21, 27, 30.5]))
    assert net["psnr_std"] == pytest.approx(np.std([21, 27, 30.5]))
    assert net["psnr_input_std"] == pytest.approx(np.std([20, 24, 30]))
    assert net["psnr_gain"] == pytest.approx(1.5) and net["psnr_gain_std"] == pytest.approx(np.std([1, 3, 0.5]))
    dpdd = by[("net", "dpdd", 2.8)]
    assert dpdd["n"] == 2 and dpdd["psnr_gain"] == pytest.approx(2.0) and dpdd["psnr_gain_std"] == pytest.approx(1.0)
    assert by[("net", "vabd", None)]["n"] == 2 and by[("net", "vabd", None)]["psnr_gain"] == pytest.approx(1.25)
    assert by[("net", "dpdd", None)]["psnr_gain"] == pytest.approx(4 / 3)
    assert by[("input", None, None)]["psnr_gain_std"] == 0.0
    assert by[("net", None, 4.0)]["lpips"] is None and by[("net", None, 4.0)]["lpips_std"] is None
    # Order: per method, the pooled rows, then each source's rows ending with its total.
    assert [(r["source"], r["f_number"]) for r in rows if r["method"] == "net"] == [
        (None, 2.8), (None, 4.0), (None, None), ("dpdd", 2.8), ("dpdd", 4.0), ("dpdd", None),
        ("vabd", 2.8), ("vabd", 4.0), ("vabd", None)]
    assert len(aggregate(_images(), ["input", "net"], by_aperture=True)) == 6  # without by_source: pooled only

    # write_report(by_source=True) recomputes the rows per source from the images; JSON and CSV hold them.
    report = {"protocol": {"split": "test", "lpips": "unavailable: x"}, "images": _images(),
              "rows": aggregate(_images(), ["input", "net"], True), "notes": [], "skipped": []}
    write_report(report, tmp_path, by_source=True)
    data = json.loads((tmp_path / "report.json").read_text())
    assert len(data["rows"]) == 18 and "population standard deviation" in data["protocol"]["std"]
    with (tmp_path / "report.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0]) == list(ROW_KEYS) and len(table) == 18
    row = next(r for r in table if (r["method"], r["source"], r["f_number"]) == ("net", "dpdd", "2.8"))
    assert float(row["psnr_gain_std"]) == pytest.approx(1.0) and row["n"] == "2"
    assert {r["source"] for r in table} == {"all", "dpdd", "vabd"}

    console = Console(record=True, width=80)
    print_table(report, console)
    text = console.export_text()
    assert "source 'dpdd'" in text and "source 'vabd'" in text and "…" not in text
    assert "+2.00 ±1.00" in text  # net, dpdd, f/2.8: gain ± std over images


def test_aperture_figure_error_bars_gain_panel_and_n(tmp_path: Path) -> None:
    rows = aggregate(_images(), ["input", "net"], by_aperture=True, by_source=True)
    fig = aperture_figure(rows, title="PSNR by aperture: shards (dpdd, vabd) · split test")
    assert len(fig.axes) == 2
    assert "n = 2–3 images per f-number" in fig._suptitle.get_text()
    assert "split test" in fig._suptitle.get_text()
    psnr_ax, gain_ax = fig.axes
    assert [t.get_text() for t in psnr_ax.get_xticklabels()] == ["f/2.8\nn=3", "f/4\nn=2"]

    def half_lengths(container) -> list[float]:
        segments = container.lines[2][0].get_segments()
        return [float(s[1][1] - s[0][1]) / 2 for s in segments]

    pooled = {(r["method"], r["f_number"]): r for r in rows if r["source"] is None}
    inp, net = psnr_ax.containers  # the input's series, then the method's
    assert half_lengths(inp) == pytest.approx([pooled[("input", f)]["psnr_input_std"] for f in (2.8, 4.0)])
    assert half_lengths(net) == pytest.approx([pooled[("net", f)]["psnr_std"] for f in (2.8, 4.0)])
    (gain,) = gain_ax.containers
    assert half_lengths(gain) == pytest.approx([np.std([1, 3, 0.5]), np.std([0, 2])])
    assert list(gain.lines[0].get_ydata()) == pytest.approx([1.5, 1.0])
    assert any(line.get_ydata()[0] == 0 for line in gain_ax.get_lines())  # the zero line
    path = plot_aperture(rows, tmp_path / "aperture.png", title="t")
    assert path is not None and read_image(path).shape[1] > 1000
    assert plot_aperture([r for r in rows if r["f_number"] is None], tmp_path / "none.png") is None


def test_aperture_figure_input_series_is_the_inputs_over_every_image_of_the_group() -> None:
    """A method listed first that skipped an image of a group (a failed --align registration, say): its row's input
    score is over the images it scored, and the plot drew that as the blurred input's (27 dB at f/2.8 against the
    table's 24.67, 26 at f/4 against 28.5)."""
    images = [im for im in _images() if not (im["method"] == "net" and im["key"] in ("k0", "k4"))]
    rows = aggregate(images, ["net", "input"], by_aperture=True)  # `--baseline net --baseline input` order
    table = {r["f_number"]: r["psnr"] for r in rows if r["method"] == "input" and r["f_number"] is not None}
    psnr_ax, _ = aperture_figure(rows).axes
    assert list(psnr_ax.lines[0].get_ydata()) == pytest.approx([table[2.8], table[4.0]])
    images += [dict(im, method="other") for im in _images() if im["method"] == "net"]  # scored every image
    rows = aggregate(images, ["net", "other"], by_aperture=True)  # no input baseline: the fullest row's
    psnr_ax, _ = aperture_figure(rows).axes
    assert list(psnr_ax.lines[0].get_ydata()) == pytest.approx([table[2.8], table[4.0]])


def _textured(seed: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_pick_crop_finds_the_detail_the_blur_lost() -> None:
    sharp = np.full((64, 64, 3), 128, np.uint8)
    sharp[40:56, 8:24] = _textured(0, 16, 16)  # detail that the blur will lose
    sharp[4:20, 40:56] = _textured(1, 16, 16)  # detail that stays in the "blurred" image too
    blur = cv2.GaussianBlur(sharp, (0, 0), 3)
    blur[4:20, 40:56] = sharp[4:20, 40:56]
    assert pick_crop(blur, sharp, 16) == (40, 8)
    assert pick_crop(blur, sharp, 16) == pick_crop(blur.copy(), sharp.copy(), 16)  # deterministic
    y, x = pick_crop(sharp, None, 16)  # one image: its most detailed window (either textured patch, +-2 px)
    assert min(max(abs(y - ty), abs(x - tx)) for ty, tx in ((40, 8), (4, 40))) <= 2
    assert pick_crop(np.zeros((8, 10, 3), np.uint8), None, 99) == (0, 1)  # flat: centred, size clamped
    with pytest.raises(ValueError, match="blur is 64x64, sharp is 32x32"):
        pick_crop(blur, sharp[:32, :32], 8)


def _locate(image: np.ndarray, part: np.ndarray) -> tuple[int, int]:
    """Top-left (y, x) where `part` best matches inside `image` (checked pixel for pixel by the caller)."""
    found = cv2.matchTemplate(image.astype(np.float32), part.astype(np.float32), cv2.TM_SQDIFF)
    y, x = np.unravel_index(int(np.argmin(found)), found.shape)
    return int(y), int(x)


def _shards(folder: Path, n: int, per_shard: int) -> Path:
    import webdataset as wds

    from defocuskit.data.shards import encode_members

    folder.mkdir(parents=True)
    with wds.ShardWriter(str(folder / "test-%06d.tar"), maxcount=per_shard, verbose=0) as sink:
        for i in range(n):
            sharp = _textured(i, 48, 64)
            blur = cv2.GaussianBlur(sharp, (0, 0), 2)
            meta = {"source": "fake", "split": "test", "f_number": 2.8, "ref_f_number": 16.0, "gain": 1.25,
                    "align": {"method": "ecc", "score": 0.93, "matrix": None}}
            sink.write({"__key__": f"fake/s{i}", **encode_members(sharp, blur, None, meta)})
    names = sorted(p.name for p in folder.glob("test-*.tar"))
    manifest = {"tool": "defocuskit", "version": "x", "created": "now", "shards": [{"name": n} for n in names],
                "counts": {"samples": n, "table": [], "by_split": {"test": n}}, "rejects": 0}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.mark.parametrize("per_shard", [9, 4])
def test_contact_sheet_honours_n_labels_and_native_crops(tmp_path: Path, per_shard: int) -> None:
    from typer.testing import CliRunner

    from defocuskit.cli.app import app

    folder = _shards(tmp_path / "shards", 9, per_shard)
    samples = pick_samples(folder, 7)
    assert len(samples) == 7 and len({s["key"] for s in samples}) == 7
    sheet = contact_sheet(samples)
    assert sheet.keys == [s["key"] for s in samples]
    assert sheet.columns == ["blur", "sharp", "blur crop", "sharp crop"]
    assert sheet.image.shape[0] > 7 * TILE
    label = sample_label(samples[0])
    assert all(part in label for part in ("fake/s", "fake", "test", "f/2.8 vs f/16", "gain 1.250", "score 0.930"))
    # The crops are native pixels (each repeated zoom x zoom, never resampled) of pick_crop's window.
    first = samples[0]
    c = crop_size(*first["blur"].shape[:2])
    y, x = pick_crop(first["blur"], first["sharp"], c)
    for name in ("blur", "sharp"):
        expected = repeat_pixels(to_display(first[name])[y:y + c, x:x + c], TILE // c)
        yy, xx = _locate(sheet.image, expected)
        assert np.array_equal(sheet.image[yy:yy + expected.shape[0], xx:xx + expected.shape[1]], expected)
    res = CliRunner().invoke(app, ["inspect", str(folder), "--n", "7", "--sheet", str(tmp_path / "sheet.png")])
    assert res.exit_code == 0, res.output
    written = read_image(tmp_path / "sheet.png")
    assert written.shape[0] > 7 * TILE and written.shape[1] == sheet.image.shape[1]
    assert len(pick_samples(folder, 20)) == 9  # never more than the shards hold


def test_inspect_never_writes_over_a_sheet_put_there_while_it_picks_samples(tmp_path: Path, monkeypatch) -> None:
    """--sheet was looked at once, before the samples were read: a file of the user's put there meanwhile was
    written over, exit 0; now it is kept and named (and the inspect's own earlier sheet is still replaced)."""
    import defocuskit.data.inspect as inspect_module

    folder = _shards(tmp_path / "shards", 3, 3)
    sheet, real = tmp_path / "sheet.png", inspect_module.pick_samples

    def pick_then_a_file_appears(*args, **kwargs):
        picked = real(*args, **kwargs)
        if not sheet.exists():
            sheet.write_bytes(b"my own sheet")
        return picked

    monkeypatch.setattr(inspect_module, "pick_samples", pick_then_a_file_appears)
    with pytest.raises(ValueError, match=r"sheet\.png: exists and was not written by defocuskit inspect"):
        inspect_module.inspect_shards(folder, sheet, 2)
    assert sheet.read_bytes() == b"my own sheet"
    sheet.unlink()
    monkeypatch.setattr(inspect_module, "pick_samples", real)
    assert inspect_module.inspect_shards(folder, sheet, 2) == sheet
    assert inspect_module.inspect_shards(folder, sheet, 3) == sheet  # its own sheet: replaced
    assert read_image(sheet).shape[0] > 2 * TILE


def test_inspect_sheet_says_it_shows_a_few_of_the_folders_samples(tmp_path: Path, monkeypatch) -> None:
    """The sheet's title said "shards: 2 sample(s)" for a folder of 9: read alone, the sheet passed for the whole."""
    import defocuskit.data.inspect as inspect_module

    titles, real = [], inspect_module.contact_sheet
    monkeypatch.setattr(inspect_module, "contact_sheet", lambda samples, title=None: titles.append(title) or
                        real(samples, title))
    inspect_module.inspect_shards(_shards(tmp_path / "shards", 9, 4), tmp_path / "sheet.png", 2)
    assert titles[0].startswith("shards: 2 of its 9 samples (distinct source / split / f-number first")


def test_contact_sheet_shows_the_sign_of_a_signed_coc(tmp_path: Path) -> None:
    """The CoC panel shows |CoC| (coc.png): a shard that records the sign (cocsign.png) drew a background 5 px behind
    the focus and a foreground 5 px before it alike; the sign now has its own column (white = behind)."""
    from defocuskit.data.reader import decode_sample
    from defocuskit.data.shards import encode_members

    coc = np.full((16, 24), 5.0, np.float32)
    coc[:, :8] = -5.0  # the left third in front of the focal plane
    sharp = _textured(0, 16, 24)
    meta = {"source": "fake", "split": "test", "f_number": 2.8}
    sample = decode_sample({"__key__": "s", **encode_members(sharp, sharp, coc, meta, coc_signed=True)})
    sheet = contact_sheet([sample])
    assert sheet.columns == ["blur", "sharp", "coc", "coc sign", "blur crop", "sharp crop"]
    view = sample_row(sample).cells["coc sign"]
    assert view.shape[:2] == (16 * 16, 24 * 16)  # the map's pixels, each 16 x 16
    assert (view[-8:, :8 * 16] == 0).all() and (view[-8:, 8 * 16:] == 255).all()
    assert contact_sheet([dict(sample, coc_sign=None)]).columns == ["blur", "sharp", "coc", "blur crop", "sharp crop"]


def test_write_figure_grid_and_crop_psnr(tmp_path: Path) -> None:
    from defocuskit.imaging.drawing import GAP

    rows, outputs, float_outs = [], [], []
    for f in (2.8, 8.0):
        sharp = _textured(int(f * 10), 32, 32)
        blur = cv2.GaussianBlur(sharp, (0, 0), 1.5)
        out = np.clip(blur.astype(np.float32) / 255 + 0.02, 0, 1)  # a float "method output"
        rows.append(figure_row(f"f/{f:g} · s", blur, sharp, {"net": out}))
        outputs.append((blur, to_display(out), sharp))
        float_outs.append(out)
    assert [p.label for p in rows[0].panels] == ["input", "net", "reference"]
    # 32 px images: the crop is the whole image; each panel's PSNR is against the reference crop.
    sharp = metrics.to_unit(outputs[0][2])
    assert rows[0].panels[0].psnr == pytest.approx(metrics.psnr(metrics.to_unit(outputs[0][0]), sharp))
    assert rows[0].panels[1].psnr == pytest.approx(metrics.psnr(float_outs[0].astype(np.float64), sharp))
    assert rows[0].panels[2].psnr is None
    path = write_figure(tmp_path / "fig.png", rows, "test figure")
    image = read_image(path)
    side = CELL  # 32 px crops repeated 8x
    assert image.shape[1] == 3 * side + 4 * GAP
    tops = []
    for images in outputs:
        for i, crop in enumerate(images):
            expected = repeat_pixels(crop, side // 32)
            y, x = _locate(image, expected)
            assert np.array_equal(image[y:y + side, x:x + side], expected)
            assert x == GAP + i * (side + GAP)
            tops.append(y)
    assert tops[0] == tops[1] == tops[2] < tops[3] == tops[4] == tops[5]
    with pytest.raises(ValueError, match="no crops"):
        write_figure(tmp_path / "empty.png", [], "t")


def test_cli_eval_by_source_and_final_line(tmp_path: Path) -> None:
    import webdataset as wds
    from typer.testing import CliRunner

    from defocuskit.cli.app import app
    from defocuskit.data.shards import encode_members

    folder = tmp_path / "shards"
    folder.mkdir()
    with wds.ShardWriter(str(folder / "test-%06d.tar"), maxcount=100, verbose=0) as sink:
        for i, (source, f) in enumerate([("a", 2.8), ("a", 4.0), ("b", 2.8), ("b", 4.0), ("b", 4.0)]):
            sharp = _textured(i, 32, 32)
            blur = cv2.GaussianBlur(sharp, (0, 0), 1.0 + i / 4)
            sink.write({"__key__": f"{source}/s{i}", **encode_members(sharp, blur, None, {"source": source,
                                                                                          "f_number": f})})
    res = CliRunner().invoke(app, ["eval", "--shards", str(folder), "--baseline", "input", "--by-source",
                                   "--report", str(tmp_path / "rep")])
    assert res.exit_code == 0, res.output
    assert f"plot: {tmp_path / 'rep' / 'aperture.png'}" in res.output.replace("\n", "")
    assert "source 'a'" in res.output and "source 'b'" in res.output
    with (tmp_path / "rep" / "report.csv").open() as fh:
        table = list(csv.DictReader(fh))
    assert {(r["source"], r["f_number"], r["n"]) for r in table} == {
        ("all", "2.8", "2"), ("all", "4.0", "3"), ("all", "all", "5"), ("a", "2.8", "1"), ("a", "4.0", "1"),
        ("a", "all", "2"), ("b", "2.8", "1"), ("b", "4.0", "2"), ("b", "all", "3")}
    assert read_image(tmp_path / "rep" / "aperture.png").shape[0] > 500
