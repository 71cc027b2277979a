"""facehil's pytest plugin (registered through the `pytest11` entry point).

Grows into the station fixtures and measurements of the scenario suites; for now it
declares the command-line option and markers every suite shares.
"""

from __future__ import annotations


def pytest_addoption(parser):
    group = parser.getgroup("facehil")
    group.addoption("--station", action="store", default=None,
                    help="station file (TOML); without it the simulated station is started")


def pytest_configure(config):
    config.addinivalue_line("markers", "requires(*devices): skip unless the station has these devices")
    config.addinivalue_line("markers", "flow(name): the reader flow a scenario exercises")
