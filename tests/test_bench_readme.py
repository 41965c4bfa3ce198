"""README's performance table is the one bench/readme_table.py renders from the committed
bench/results/honest.json (figures live in the bench results, never typed by hand)."""

from __future__ import annotations

import json

from bench.readme_table import README, RESULTS, current_block, render, replace_block


def test_readme_table_matches_the_committed_results() -> None:
    table = render(json.loads(RESULTS.read_text()))
    assert current_block(README.read_text()) == table


def test_table_rows_come_from_the_json() -> None:
    results = json.loads(RESULTS.read_text())
    table = render(results)
    assert f"{results['idle']['pss_mb_tree']} MB" in table
    assert f"p50 {results['ban_idle']['p50_ms']} ms" in table
    assert f"{results['million']['bytes_per_tracked_ip']:,} B per tracked address" in table
    assert f"{results['mix']['max_rate_without_drops']:,} events/s" in table


def test_replace_block_keeps_the_rest_of_the_readme() -> None:
    from bench.readme_table import END, START

    text = f"intro\n{START}\nold table\n{END}\noutro\n"
    assert replace_block(text, "| new |") == f"intro\n{START}\n| new |\n{END}\noutro\n"
