"""Stereo on Middlebury 2014 "Motorcycle" (scikit-image's quarter-resolution copy): OpenCV
StereoBM / StereoSGBM, census + SGM, and likewise's learned features (WTA, then each
post-processing step), one run, side by side; then the ``likewise stereo`` command timed as
a user runs it (a fresh process, start-up and model loading included).

    PYTHONPATH=src python benchmarks/stereo.py [--model M.safetensors] [--pngs docs/stereo]

``--pngs`` saves the disparity maps (half size, one colour scale, missing = black) next to
the ground truth, for docs/stereo.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from likewise.stereo.benchmark import format_table, run_benchmark
from likewise.stereo.images import colorize

#: files written by --pngs: table row -> file name
PNGS = {
    "ground truth": "motorcycle_gt.png",
    "OpenCV StereoBM": "motorcycle_stereobm.png",
    "OpenCV StereoSGBM": "motorcycle_stereosgbm.png",
    "census + SGM + post-processing": "motorcycle_census_sgm.png",
    "likewise learned, WTA": "motorcycle_likewise_wta.png",
    "likewise learned + median = likewise full pipeline": "motorcycle_likewise.png",
}


def time_command(model: str | None) -> float:
    """Seconds of ``python -m likewise stereo LEFT RIGHT --out D.npy --png D.png`` (fresh process)."""
    import skimage.data
    from PIL import Image

    left, right, _ = skimage.data.stereo_motorcycle()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        Image.fromarray(left).save(tmp / "left.png")
        Image.fromarray(right).save(tmp / "right.png")
        cmd = [
            sys.executable,
            "-m",
            "likewise",
            "stereo",
            str(tmp / "left.png"),
            str(tmp / "right.png"),
            "--out",
            str(tmp / "d.npy"),
            "--png",
            str(tmp / "d.png"),
            "--max-disparity",
            "128",
        ]
        if model:
            cmd += ["--model", model]
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True, env={**os.environ})
        return time.perf_counter() - start


def save_pngs(result: dict, folder: Path) -> None:
    from PIL import Image

    from likewise.io import atomic_write_bytes

    gt = np.where(np.isfinite(result["gt"]), result["gt"], np.nan)
    vmax = float(np.nanmax(gt))
    maps = {"ground truth": gt, **result["maps"]}
    for name, file in PNGS.items():
        img = Image.fromarray(colorize(maps[name], vmax)).resize((371, 250), Image.NEAREST)
        import io

        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=True)
        atomic_write_bytes(folder / file, buf.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="patch network file (default: the shipped model)")
    parser.add_argument("--pngs", type=Path, help="folder for the disparity PNGs")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    result = run_benchmark(args.model)
    print(format_table(result["rows"]))
    seconds = time_command(args.model)
    print(
        f"\n`likewise stereo LEFT RIGHT --out D.npy --png D.png` (fresh process, start-up included): "
        f"{seconds:.1f} s"
    )
    print(
        f"load average at start: {load:.1f} on {os.cpu_count()} cores; torch threads: "
        f"{__import__('torch').get_num_threads()}"
    )
    if args.pngs:
        save_pngs(result, args.pngs)
        print(f"disparity maps written to {args.pngs}/")


if __name__ == "__main__":
    main()
