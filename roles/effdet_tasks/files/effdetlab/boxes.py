"""Box validation under a policy.

policy "clip": out-of-bounds coordinates are clipped to the image, inverted
               coordinates (xmin > xmax / ymin > ymax) are swapped;
policy "drop": any out-of-bounds or inverted box is dropped.
Under both, a box with no numeric coordinates, or with zero width/height after
the fix (e.g. entirely outside the image), is dropped.

Coordinates stay in VOC pixel units, normalised by the real image size exactly
the way automl's create_pascal_tfrecord does (x / width, no 1-pixel shift).
"""

from typing import List, Optional, Tuple

from effdetlab._records import Record

POLICIES = ("clip", "drop")


class BoxOutcome(Record):
    def __init__(self, box: Optional[Tuple[float, float, float, float]], actions: List[str],
                 drop_reason: Optional[str] = None, detail: str = "") -> None:
        self.box = box                  # (xmin, ymin, xmax, ymax) kept, or None
        self.actions = actions          # e.g. ["clipped"], ["inverted_fixed"], []
        self.drop_reason = drop_reason  # set when box is None
        self.detail = detail


def check_box(xmin: Optional[float], ymin: Optional[float], xmax: Optional[float],
              ymax: Optional[float], width: int, height: int, policy: str) -> BoxOutcome:
    if policy not in POLICIES:
        raise ValueError(f"box policy must be one of {POLICIES}, got {policy!r}")
    if None in (xmin, ymin, xmax, ymax):
        return BoxOutcome(None, [], "invalid_box", "missing or non-numeric coordinates")
    assert xmin is not None and ymin is not None and xmax is not None and ymax is not None
    raw = f"({xmin:g},{ymin:g},{xmax:g},{ymax:g}) in {width}x{height}"
    actions: List[str] = []
    if xmin > xmax or ymin > ymax:
        if policy == "drop":
            return BoxOutcome(None, [], "inverted", f"inverted box {raw}")
        if xmin > xmax:
            xmin, xmax = xmax, xmin
        if ymin > ymax:
            ymin, ymax = ymax, ymin
        actions.append("inverted_fixed")
    if xmin < 0 or ymin < 0 or xmax > width or ymax > height:
        if policy == "drop":
            return BoxOutcome(None, [], "out_of_bounds", f"out-of-bounds box {raw}")
        xmin, xmax = min(max(xmin, 0.0), width), min(max(xmax, 0.0), width)
        ymin, ymax = min(max(ymin, 0.0), height), min(max(ymax, 0.0), height)
        actions.append("clipped")
    if xmax - xmin <= 0 or ymax - ymin <= 0:
        return BoxOutcome(None, actions, "degenerate",
                          f"zero-area box {raw}" + (f" after {'+'.join(actions)}" if actions else ""))
    return BoxOutcome((xmin, ymin, xmax, ymax), actions, None, raw if actions else "")
