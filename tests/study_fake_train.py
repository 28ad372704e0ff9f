"""A stand-in for ``python -m audiostem.train`` used by the study tests: same argv
(``RECIPE key=value ... out_dir=DIR``), same run-folder contract, no training.

Items ``item000 ...`` (``items`` in the recipe, default 40) get deterministic predictions from the
stem name and seed. ``fake.cv=true`` adds a ``fold_1/checkpoints`` folder; ``fake.fail=always`` exits 1; ``fake.fail=once`` fails the first attempt
(leaving a partial folder with ``checkpoints/last.ckpt``) and finishes when run again.
With ``train.lr``: validation accuracy is ``0.9 - |lr - fake.val_best|`` (when that is given), and the
test predictions are right more often when ``lr == fake.test_best``, so a choice made on test items
would differ from one made on validation; ``recipe.yaml`` records the lr.
"""
import hashlib
import json
import sys
from pathlib import Path

import yaml


def main(argv):
    recipe = yaml.safe_load(Path(argv[0]).read_text()) or {}
    ov = dict(a.split("=", 1) for a in argv[1:])
    out = Path(ov.pop("out_dir"))
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    (out / "calls.txt").open("a").write(" ".join(argv[1:]) + "\n")
    fail = ov.get("fake.fail")
    if fail == "always" or (fail == "once" and not (out / "checkpoints" / "last.ckpt").exists()):
        (out / "checkpoints" / "last.ckpt").write_bytes(b"partial")
        print("fake failure", file=sys.stderr)
        return 1
    stem, seed = ov.get("model.stem", "deep3"), int(ov.get("seed", 0))
    classes = ["a", "b"]
    lr = float(ov["train.lr"]) if "train.lr" in ov else None
    boost = 25 if lr is not None and lr == float(ov.get("fake.test_best", "nan")) else 0
    n = int(recipe.get("items", 40))
    rows = []
    for i in range(n):
        h = int(hashlib.md5(f"{stem}/{ov.get('model.stem_args.width')}/{seed}/{i}".encode()).hexdigest(), 16)
        label = classes[i % 2]
        pred = label if h % 100 < 70 + boost else classes[1 - i % 2]
        rows.append(f"item{i:03d},{label},{pred},{int(pred == label)},0,0.5,0.5")
    (out / "predictions_test.csv").write_text("id,label,pred,correct,fold,p_a,p_b\n" + "\n".join(rows) + "\n")
    (out / "history.csv").write_text("epoch,train_loss,val_loss,val_accuracy,val_macro_f1,lr,seconds\n"
                                     "0,1.0,1.0,0.5,0.5,0.001,1\n1,0.8,0.9,0.6,0.6,0.001,1\n")
    if ov.get("fake.cv") == "true":       # cross-validation keeps fold folders with checkpoints
        (out / "fold_1" / "checkpoints").mkdir(parents=True, exist_ok=True)
        for name in ("best.ckpt", "last.ckpt"):
            (out / "fold_1" / "checkpoints" / name).write_bytes(b"fold")
    (out / "checkpoints" / "best.ckpt").write_bytes(b"best")
    (out / "checkpoints" / "last.ckpt").write_bytes(b"last")
    acc = sum(r.split(",")[3] == "1" for r in rows) / n
    test = {"accuracy": acc, "balanced_accuracy": acc, "macro_f1": acc, "per_class": {}, "n_items": n}
    val = dict(test)
    if lr is not None:
        (out / "recipe.yaml").write_text(yaml.safe_dump({"train": {"lr": lr}}))
        if "fake.val_best" in ov:
            val["accuracy"] = round(0.9 - abs(lr - float(ov["fake.val_best"])), 6)
    metrics = {"test": test, "val": val, "best_epoch": 1, "epochs_run": 2, "train_seconds": 2.0,
               "train_samples_per_second": 100.0, "params": 1000, "total_flops": 2e6, "classes": classes,
               "seed": seed, "stem": {"params": 100, "flops": 1e6, "receptive_field": [3, 3],
                                      "stride": [4, 4], "out_shape": [64, 32, 64]}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
