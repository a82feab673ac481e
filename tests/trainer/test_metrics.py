import json

import matplotlib
import pytest

from trainer.metrics import MetricsLog, plot_throughput, throughput, throughput_line

matplotlib.use("Agg")


def logged_rows(peak: float | None) -> list[dict]:
    return [{"step": step, "train/loss": 6.0 - step, **throughput(1000 * step, 2e11 * step, 1.0, 2, peak),
             "train/data_wait_fraction": 0.01 * step} for step in range(1, 5)]


def test_the_throughput_is_plotted_under_the_loss_with_an_mfu_scale_where_the_peak_is_known(tmp_path):
    import matplotlib.pyplot as plt

    log = MetricsLog(tmp_path, enabled=True)
    for row in logged_rows(peak=0.4):
        log.log(row["step"], {k: v for k, v in row.items() if k != "step"})
    log.close()
    assert matplotlib.image.imread(log.plot_loss_curve(title="sft: loss")).shape[:2] == (700, 800)  # loss, rates

    for peak in (0.4, None):
        fig, (flops, wait) = plt.subplots(1, 2)
        plot_throughput(flops, wait, logged_rows(peak))
        # 2e11 FLOP x step over 2 ranks: 0.1-0.4 TFLOP/s, plotted in GFLOP/s as the console prints them
        assert list(flops.lines[0].get_ydata()) == pytest.approx([100, 200, 300, 400])
        assert flops.get_title() == "model GFLOP/s per rank"
        assert list(wait.lines[0].get_ydata()) == pytest.approx([1, 2, 3, 4])  # percent
        scales = [child for child in flops.child_axes if child.get_ylabel() == "MFU %"]
        if peak is None:
            assert not scales
        else:
            fig.canvas.draw()
            low, high = flops.get_ylim()
            assert scales[0].get_ylim() == pytest.approx((100 * low / (1000 * peak), 100 * high / (1000 * peak)))
        plt.close(fig)


def test_the_console_shows_tflops_per_rank_and_mfu_where_known():
    assert throughput_line(throughput(120_000, 1.2e5 * 2.6e10, 1.0, 8, 989.0)) == \
        "120,000 tok/s  390 TFLOP/s per rank (MFU 39.4%)"
    assert throughput_line(throughput(640, 640 * 1e6, 1.0, 2, None)) == "640 tok/s  0.32 GFLOP/s per rank"
