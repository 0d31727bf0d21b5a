"""The Python API's checks of what it is given: sampler settings as recipe text, Hub license ids and tokens."""

from __future__ import annotations

import json
from typing import Any


def sampler_text(key: str, value: Any) -> str:
    """A sampler setting as the YAML text `sampler.KEY=VALUE` carries."""
    try:
        return json.dumps(value, default=lambda o: o.item() if hasattr(o, "item") else list(o))
    except TypeError:
        raise ValueError(f"sampler setting {key}={value!r}: not a number, string, bool, None or list") from None


def check_license(license: Any) -> None:
    """None, or a Hub license id (mit, apache-2.0, other, ...) for the card's front matter; else TypeError or
    ValueError naming license= (license=3 was written to the card as `license: 3`, "" read as not given)."""
    if license is None:
        return
    if not isinstance(license, str):
        raise TypeError(f"license=: a Hub license id such as 'mit' or 'apache-2.0' (a str), got {license!r}")
    if not license.strip() or any(c.isspace() for c in license):
        raise ValueError(f"license={license!r}: not a Hub license id (one word such as 'mit', 'apache-2.0', "
                         "'cc-by-nc-4.0' or 'other')")


def check_token(token: Any) -> None:
    """TypeError naming token= where it is no Hub token (a str), bool or None (its value is not repeated)."""
    if token is not None and not isinstance(token, (str, bool)):
        raise TypeError(f"token=: a Hub access token (a str), True or False, got {type(token).__name__}")
