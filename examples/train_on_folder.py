"""Train on a folder of your own pictures, then use the model: the whole path in one script.

    python examples/train_on_folder.py PICTURES/ [--epochs 10] [--out run/]
    python examples/train_on_folder.py --demo      # writes a small folder of made-up pictures first

PICTURES/ holds one sub-directory per class (PICTURES/cats/*.jpg, PICTURES/dogs/*.png, ...),
or PICTURES/train/<class>/ and PICTURES/test/<class>/. The script runs the three commands
you would type:

    gossipnet train --dataset folder --data-dir PICTURES/ --checkpoint run/model.safetensors
    gossipnet predict run/model.safetensors SOME.jpg OTHER.png
    gossipnet export run/model.safetensors --onnx run/model.onnx

and prints what each one said. `--quick` trains for 4 epochs on 16x16 pictures (a smoke test).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

GOSSIPNET = [sys.executable, "-m", "gossipnet"]


def demo_folder(root: Path, per_class: int = 30) -> Path:
    """Pictures where the bright part is the label: left half, top half, or centre."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in ("centre", "left", "top"):
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = rng.integers(24, 64, 2)
            a = rng.integers(0, 90, (h, w))
            if label == "left":
                a[:, : w // 2] += 140
            elif label == "top":
                a[: h // 2] += 140
            else:
                a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] += 140
            Image.fromarray(a.clip(0, 255).astype(np.uint8)).save(root / label / f"{i:03d}.png")
    return root


def gossipnet(*args: str) -> str:
    print("$ gossipnet " + " ".join(args), flush=True)
    done = subprocess.run([*GOSSIPNET, *args], capture_output=True, text=True)
    sys.stderr.write(done.stderr)
    if done.returncode not in (0, 1):  # 1: predict could not read some picture; it says which
        raise SystemExit(f"gossipnet {args[0]} failed with exit status {done.returncode}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pictures", nargs="?", help="the image folder")
    p.add_argument("--demo", action="store_true", help="make a small made-up folder to try this on")
    p.add_argument("--out", default="run", help="where the model files go (default run/)")
    p.add_argument("--epochs", default="10")
    p.add_argument("--quick", action="store_true", help="4 epochs on 16x16 pictures: a smoke test")
    args = p.parse_args(argv)
    out = Path(args.out)
    if args.demo:
        pictures = demo_folder(out / "demo-pictures", per_class=12 if args.quick else 30)
    elif args.pictures:
        pictures = Path(args.pictures)
    else:
        p.error("give the image folder, or --demo")
    model = out / "model.safetensors"
    flags = ["--epochs", "4", "--image-size", "16", "--net", "tiny"] if args.quick else ["--epochs", args.epochs]
    result = json.loads(gossipnet("train", "--dataset", "folder", "--data-dir", str(pictures),
                                  "--checkpoint", str(model), "--json", "--quiet", *flags).splitlines()[-1])
    print(f"test accuracy {result['test_accuracy']:.1%} on {result['test_images']} held-out pictures; "
          f"classes {', '.join(result['classes'])}; {len(result['skipped'])} picture(s) skipped")
    found = sorted(str(f) for f in pictures.rglob("*") if f.suffix.lower() in (".png", ".jpg", ".jpeg")
                   and ".gossipnet-cache" not in f.parts)
    samples = found[:: max(1, len(found) // 3)][:3]  # a few from across the classes
    print(gossipnet("predict", str(model), *samples), end="")
    gossipnet("export", str(model), "--onnx", str(out / "model.onnx"))
    print(f"now try: python examples/use_onnx_model.py {out / 'model.onnx'} {' '.join(samples)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
