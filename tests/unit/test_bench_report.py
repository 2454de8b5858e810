"""The benchmark command rewrites its own sections of BENCHMARKS.md and keeps the rest."""

from __future__ import annotations

from pathlib import Path

from bench import report

ROOT = Path(__file__).resolve().parents[2]


def test_the_sections_of_other_benches_and_their_notes_are_kept() -> None:
    old = (
        "# Benchmarks\n\n## Throughput\n\nold figures\n\n<!-- cluster: notes -->\n"
        "<!-- pg_cluster scaling: begin -->\n## Scaling\n\nfigures\n"
        "<!-- pg_cluster scaling: end -->\n\n### Hand-written\n\nwhy\n"
    )
    kept = report.sections_kept(old)
    assert kept.startswith("\n<!-- pg_cluster scaling: begin -->")
    assert kept.endswith("### Hand-written\n\nwhy\n")
    assert report.sections_kept("# Benchmarks\n\n## Throughput\n") == ""


def test_the_document_in_the_tree_keeps_every_section_it_holds() -> None:
    text = (ROOT / "BENCHMARKS.md").read_text()
    kept = report.sections_kept(text)
    assert text.endswith(kept)
    for marker in ("pg_cluster scaling", "flow control", "scaling limits", "schedules"):
        assert f"<!-- {marker}: begin -->" in kept
