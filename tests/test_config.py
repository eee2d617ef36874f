"""The server's default worker count: one per core it may use, container limits included."""

from __future__ import annotations

import os

import pytest

from server.config import ServerConfig, available_cores


@pytest.fixture
def host_of_64_cores(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(64)))


@pytest.mark.parametrize(
    ("files", "cores"),
    [
        ({}, 64),  # no cgroup files: not in a container
        ({"cpu.max": "max 100000\n"}, 64),
        ({"cpu.max": "200000 100000\n"}, 2),
        ({"cpu.max": "150000 100000\n"}, 2),  # 1.5 CPUs: two workers share them
        ({"cpu.max": "50000 100000\n"}, 1),
        ({"cpu/cpu.cfs_quota_us": "400000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 4),
        ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, 64),
        ({"cpu.max": "garbage"}, 64),
    ],
)
def test_a_container_cpu_limit_caps_the_cores(host_of_64_cores, tmp_path, files, cores):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
    assert available_cores(tmp_path) == cores


@pytest.mark.parametrize("cores", [1, 3])
def test_workers_default_to_the_available_cores(monkeypatch, tmp_path, cores):
    # One core the process may use, or three: as many workers, whatever the machine has
    # (its cgroup files replaced by an empty folder: no container limit).
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(available_cores, "__defaults__", (tmp_path,))
    assert ServerConfig().workers == cores
    assert ServerConfig(workers=5).workers == 5
