"""Registration on strong bokeh: does `ingest`'s registration keep wide-aperture shots and still refuse wrong ones?

The test set, built from the fixtures' f/16 references with their depth maps and focal masks (every VABD and
EBB stack), rendered as the renderer calibrated on the real stacks does (linear light, highlights restored,
occlusion-aware layers, sensor-free):
- good: each reference rendered at f/1.4 and f/1.8 with CoC scales 0.09 and 0.14 of the long side (f/1 CoC
  per unit of relative depth; the real stacks' fitted scales span 0.011-0.10, so 0.14 is wider than any of
  them: full-frame bokeh), then moved as a tripod bracket moves (shift <= 3 px, focus breathing <= 0.5 %,
  rotation <= 0.1 deg); each must be ACCEPTED;
- bad: a render paired with another scene's reference (swapped), with its in-focus subject (the focal mask)
  moved by 5 % of the frame (a moved subject), with a block of another place of the reference pasted in
  (pasted), or moved far beyond a tripod bracket (scale 1.12 / rotation 6 deg); each must be REJECTED;
- glints: the f/1.8 render at k 0.14 with 40 or 120 small clipped points of light (sun on leaves, lamps) put in
  the reference where the depth map says out of focus, 30x the clip level in linear light, so the shot shows
  their bokeh discs and the reference clipped dots (moved as a tripod bracket moves): ACCEPTED;
- close focus wide open: f/1.4 renders at k 0.25 and 0.4 (background discs of 12-17 % and 18-28 % of the long
  side, as a 50 mm f/1.8 on APS-C focused at 0.35-0.5 m gives), moved as a tripod bracket moves: ACCEPTED; the
  k 0.25 render swapped with another scene's reference, with its subject moved, or with a pasted block: REJECTED
  (drawn from their own random generator, so the cases above are as they were);
- the 15 real fixture pairs (VABD f/1.8, f/2.8, f/8; EBB f/1.8): ACCEPTED.
The moved cases carry their true warp, so the table also gives how far off the kept fits are (RMS over the frame).
Photos are split: VABD 0001-0003 and EBB train are the tuning part; EBB test (4545-4547) is held out and
reported separately (`--part held-out`), to be looked at once the constants are fixed.

    python tools/bench_registration_bokeh.py [--part tune|held-out|all] [--min-score 0.8] [--motion affine|bracket]
        [--ladder 0.35,...,4.0] [--bokeh-ladder 5.6,8,11.3]
"""

from __future__ import annotations

import argparse
import hashlib
import time
from pathlib import Path

import cv2
import numpy as np
from calibrate_renderer import depth_coc, stacks
from tool_args import choice_list, finite, number_list

from defocuskit.data import reg_quality
from defocuskit.data.register import RegistrationError, align
from defocuskit.data.render_photo import encode, render_coc, restore_highlights
from defocuskit.io.images import read_image, srgb_to_linear, to_float

ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "real"
HELD_OUT = {"EBB test/4545", "EBB test/4546", "EBB test/4547"}
CLOSE_FOCUS_K = (0.25, 0.4)  # f/1 CoC per unit of relative depth, as a share of the long side


def photos(root: Path) -> list[dict]:
    """Every fixture stack (tools/calibrate_renderer.stacks), its shots keyed "f/N"."""
    return [dict(st, shots={f"f/{n:g}": path for n, path in st["shots"].items()}) for st in stacks(root)]


def render(photo: dict, ref: np.ndarray, f_number: float, k: float, cache: Path | None = None) -> np.ndarray:
    if cache is not None:
        path = cache / f"{photo['name'].replace('/', '_').replace(' ', '_')}-f{f_number}-k{k}.npy"
        if path.is_file():
            return np.load(path)
        out = render(photo, ref, f_number, k)
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, out)
        return out
    linear = restore_highlights(srgb_to_linear(ref))
    return encode(render_coc(linear, depth_coc(photo, ref.shape[:2], k, f_number)))


