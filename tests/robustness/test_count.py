"""The suite's size is part of its promise (README, reliability section)."""
from robustness.conftest import count_cases


def test_robustness_tables_hold_at_least_440_cases():
    total = count_cases()
    print(f"robustness cases: {total}")
    assert total >= 440
