"""What a worker saw, checked against the data mode; the blocks TFoS feeds and their reassembly."""
import numpy as np
import pytest

from rdd_io import redshift_bundle as rb

pytestmark = pytest.mark.unit


def test_checksum_is_order_free_and_tells_equal_sums_apart():
    assert rb.index_checksum([3, 1, 2]) == rb.index_checksum(np.array([1, 2, 3]))
    # same count and the same index sum (1 + 4 == 2 + 3): a plain sum could not tell these apart
    assert rb.index_checksum([1, 4]) != rb.index_checksum([2, 3])
    assert rb.index_checksum([0, 1]) != rb.index_checksum([0, 1, 1])
    assert len(rb.index_checksum(np.arange(15000))) == 16


def test_expected_shares_per_data_mode():
    same = [rb.expected_share(10, 3, "same", w) for w in range(3)]
    assert same[0] == same[2] == {"samples": 10, "checksum": rb.index_checksum(range(10))}
    different = [rb.share_indices(10, 3, "different", w) for w in range(3)]
    assert [list(d) for d in different] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert rb.expected_share(10, 3, "different", 1) == {"samples": 3, "checksum": rb.index_checksum([1, 4, 7])}
    with pytest.raises(ValueError, match="data mode"):
        rb.share_indices(10, 3, "mixed", 0)


def test_check_seen_accepts_the_right_shares_and_names_a_wrong_one():
    n = 12
    good = {w: [rb.seen(rb.share_indices(n, 2, "different", w))] * 3 for w in range(2)}
    rb.check_seen("run-a", n, "different", good)
    # worker 1 was fed worker 0's share in epoch 2: same mode, wrong share
    bad = {0: good[0], 1: [good[1][0], rb.seen(rb.share_indices(n, 2, "different", 0)), good[1][2]]}
    with pytest.raises(ValueError, match=r"run-a: worker:1 saw the wrong share in epoch 2: 6 samples .*its "
                                         r"different-data share of 12 samples over 2 workers has 6"):
        rb.check_seen("run-a", n, "different", bad)
    # a same-data run where a worker saw only half the samples
    with pytest.raises(ValueError, match="worker:0 saw the wrong share in epoch 1: 6 samples"):
        rb.check_seen("run-b", n, "same", {0: good[0], 1: [rb.seen(range(n))]})


def _rows(indices, bands=3):
    return [(int(i), (np.full(bands, i, np.float32), int(i) % 5)) for i in indices]


def test_blocks_and_collect_epoch_round_trip_one_partition():
    items = list(rb._blocks(_rows([5, 1, 9, 3, 7]), block=2))
    assert [it[0] for it in items] == ["rows", "rows", "rows", rb.END] and items[-1] == (rb.END, 5)
    assert [len(it[1]) for it in items[:-1]] == [2, 2, 1]
    queue = iter(items + [("rows", np.array([0]), np.zeros((1, 3), np.float32), np.array([0]))])
    x, y, index = rb.collect_epoch(lambda: next(queue))
    assert list(index) == [1, 3, 5, 7, 9] and x.shape == (5, 3) and list(x[:, 0]) == [1, 3, 5, 7, 9]
    assert list(y) == [1, 3, 0, 2, 4]
    assert next(queue)[0] == "rows"  # the next epoch's items are left for the next call


def test_collect_epoch_end_of_feed_and_a_short_epoch():
    assert rb.collect_epoch(lambda: None) is None
    items = iter(list(rb._blocks(_rows([1, 2, 3]), block=8))[:1] + [(rb.END, 4)])
    with pytest.raises(ValueError, match="fed 3 samples, the partition's end marker says 4"):
        rb.collect_epoch(lambda: next(items))


def test_feed_bench_headroom_from_a_scripted_summary():
    from bench.redshift_feed import headroom
    run = "300-same-M2-staleness-aware-s1"
    summary = {"feeding": {run: [{"epoch": e, "workers": [{"worker": 0, "items": 3, "put_s": 0.1 * e},
                                                          {"worker": 1, "items": 3, "put_s": 0.2}]}
                                 for e in (1, 2, 3)]},
               "epoch_time_s": {run: {"worker:0": [5.0, 7.0, 9.0], "worker:1": [6.0, 10.0, 14.0]}},
               "seen": {run: {f"worker:{w}": [{"samples": 300, "checksum": "x"}] * 3 for w in (0, 1)}}}
    h = headroom(summary, skip=1)
    # epochs 2 and 3: feed 300/0.2, 300/0.2, 300/0.3, 300/0.2 -> median 1500; consume 300/2, 300/4, 300/2,
    # 300/4 -> median 112.5; ratio 1500 / 112.5
    assert h["feed"] == pytest.approx([1500, 1500, 1000, 1500])
    assert h["consume"] == pytest.approx([150, 75, 150, 75])
    assert h["ratio"] == pytest.approx(1500 / 112.5)
    with pytest.raises(ValueError, match="no epoch after the first 3"):
        headroom(summary, skip=3)
