"""studies/publish_results.py: the report's sections replace the page's marked blocks, the rest of
the page (the hand-written discussion) is kept, and the figures are copied."""
import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load():
    spec = importlib.util.spec_from_file_location("publish_results", REPO / "studies/publish_results.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_marked_sections_are_replaced_and_the_rest_kept(tmp_path, monkeypatch, capsys):
    mod = load()
    monkeypatch.setattr(mod, "REPO", tmp_path)
    report = tmp_path / "rep"
    report.mkdir()
    (report / "report.md").write_text(
        "# Stem study\n\nMade by `x`; 1 cells not finished (9 finished runs in the tables). 5 cells left out by --cells.\n\n"
        "## a@resnet18\n\n| table a |\n\n**Verdict:** new\n\n## b\n\nsection b\n\n## Summary\n\n| s |\n\n## Figures\n\n![v](verdicts.png)\n")
    (report / "verdicts.png").write_bytes(b"png")
    doc = tmp_path / "page.md"
    doc.write_text("Status: <!-- report:status -->old<!-- /report:status -->.\n\nintro\n\n"
                   "<!-- report:a@resnet18 -->\nold table\n<!-- /report:a@resnet18 -->\n\ndiscussion of a\n"
                   "<!-- report:Summary --><!-- /report:Summary -->\n")
    assert mod.main(["--report", "rep", "--doc", "page.md", "--figures", "figs"]) == 0
    text = doc.read_text()
    assert "<!-- report:status -->9 of 15 cells in the tables<!-- /report:status -->" in text
    assert "<!-- report:a@resnet18 -->\n| table a |\n\n**Verdict:** new\n<!-- /report:a@resnet18 -->" in text
    assert "old table" not in text and "section b" not in text        # no marker for b: left out
    assert "\n\ndiscussion of a\n" in text and "intro" in text
    assert text.endswith("<!-- report:Summary -->\n| s |\n<!-- /report:Summary -->\n")
    assert (tmp_path / "figs/verdicts.png").read_bytes() == b"png"
    assert mod.main(["--report", "missing", "--doc", "page.md"]) == 2
    assert "report.md: missing" in capsys.readouterr().err


def test_a_page_outside_the_checkout(tmp_path, monkeypatch, capsys):
    """A trial run on a copy of the page (an absolute path elsewhere) writes it and says so."""
    mod = load()
    monkeypatch.setattr(mod, "REPO", tmp_path / "repo")
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep/report.md").write_text(
        "# S\n\nMade by `x`; 0 cells not finished (2 finished runs in the tables).\n\n## a\n\nnew\n")
    doc = tmp_path / "copy.md"
    doc.write_text("<!-- report:a -->\nold\n<!-- /report:a -->\n")
    assert mod.main(["--report", str(tmp_path / "rep"), "--doc", str(doc), "--figures", str(tmp_path / "figs")]) == 0
    assert doc.read_text() == "<!-- report:a -->\nnew\n<!-- /report:a -->\n"
    assert f"updated {doc} and {tmp_path / 'figs'}/" in capsys.readouterr().out