def with_glints(photo: dict, ref: np.ndarray, count: int, level: float, rng: np.random.Generator,
                cache: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(reference, f/1.8 render at k 0.14) with `count` glints of `level` x the clip level (linear light) placed
    where the CoC exceeds 8 px: the reference shows them clipped, the render as bokeh discs."""
    coc = depth_coc(photo, ref.shape[:2], 0.14, 1.8)
    lin, shown = srgb_to_linear(ref), ref.copy()
    ys, xs = np.nonzero(np.abs(coc) > 8)
    placed = []
    for k in rng.choice(len(ys), count) if len(ys) else []:
        radius = int(rng.integers(1, 3))
        placed.append((int(xs[k]), int(ys[k]), radius))
        cv2.circle(shown, (int(xs[k]), int(ys[k])), radius, (1.0, 1.0, 1.0), -1)
        cv2.circle(lin, (int(xs[k]), int(ys[k])), radius, (level, level, level), -1)
    where = hashlib.sha256(repr(placed).encode()).hexdigest()[:10]  # the cached shot must hold these glints
    name = f"{photo['name'].replace('/', '_').replace(' ', '_')}-glints{count}-{level:g}-{where}.npy"
    if cache is not None and (cache / name).is_file():
        return shown, np.load(cache / name)
    shot = encode(render_coc(restore_highlights(lin), coc))
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        np.save(cache / name, shot)
    return shown, shot


def moved(img: np.ndarray, rng: np.random.Generator, shift: float, scale: float,
          angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """`img` moved by a rotation, scale and random shift; and that warp (reference -> moving coordinates)."""
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle_deg, scale)
    m[:, 2] += rng.uniform(-shift, shift, 2)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT), m


def fit_error(matrix: list, truth: np.ndarray, shape: tuple[int, ...]) -> float:
    """RMS distance, px, between where a fitted warp and the true one send every 32nd reference pixel."""
    ys, xs = np.mgrid[0:shape[0]:32, 0:shape[1]:32]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)]).astype(np.float64)
    d = np.asarray(matrix, np.float64)[:2] @ pts - truth @ pts
    return float(np.sqrt((d ** 2).sum(axis=0).mean()))


def moved_subject(shot: np.ndarray, focal: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """`shot` with its in-focus subject (the focal mask's pixels) moved 5 % of the frame sideways, towards the
    wider side: a subject that moved between the shots (what it uncovered keeps the shot's old pixels)."""
    h, w = shot.shape[:2]
    ys, xs = np.nonzero(focal)
    dx = int(0.05 * w) * (1 if (xs.mean() if xs.size else w / 2) < w / 2 else -1)
    m = np.float32([[1, 0, dx], [0, 1, 0]])
    subject = cv2.warpAffine(shot, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    where = cv2.warpAffine(focal.astype(np.float32), m, (w, h)) > 0.5
    out = shot.copy()
    out[where] = subject[where]
    return out


def pasted(shot: np.ndarray, ref: np.ndarray) -> np.ndarray:
    h, w = shot.shape[:2]
    s = h // 3
    out = shot.copy()
    out[h - s - 20:h - 20, 40:40 + s] = ref[20:20 + s, w - s - 40:w - 40]
    return out


def judge(shot: np.ndarray, ref: np.ndarray, motion: str = "affine") -> tuple[float | None, str, list | None]:
    try:
        _, rec = align(shot, ref, "ecc", motion)
    except RegistrationError as exc:
        return None, exc.reason[:60], None
    return rec["score"], (f"cons {rec['consistency']} disp {rec['displaced']} raw {rec['raw_score']:.2f} "
                          f"{rec.get('level', '')}"), rec["matrix"]


KINDS = ("real pair", "bokeh with tripod jitter", "swapped scene", "moved subject", "pasted block",
         "far from a tripod bracket", "bokeh with glints", "close-focus bokeh with tripod jitter",
         "close-focus: swapped scene", "close-focus: moved subject", "close-focus: pasted block")  # --only's names
MOTIONS = ("affine", "bracket", "translation", "euclidean", "homography")  # register.align's ECC motions


def _ladder(text: str) -> str:
    """A --ladder: '' (none) or a comma-separated list of positive sigmas."""
    return text if text == "" else number_list()(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=ROOT)
    ap.add_argument("--part", choices=("tune", "held-out", "all"), default="tune")
    ap.add_argument("--min-score", type=finite(), default=0.8)
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--cache", type=Path, help="keep the renders here (they take most of the time)")
    ap.add_argument("--only", type=lambda t: t and choice_list(KINDS)(t), default="",
                    help="comma-separated case kinds to judge (default: all)")
    ap.add_argument("--dump", type=Path, help="save each wrongly judged case's shot and reference here (.npz)")
    ap.add_argument("--motion", choices=MOTIONS, default="affine",
                    help="align's motion: affine (ingest's default) or bracket "
                    "(`ingest --bracket-fit subject` for --vabd and --raw-dir: a shift and a rotation on the subject)")
    ap.add_argument("--ladder", type=_ladder, default=None,
                    help="comma-separated Gaussian sigmas (at 256 px) for the score's blur "
                    "matching of either shot instead of data/reg_quality.py's _Q_SIGMAS (a variant to compare)")
    ap.add_argument("--bokeh-ladder", type=_ladder, default=None,
                    help="the same for the reference's bokeh ladder (_Q_BOKEH_SIGMAS; "
                    "'' for none, as before it)")
    args = ap.parse_args()
    for name, folder in (("--cache", args.cache), ("--dump", args.dump)):
        if folder is not None and (folder.exists() or folder.is_symlink()) and not folder.is_dir():
            ap.error(f"argument {name}: {folder}: exists and is not a folder")
    if args.ladder is not None:
        reg_quality._Q_SIGMAS = tuple(float(v) for v in args.ladder.split(",") if v)
    if args.bokeh_ladder is not None:
        reg_quality._Q_BOKEH_SIGMAS = tuple(float(v) for v in args.bokeh_ladder.split(",") if v)
    chosen = [p for p in photos(args.fixtures)
              if args.part == "all" or (p["name"] in HELD_OUT) == (args.part == "held-out")]
    refs = {p["name"]: to_float(read_image(p["ref"])) for p in photos(args.fixtures)}
    names = list(refs)
    tally: dict[str, list[int]] = {}
    t0 = time.time()
    for i, photo in enumerate(chosen):
        rng = np.random.default_rng(i)
        ref = refs[photo["name"]]
        cases = []  # (kind, want, tag, shot, reference, the warp that moved the shot or None)
        focal = cv2.resize(to_float(read_image(photo["focal"])).mean(axis=2), (ref.shape[1], ref.shape[0])) > 0.5
        for name, path in photo["shots"].items():
            cases.append(("real pair", "accept", f"{name}", to_float(read_image(path)), ref, None))
        for f_number in (1.4, 1.8):
            for k in (0.09, 0.14):
                shot = render(photo, ref, f_number, k, args.cache)
                tag = f"f/{f_number} k {k}"
                jittered, m = moved(shot, rng, 3.0, 1 + rng.uniform(-0.005, 0.005), rng.uniform(-0.1, 0.1))
                cases.append(("bokeh with tripod jitter", "accept", tag, jittered, ref, m))
                if k == 0.14:
                    other = refs[names[(names.index(photo["name"]) + 1) % len(names)]]
                    cases.append(("swapped scene", "reject", tag, shot, other, None))
                    cases.append(("moved subject", "reject", tag, moved_subject(shot, focal, rng), ref, None))
                    cases.append(("pasted block", "reject", tag, pasted(shot, ref), ref, None))
                    cases.append(("far from a tripod bracket", "reject", tag,
                                  moved(shot, rng, 3.0, 1.12 if f_number == 1.4 else 1.0,
                                        0.0 if f_number == 1.4 else 6.0)[0], ref, None))
        for count in (40, 120):
            shown, shot = with_glints(photo, ref, count, 30.0, rng, args.cache)
            jittered, m = moved(shot, rng, 3.0, 1 + rng.uniform(-0.005, 0.005), rng.uniform(-0.1, 0.1))
            cases.append(("bokeh with glints", "accept", f"{count} glints", jittered, shown, m))
        close_rng = np.random.default_rng(1000 + i)  # its own draws: the cases above stay as they were
        for k in CLOSE_FOCUS_K:  # close focus wide open: background discs of 12-28 % of the long side
            shot = render(photo, ref, 1.4, k, args.cache)
            tag = f"f/1.4 k {k}"
            jittered, m = moved(shot, close_rng, 3.0, 1 + close_rng.uniform(-0.005, 0.005),
                                close_rng.uniform(-0.1, 0.1))
            cases.append(("close-focus bokeh with tripod jitter", "accept", tag, jittered, ref, m))
            if k == CLOSE_FOCUS_K[0]:
                other = refs[names[(names.index(photo["name"]) + 1) % len(names)]]
                cases.append(("close-focus: swapped scene", "reject", tag, shot, other, None))
                cases.append(("close-focus: moved subject", "reject", tag, moved_subject(shot, focal, close_rng), ref,
                              None))
                cases.append(("close-focus: pasted block", "reject", tag, pasted(shot, ref), ref, None))
        for kind, want, tag, shot, reference, truth in cases:
            if args.only and kind not in args.only.split(","):
                continue
            score, detail, matrix = judge(shot, reference, args.motion)
            accepted = score is not None and score >= args.min_score
            right = accepted == (want == "accept")
            row = tally.setdefault(f"{kind} ({want})", [0, 0, []])
            row[0] += right
            row[1] += 1
            if accepted and truth is not None:  # how far off a kept fit is
                row[2].append(fit_error(matrix, truth, shot.shape))
                detail += f" fit error {row[2][-1]:.1f} px"
            if args.dump is not None and not right:
                args.dump.mkdir(parents=True, exist_ok=True)
                stem = f"{photo['name']}-{kind}-{tag}".replace("/", "_").replace(" ", "_")
                np.savez_compressed(args.dump / f"{stem}.npz", shot=shot, reference=reference)
            if args.verbose or not right:
                print(f"{'ok ' if right else 'WRONG'} {photo['name']:16s} {kind:26s} {tag:14s} "
                      f"score {'-' if score is None else f'{score:.3f}'} {detail}", flush=True)
    print(f"\n{args.part}: {len(chosen)} photos, min score {args.min_score}, {time.time() - t0:.0f} s\n")
    print("| case | right | of | fit error of the kept (known warp), px RMS: median / max |\n|---|---:|---:|---|")
    for kind, (right, total, errors) in tally.items():
        spread = f"{np.median(errors):.1f} / {max(errors):.1f}" if errors else ""
        print(f"| {kind} | {right} | {total} | {spread} |")


if __name__ == "__main__":
    main()
