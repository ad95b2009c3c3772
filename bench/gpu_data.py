"""Carry CIFAR-10 to a lent GPU machine in pieces small enough for the device tool, and rebuild it there exactly.

The device tool sends the work tree (~16 MB) plus at most 64 MiB of carried files per call, and CIFAR-10's
python batches are 6 × 31 MB of pixels that zstd shrinks by 5%. A batch file is a pickle whose one large
``BINBYTES`` holds the N×3072 pixels: ``pack`` stores those pixels as one lossless WebP mosaic (56% of the
raw bytes), the few hundred KB around them deflated, and the file's SHA-256; ``unpack`` rebuilds every file
byte for byte and refuses any whose SHA-256 differs. Nothing is unpickled on either side (the pixel block is
found with ``pickletools.genops``, which only reads opcodes).

    .venv/bin/python bench/gpu_data.py pack ../shared/data/cifar-10-batches-py .gpu/part1 batches.meta \\
        data_batch_1 data_batch_2
    python3 bench/gpu_data.py unpack .gpu/cifar .gpu/part1 .gpu/part2 .gpu/part3   # on the GPU machine

Other files (the pretrained checkpoint) are copied whole and checked the same way. Standard library + Pillow.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import pickletools
import sys
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

IMAGE = 3072  # bytes of one 32×32 RGB image, channel-major as CIFAR stores it
GRID = 100  # images per mosaic row
SUFFIX = ".pack.json"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def pixel_block(raw: bytes) -> tuple[int, int] | None:
    """``(start, length)`` of the pickle's one large byte string of whole images, or None."""
    best = None
    for op, arg, pos in pickletools.genops(raw):
        if op.name in {"BINBYTES", "BINBYTES8", "BINSTRING"} and isinstance(arg, bytes | str):
            n = len(arg)
            if n >= IMAGE * 100 and n % IMAGE == 0 and (best is None or n > best[1]):
                header = 9 if op.name == "BINBYTES8" else 5  # opcode + 8- or 4-byte length
                best = (pos + header, n)
    return best


def _mosaic(block: bytes) -> np.ndarray:
    n = len(block) // IMAGE
    rows = -(-n // GRID)
    x = np.zeros((rows * GRID, 3, 32, 32), np.uint8)
    x[:n] = np.frombuffer(block, np.uint8).reshape(n, 3, 32, 32)
    return x.reshape(rows, GRID, 3, 32, 32).transpose(0, 3, 1, 4, 2).reshape(rows * 32, GRID * 32, 3)


def _unmosaic(img: np.ndarray, n: int) -> bytes:
    rows = img.shape[0] // 32
    x = img.reshape(rows, 32, GRID, 32, 3).transpose(0, 2, 4, 1, 3).reshape(rows * GRID, IMAGE)
    return x[:n].tobytes()


def pack(src: Path, out: Path, names: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        raw = (src / name).read_bytes()
        meta = {"name": name, "sha256": _sha256(raw), "size": len(raw)}
        try:
            block = pixel_block(raw)
        except Exception:  # not a pickle (a checkpoint zip, say): copied whole
            block = None
        if block is None:
            (out / f"{name}.raw").write_bytes(raw)
        else:
            start, length = block
            buf = io.BytesIO()
            Image.fromarray(_mosaic(raw[start : start + length])).save(
                buf, "WEBP", lossless=True, quality=100, method=4
            )
            (out / f"{name}.webp").write_bytes(buf.getvalue())
            (out / f"{name}.rest").write_bytes(zlib.compress(raw[:start] + raw[start + length :], 9))
            meta.update(start=start, length=length)
        (out / f"{name}{SUFFIX}").write_text(json.dumps(meta), encoding="utf-8")
        print(f"{name}: {len(raw):,} bytes → {sum(p.stat().st_size for p in out.glob(name + '.*')):,}")


def _rebuild(part: Path, meta: dict) -> bytes:
    name = meta["name"]
    if "start" not in meta:
        return (part / f"{name}.raw").read_bytes()
    rest = zlib.decompress((part / f"{name}.rest").read_bytes())
    with Image.open(part / f"{name}.webp") as im:
        pixels = _unmosaic(np.asarray(im.convert("RGB")), meta["length"] // IMAGE)
    start = meta["start"]
    return rest[:start] + pixels + rest[start:]


def unpack(dest: Path, parts: list[Path]) -> int:
    dest.mkdir(parents=True, exist_ok=True)
    bad = 0
    for part in parts:
        for manifest in sorted(part.glob(f"*{SUFFIX}")):
            meta = json.loads(manifest.read_text(encoding="utf-8"))
            name = Path(meta["name"]).name  # never a path outside dest
            target = dest / name
            if target.exists() and _sha256(target.read_bytes()) == meta["sha256"]:
                continue
            data = _rebuild(part, meta)
            if _sha256(data) != meta["sha256"] or len(data) != meta["size"]:
                print(f"error: {part / name} does not rebuild to its SHA-256; pack it again", file=sys.stderr)
                bad += 1
                continue
            tmp = dest / f".{name}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, target)
            print(f"{target}: {len(data):,} bytes, SHA-256 checked")
    return 2 if bad else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="pack NAMES of SRC into OUT")
    p.add_argument("src", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("names", nargs="+")
    u = sub.add_parser("unpack", help="rebuild every packed file of PARTS into DEST")
    u.add_argument("dest", type=Path)
    u.add_argument("parts", nargs="+", type=Path)
    args = ap.parse_args()
    if args.cmd == "pack":
        missing = [n for n in args.names if not (args.src / n).is_file()]
        if missing:
            print(
                f"error: {args.src} has no {', '.join(missing)}; point SRC at the folder that holds them",
                file=sys.stderr,
            )
            return 2
        for stale in [q for n in args.names for q in args.out.glob(f"{n}.*")]:
            stale.unlink()
        pack(args.src, args.out, args.names)
        return 0
    return unpack(args.dest, [p for p in args.parts if p.is_dir()])


if __name__ == "__main__":
    sys.exit(main())
