"""Stem studies: a grid of training runs (datasets x stem variants x seeds), a resumable runner,
paired item-level statistics and a report. See docs/study.md.

    python -m audiostem.study STUDY.yaml [--jobs N] [--plan] [--dry-run]
    python -m audiostem.study report STUDY.yaml
"""
from .grid import Cell, Study, StudyError, expand, load_study
from .tuning import study_cells

__all__ = ["Cell", "Study", "StudyError", "expand", "load_study", "study_cells"]
