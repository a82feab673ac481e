"""Benchmark figures against their references: alternating passes, compared by their medians."""
from bench.timing import alternating_medians, passes_text


def test_passes_alternate_and_one_slow_pass_does_not_move_the_median():
    calls, ours, theirs = [], iter([10.0, 11.0, 40.0]), iter([20.0, 5.0, 21.0])

    def measure():
        calls.append("ours")
        return next(ours)

    def reference():
        calls.append("reference")
        return next(theirs)

    figure, reference_figure, passes = alternating_medians(measure, reference)
    assert calls == ["ours", "reference"] * 3
    assert (figure, reference_figure) == (11.0, 20.0)
    assert passes_text(passes) == "medians of 3: 10/20, 11/5, 40/21"
