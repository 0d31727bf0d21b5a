"""io.wire: what eval's processes send each other goes as JSON and comes back equal; nothing in it can name a type
or run code the receiver did not choose (the former gather unpickled what it received)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from defocuskit.eval.figure import FigureRow, Panel
from defocuskit.io import wire


def test_what_eval_gathers_comes_back_equal_in_value_and_type():
    crop = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    scores = {"key": "a/f2", "psnr": np.float64(31.25), "ssim": 0.9, "f_number": None, "n": np.int64(2)}
    figure = FigureRow("f/2.8 · a", [Panel("input", crop, None), Panel("naf", crop * 2, 30.5)])
    part = {"images": [(3, scores)], "depths": {"vabd": {8, 16}}, "figure": {2.8: (3, figure)},
            None: [float("nan"), math.inf, -0.0, True, "é"], "saved": {}, "grid": np.arange(5, dtype=np.float32) / 4}
    back = wire.decode(wire.encode(part), (FigureRow, Panel))
    assert back.keys() == part.keys() and back["depths"] == {"vabd": {8, 16}}
    (index, row), = back["images"]
    assert index == 3 and row == part["images"][0][1] and type(row["psnr"]) is np.float64 and type(row["n"]) is np.int64
    group, (index, fig) = next(iter(back["figure"].items()))
    assert group == 2.8 and index == 3 and isinstance(fig, FigureRow) and fig.label == "f/2.8 · a"
    assert [p.label for p in fig.panels] == ["input", "naf"] and fig.panels[1].psnr == 30.5
    assert fig.panels[1].image.dtype == np.uint8 and np.array_equal(fig.panels[1].image, crop * 2)
    assert math.isnan(back[None][0]) and back[None][1:] == [math.inf, -0.0, True, "é"]
    assert back["grid"].dtype == np.float32 and np.array_equal(back["grid"], part["grid"])


def test_it_refuses_types_it_was_not_given_and_anything_it_did_not_write():
    row = FigureRow("x", [Panel("input", np.zeros((1, 1, 3), np.uint8))])
    with pytest.raises(wire.WireError, match="'FigureRow' is not among the types accepted"):
        wire.decode(wire.encode(row))  # the receiver names what it accepts
    planted = [{"$dataclass": "system", "fields": {"command": "touch /tmp/x"}},  # a type nobody accepts
               {"$array": "|O", "shape": [1], "data": "AA=="},                 # an object array
               {"$array": "<f4", "shape": [3], "data": "AAAA"},                 # bytes that are not 3 floats
               {"key": "a plain object, not a tagged value"},
               {"$tuple": "abc"}]
    for value in planted:
        with pytest.raises(wire.WireError):
            wire.decode(json.dumps(value).encode(), (FigureRow, Panel))
    with pytest.raises(wire.WireError, match="not JSON"):
        wire.decode(b"\x80\x04\x95 a pickle", (FigureRow, Panel))
    with pytest.raises(TypeError, match="a object cannot be sent"):
        wire.encode({"x": object()})
