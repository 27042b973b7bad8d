"""Smoke test of `python -m bench.search` at tiny sizes: every phase runs and the report section is written."""

from bench import search


def test_bench_search_runs_every_phase_at_a_tiny_size(tmp_path):
    results = tmp_path / "RESULTS.md"
    run = search.main(
        ["--clips", "2000", "--saves", "3", "--profiled-saves", "1", "--queries", "10", "--checkpoints", "2",
         "--checkpoint-reference", "200", "--kinds-sample", "1000", "--seal-rows", "500", "--exact-max", "800",
         "--hnsw-max", "900", "--base-chunk", "1000", "--results", str(results), "--out", str(tmp_path)]
    )  # fmt: skip
    (size,) = run["sizes"]
    assert size["error"] is None and set(size["parts"]) == {"base", "saves", "search", "checkpoint", "compaction"}
    assert size["parts"]["base"]["layout"]["kinds"] == {"ivf": {"segments": 2, "rows": 2000}}
    search_part = size["parts"]["search"]
    assert search_part["live_rows"] == search_part["expected_rows"]
    assert search_part["camera+time"]["recall"] == 1.0  # a strict filter is answered exactly
    opened = size["open"]["parts"]["open"]
    assert opened["rows"] == 2000 + 4 * 100 + 2 * 50
    assert {name: len(latencies) for name, latencies in opened["search_ms"].items()} == {"all": 10, "camera+time": 10}
    assert set(run["kinds"]["parts"]) == set(search.KINDS) and run["checkpoint_reference"]["error"] is None
    text = results.read_text()
    assert text.startswith("<!-- bench.search -->") and "save of 100 clips, p95" in text
    assert "not measured (size not requested)" in text  # no 1M here
