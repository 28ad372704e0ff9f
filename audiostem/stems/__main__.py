"""``python -m audiostem.stems [F T]``: a markdown table of every preset stem at 1 x F x T
(default 1 x 128 x 256)."""

from __future__ import annotations

import sys

from . import describe_stem, list_stems


def preset_table(input_shape: tuple[int, int, int] = (1, 128, 256)) -> str:
    """Markdown table of every registered preset: params, FLOPs, receptive field, stride, out shape."""
    c, f, t = input_shape
    rows = ["| stem | params | MFLOPs @ %dx%dx%d | receptive field (f, t) | stride (f, t) | out shape |" % (c, f, t),
            "|---|---:|---:|---|---|---|"]
    for name in list_stems():
        d = describe_stem(name, input_shape)
        rf, stride, out = d["receptive_field"], d["stride"], d["out_shape"]
        rows.append(f"| {name} | {d['params']:,} | {d['flops'] / 1e6:.1f} | {rf[0]} x {rf[1]} "
                    f"| {stride[0]} x {stride[1]} | {out[0]} x {out[1]} x {out[2]} |")
    return "\n".join(rows)


if __name__ == "__main__":
    size = tuple(int(a) for a in sys.argv[1:3]) or (128, 256)
    print(preset_table((1, *size)))
