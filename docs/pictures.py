"""``make pictures``: chosen screenshots of the browser tests (``artifacts/``, ignored) into ``docs/img/`` (tracked).

Each argument is ``SOURCE:NAME``. A picture is scaled down to at most ``MAX_WIDTH`` pixels and reduced to a
256-colour palette: screenshots of a UI are flat colours and text, so they stay sharp at a fraction of the size.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

ARTIFACTS, OUT = Path("artifacts"), Path("docs/img")
MAX_WIDTH = 900


def main(pairs: list[str]) -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    missing = [s for s, _, _ in (p.partition(":") for p in pairs) if not (ARTIFACTS / s).exists()]
    if missing:
        print(f"missing in {ARTIFACTS}/: {', '.join(missing)} (the browser tests write them: make test)")
        return 1
    for pair in pairs:
        source, _, name = pair.partition(":")
        image = Image.open(ARTIFACTS / source).convert("RGB")
        if image.width > MAX_WIDTH:
            image = image.resize((MAX_WIDTH, round(image.height * MAX_WIDTH / image.width)), Image.Resampling.LANCZOS)
        target = OUT / (name or source)
        image.quantize(colors=256, dither=Image.Dither.NONE).save(target, optimize=True)
        print(f"{target}: {image.width}×{image.height}, {target.stat().st_size / 1024:.0f} KiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
