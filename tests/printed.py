"""Comparing with published numbers at the precision they were printed.

Printed values are kept as strings: a float forgets trailing zeros (".080" would become 0.08
and loosen the check tenfold).
"""


def decimals(printed: str) -> int:
    return len(printed.split(".")[1]) if "." in printed else 0


def assert_printed(value: float, printed: str, what: str) -> None:
    """``value`` rounds to ``printed`` at the number of decimals printed."""
    assert isinstance(printed, str), f"{what}: give the printed value as a string"
    d = decimals(printed)
    assert abs(value - float(printed)) <= 0.5 * 10**-d + 1e-12, f"{what}: {value!r} does not round to {printed}"
