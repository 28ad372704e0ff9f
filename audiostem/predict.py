"""Classify new audio or MIDI files with a trained model.

    python -m audiostem.predict CHECKPOINT FILE... [--top-k 3] [--json]

CHECKPOINT is a ``.ckpt`` file or a run folder (its ``checkpoints/best.ckpt``). Each file is
turned into features with exactly the feature config stored in the checkpoint
(``data_prep.extract_file``: a spectrogram model reads audio, a piano-roll model reads MIDI),
as the float16 values a cache would hold (values that overflow float16 are refused), normalised
with the training statistics, cut into the evaluation windows and scored; the window logits are
averaged and the top classes printed with their probabilities. A file that cannot be read is reported and skipped (exit status 1).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from data_prep.discover import shown, text_name

from .inference import (CheckpointError, clip_logits, device_arg, load_classifier, one_line_warnings, positive_int,
                        warn_if_unfinished)


def predict_files(checkpoint: Union[str, Path], files: Sequence[Union[str, Path]], top_k: int = 3,
                  batch_size: int = 64, device: str = "cpu") -> list[dict]:
    """Class probabilities for each file. Returns one dict per file: ``file``, and either
    ``top`` (``[{"label", "probability"}]``, best first, ``top_k`` long), ``probabilities``
    (every class) and ``windows``, or ``error`` (why the file could not be read). A run folder
    that has not finished (no ``metrics.json``) gives a ``UserWarning``: its checkpoint is the best
    so far."""
    from data_prep import extract_file
    from data_prep.config import feature_config

    from .data import clip_windows
    model, payload = load_classifier(checkpoint, device)
    warn_if_unfinished(checkpoint, "predicting with")
    config = feature_config(payload.features)
    stats = payload.stats_tensors()
    classes = payload.classes
    results = []
    for f in files:
        try:
            features = extract_file(f, config)
        except Exception as e:                    # noqa: BLE001 - report any unreadable file, go on
            what = "MIDI" if config.kind == "pianoroll" else "audio"
            results.append({"file": str(f), "error": f"{type(e).__name__}: {e} (this model reads {what} "
                                                     f"files: {config.kind} features)"})
            continue
        x = clip_windows(features, payload.crop_frames, payload.eval_hop, stats)   # float16, as cached
        batches = [(x[i:i + batch_size], torch.zeros(len(x[i:i + batch_size]), dtype=torch.long))
                   for i in range(0, len(x), batch_size)]
        probs = torch.softmax(clip_logits(model, batches, 1, device)[0], 0)
        order = torch.argsort(probs, descending=True)[:top_k].tolist()
        results.append({"file": str(f), "top": [{"label": classes[k], "probability": round(float(probs[k]), 6)}
                                                for k in order],
                        "probabilities": {c: round(float(p), 6) for c, p in zip(classes, probs)},
                        "windows": len(x)})
    return results


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m audiostem.predict", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="a .ckpt file or a run folder")
    parser.add_argument("files", metavar="FILE", nargs="+", help="audio or MIDI files")
    parser.add_argument("--top-k", type=positive_int, default=3, help="classes to print per file (default 3)")
    parser.add_argument("--json", action="store_true", help="print one JSON list with every class probability")
    parser.add_argument("--batch-size", type=positive_int, default=64)
    parser.add_argument("--device", type=device_arg, default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    one_line_warnings()
    try:
        results = predict_files(args.checkpoint, args.files, args.top_k, args.batch_size, args.device)
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for r in results:
            if "error" in r:
                print(f"{shown(text_name(r['file']))}: error: {r['error']}", file=sys.stderr)
            else:
                print(f"{shown(text_name(r['file']))}: " + ", ".join(f"{shown(t['label'])} {t['probability']:.3f}" for t in r["top"]))
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
