"""Copy a stem study's report into its results page: each dataset's section of report.md (table,
verdict, power, convergence, seed noise, devices) replaces the block between
``<!-- report:DATASET -->`` and ``<!-- /report:DATASET -->``, the status line between
``<!-- report:status -->`` markers is rewritten, and the report's figures are copied beside the
page. Sections without markers in the page are left out; the discussion around the blocks is
written by hand.

    python -m audiostem.study report studies/stem_study.yaml && python studies/publish_results.py
    python -m audiostem.study report studies/stem_study_v2.yaml && python studies/publish_results.py \\
        --report runs/studies/stem_study_v2/report --doc docs/results_v2.md --figures docs/results_v2
"""
import argparse
import re
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sections(report: str) -> dict[str, str]:
    """``{dataset: its section's text without the heading}``."""
    parts = re.split(r"^## (.+)\n", report, flags=re.M)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2]) if name != "Figures"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--report", default="runs/studies/stem_study/report", help="the report folder")
    p.add_argument("--doc", default="docs/results.md", help="the results page to update")
    p.add_argument("--figures", default="docs/results", help="where the report's PNG figures go")
    args = p.parse_args(argv)
    report_dir, doc, figures = REPO / args.report, REPO / args.doc, REPO / args.figures
    if not (report_dir / "report.md").is_file():
        print(f"error: {report_dir / 'report.md'}: missing; make it with python -m audiostem.study report",
              file=sys.stderr)
        return 2
    report = (report_dir / "report.md").read_text()
    text = doc.read_text()
    status = re.search(r"^Made by .*?; (\d+) cells not finished \((\d+) finished runs.*?"
                       r"(?: (\d+) cells left out by --cells\.)?$", report, flags=re.M)
    total = sum(int(n or 0) for n in status.groups())
    text = re.sub(r"(<!-- report:status -->).*?(<!-- /report:status -->)",
                  lambda m: f"{m[1]}{status[2]} of {total} cells in the tables{m[2]}", text, flags=re.S)
    for name, body in sections(report).items():
        text = re.sub(rf"(<!-- report:{re.escape(name)} -->).*?(<!-- /report:{re.escape(name)} -->)",
                      lambda m: f"{m[1]}\n{body}\n{m[2]}", text, flags=re.S)
    doc.write_text(text)
    figures.mkdir(exist_ok=True)
    for png in sorted(report_dir.glob("*.png")):
        shutil.copyfile(png, figures / png.name)
    print(f"updated {args.doc} and {args.figures}/")      # as given: paths outside the checkout are fine
    return 0


if __name__ == "__main__":
    sys.exit(main())
