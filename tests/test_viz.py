"""Figure helpers: equal segments drawn in equal colours."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from affcons_lib.companion import viz


def test_matched_labels_renames_equal_segments():
    ref = np.array([[0, 5, 5], [7, 7, 9]])
    labels = np.array([[0, 1, 1], [2, 2, 3]])  # the same partition, other ids
    assert np.array_equal(viz.matched_labels(labels, ref), ref)


def test_matched_labels_gives_new_ids_to_unmatched_segments():
    ref = np.array([[4, 4, 4, 4]])
    labels = np.array([[1, 1, 1, 2]])  # 2 is a split-off piece of 4
    out = viz.matched_labels(labels, ref)
    assert out[0, 0] == 4 and out[0, 3] not in (0, 4) and out[0, 3] > 4
    with pytest.raises(ValueError, match="shape"):
        viz.matched_labels(labels, ref[:, :2])


def test_shared_id_space_gives_shared_colours():
    a = np.array([[1, 1], [3, 3]])
    b = np.array([[1, 1], [2, 2]])  # id 1 in both; different other ids
    fig, (ax_a, ax_b) = plt.subplots(1, 2)
    shared = np.union1d(a, b)
    viz.show_labels(ax_a, a, id_space=shared)
    viz.show_labels(ax_b, b, id_space=shared)
    rgb_a = ax_a.images[0].to_rgba(ax_a.images[0].get_array())
    rgb_b = ax_b.images[0].to_rgba(ax_b.images[0].get_array())
    assert np.allclose(rgb_a[0, 0], rgb_b[0, 0])  # id 1: one colour
    assert not np.allclose(rgb_a[1, 0], rgb_b[1, 0])  # ids 3 and 2: two colours
    plt.close(fig)


def test_paired_plot_joins_each_seed_and_marks_means():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from affcons_lib.companion import viz

    rows = [dict(method=m, seed=s, test_error=v) for s, vals in enumerate([(0.3, 0.2), (0.35, 0.3), (0.4, 0.33)])
            for m, v in zip(("sparse_only", "crac"), vals)]
    fig, ax = plt.subplots()
    viz.paired_plot(ax, rows, "test_error", ["sparse_only", "crac"], floor=0.34, floor_label="every affinity 1")
    lines = ax.get_lines()
    seeds = [ln for ln in lines if ln.get_marker() == "o"]
    assert len(seeds) == 3  # one line per seed, through both methods
    assert [tuple(ln.get_ydata()) for ln in seeds] == [(0.3, 0.2), (0.35, 0.3), (0.4, 0.33)]
    means = [ln for ln in lines if ln.get_linewidth() == 2.5]
    assert [round(ln.get_ydata()[0], 4) for ln in means] == [0.35, round((0.2 + 0.3 + 0.33) / 3, 4)]
    assert "every affinity 1: 0.34" in [t.get_text() for t in ax.get_legend().get_texts()]
    plt.close(fig)
