"""Copy the stem study's report into docs/results.md: each dataset's section of report.md (table,
verdict, power, convergence, seed noise, devices) replaces the block between
``<!-- report:DATASET -->`` and ``<!-- /report:DATASET -->``, the status line between
``<!-- report:status -->`` markers is rewritten, and the figures are copied to docs/results/.
The discussion around the blocks is written by hand.

    python -m audiostem.study report studies/stem_study.yaml && python studies/publish_results.py
"""
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIGURES = ("verdicts.png", "accuracy_per_stem.png", "accuracy_vs_flops.png", "validation_curves.png", "filters_folk.png",
           "filters_folk_audio.png", "filters_gm_instruments.png", "filters_espeak_digits.png")


def sections(report: str) -> dict[str, str]:
    """``{dataset: its section's text without the heading}``."""
    parts = re.split(r"^## (\S+)\n", report, flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2]) if name != "Figures"}


def main(report_dir: str = "runs/studies/stem_study/report", doc: str = "docs/results.md") -> int:
    report_dir, doc = REPO / report_dir, REPO / doc
    report = (report_dir / "report.md").read_text()
    text = doc.read_text()
    status = re.search(r"^Made by .*?; (\d+) cells not finished \((\d+) finished runs.*?"
                       r"(?: (\d+) cells left out by --cells\.)?$", report, flags=re.M)
    total = sum(int(n or 0) for n in status.groups())
    text = re.sub(r"(<!-- report:status -->).*?(<!-- /report:status -->)",
                  lambda m: f"{m[1]}{status[2]} of {total} cells in the tables{m[2]}", text, flags=re.S)
    for name, body in sections(report).items():
        text = re.sub(rf"(<!-- report:{name} -->).*?(<!-- /report:{name} -->)",
                      lambda m: f"{m[1]}\n{body}\n{m[2]}", text, flags=re.S)
    doc.write_text(text)
    (doc.parent / "results").mkdir(exist_ok=True)
    for name in FIGURES:
        if (report_dir / name).exists():
            shutil.copyfile(report_dir / name, doc.parent / "results" / name)
    print(f"updated {doc.relative_to(REPO)} and {doc.parent.relative_to(REPO)}/results/")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
