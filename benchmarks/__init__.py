"""Benchmarks for the rtkit emulator: ``python -m benchmarks`` measures and prints a markdown table.

They report numbers, never pass/fail: the emulator is a teaching and testing tool, and the point is
to know how fast and how big it is on this machine, next to the targets we aim for.
"""
