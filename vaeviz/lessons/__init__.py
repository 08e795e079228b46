"""Lessons: each seed paper's key experiment as data (runs, figures, checks, text), run by one button or
`vaeviz lesson NAME`. `LESSONS` maps a lesson's name to it, in teaching order."""

from vaeviz.lessons import calibrated, disentangle, geco_vs_beta, holes, micro_mnist, phase, primer, rae
from vaeviz.lessons.lesson import Check, Figure, Lesson, LessonRuns, Variation, Verdict

LESSONS: dict[str, Lesson] = {lesson.name: lesson for lesson in (calibrated.LESSON, geco_vs_beta.LESSON, phase.LESSON,
                                                                 micro_mnist.LESSON, holes.LESSON, rae.LESSON,
                                                                 disentangle.LESSON, primer.LESSON)}

__all__ = ["LESSONS", "Check", "Figure", "Lesson", "LessonRuns", "Variation", "Verdict"]
