"""The soak's verdicts on hand-made samples: a leak is caught, a wobble and a warm-up are not, storage only
reported."""

import pytest

from components.soak import MIN_FIT, RSS_MIB_PER_RUN, WARMUP, Sample, growth, slope, table

pytestmark = pytest.mark.unit


def samples(rss, files=None, threads=None, children=None, dbs=None, stored=None, by_process=None) -> list[Sample]:
    n = len(rss)
    return [
        Sample(
            run=i + 1,
            rss_mib=rss[i],
            open_files=(files or [40] * n)[i],
            threads=(threads or [12] * n)[i],
            children=(children or [0] * n)[i],
            db_connections=(dbs or [1] * n)[i],
            storage={"mlruns": (stored or [1000 * (i + 1) for i in range(n)])[i]},
            rss_by_process={name: values[i] for name, values in (by_process or {}).items()},
        )
        for i in range(n)
    ]


def verdicts(ss) -> dict[str, bool]:
    return {g.quantity: g.grows for g in growth(ss)}


def test_slope_is_the_least_squares_growth_per_run():
    assert slope([1, 3, 5, 7]) == pytest.approx(2.0)
    assert slope([5]) == 0.0


def test_steady_processes_pass_and_storage_is_only_reported():
    v = verdicts(samples([300, 340, 352, 352.5, 352.2, 352.6, 352.4, 352.3]))  # warm-up growth, then flat
    assert not any(v.values()), v
    assert "bytes.mlruns" in v  # reported, never failed


def test_an_rss_leak_above_the_limit_fails():
    leak = RSS_MIB_PER_RUN * 2
    v = verdicts(samples([300 + leak * i for i in range(8)]))
    assert v["rss_mib"] is True


def test_a_leaked_file_or_child_per_run_fails_but_a_wobble_does_not():
    n = 8
    v = verdicts(samples([300] * n, files=[40 + i for i in range(n)], children=[0, 0, 0, 1, 1, 2, 2, 3]))
    assert v["open_files"] is True and v["children"] is True
    v = verdicts(samples([300] * n, threads=[12, 13, 12, 13, 12, 13, 12, 13], dbs=[1, 2, 1, 1, 2, 1, 1, 1]))
    assert v["threads"] is False and v["db_connections"] is False


def test_each_process_is_judged_so_a_leaking_serve_fails_beside_a_steady_server():
    n = WARMUP + MIN_FIT
    serve = [468.0 + 0.6 * RSS_MIB_PER_RUN * 3 * i for i in range(n)]  # 1.8 MiB a run
    server = [240.0 - 0.5 * i for i in range(n)]  # gives memory back
    total = [a + b for a, b in zip(serve, server)]
    v = verdicts(samples(total, by_process={"serve": serve, "prefect server": server}))
    assert v["rss_mib.serve"] is True and v["rss_mib.prefect server"] is False
    assert v["rss_mib"] is False  # the sum (+1.3 MiB a run) is only reported: it would not say which process leaks
    flat = verdicts(samples([708.0] * n, by_process={"serve": [468.0] * n, "prefect server": [240.0] * n}))
    assert not any(flat.values()), flat


def test_too_few_runs_to_fit_a_slope_after_the_warm_up_is_an_error():
    with pytest.raises(ValueError, match=f"at least {WARMUP + MIN_FIT} runs"):
        growth(samples([300] * (WARMUP + MIN_FIT - 1)))


def test_the_table_has_a_row_per_run():
    text = table(samples([300, 301, 302, 303, 304]))
    assert text.count("\n") == 6 and "| 5 | 304.0 |" in text
