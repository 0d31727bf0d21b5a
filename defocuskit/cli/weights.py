"""`defocuskit import-weights`: a published checkpoint (.pth) of a ported method into a defocuskit model file."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

IMPORT_EXAMPLE = ("Example: defocuskit import-weights --method restormer single_image_defocus_deblurring.pth "
                  "--out restormer-dpdd.safetensors  (then: defocuskit deblur photos/ --checkpoint "
                  "restormer-dpdd.safetensors --out sharp/)")


def import_weights_cmd(
    checkpoint: Path = typer.Argument(..., help="The release's checkpoint file (.pth), as its authors publish it."),
    method: str = typer.Option(
        ..., "--method", help="The ported method it belongs to: drbnet (lingyanruan/DRBNet, "
        "ckpts/single/single_image_defocus_deblurring.pth) | ifan (codeslake/IFAN, IFAN.pytorch) | jdrl "
        "(liyucs/JDRL, unet-jdrl-sdd.pth) | restormer (swz30/Restormer, single_image_defocus_deblurring.pth)."),
    out: str = typer.Option(..., "--out", help="The model file to write (.safetensors), for deblur, eval, the API, "
                             "save_pretrained and train.init_from."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --out file."),
) -> None:
    """Import a published checkpoint: read safely (weights only), names mapped, every shape checked."""
    from defocuskit.inference.release import import_release
    from defocuskit.methods import get_method

    try:
        done = import_release(method, checkpoint, out, overwrite=force)
    except (ValueError, FileNotFoundError) as exc:  # ReleaseError is a ValueError
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    release = get_method(done.method).release
    assert release is not None
    p = release.protocol
    typer.echo(f"{done.path}: {done.method}, {done.tensors} tensors, {done.parameters:,} parameters")
    typer.echo(f"source: {checkpoint.name} (sha256 {done.sha256}), code {release.code}")
    typer.echo(f"the release tests {p.bit_depth}-bit {p.channel_order.upper()} images (padding: {p.padding}, "
               f"multiple of {p.pad_multiple}; crop to a multiple of {p.crop_multiple}) in {p.script}")
    if done.kept:
        typer.echo(f"not in the checkpoint, so left as the port builds them (training-only parts; deblurring does "
                   f"not use them): {', '.join(done.kept)}")
