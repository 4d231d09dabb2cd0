"""The one heartbeat scheduler both backends use for ttl deployments (backends/heartbeat.py)."""
from __future__ import annotations

import asyncio

from vast_magic.backends.heartbeat import HeartbeatScheduler


async def until(condition, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


class Beats:
    """A beat function answering as scripted (an exception is raised), then True forever."""

    def __init__(self, *answers):
        self.answers = list(answers)
        self.keys: list = []

    async def __call__(self, key) -> bool:
        self.keys.append(key)
        answer = self.answers.pop(0) if self.answers else True
        if isinstance(answer, Exception):
            raise answer
        return answer


def test_beats_at_once_survives_errors_and_ends_when_the_deployment_is_gone():
    beat = Beats(True, OSError("engine down"), True, False)
    scheduler = HeartbeatScheduler(beat)

    async def scenario():
        scheduler.start("d1", ttl=0.15)                       # interval: the 0.05 s floor
        await until(lambda: not scheduler.running("d1"))
    asyncio.run(scenario())
    assert beat.keys == ["d1"] * 4
    assert scheduler.beats["d1"] == 2 and "d1" not in scheduler.last_error


def test_restart_replaces_the_task_and_stop_ends_it():
    beat = Beats()
    scheduler = HeartbeatScheduler(beat)

    async def scenario():
        scheduler.start("d1", ttl=3600)
        first = scheduler.tasks["d1"]
        scheduler.start("d1", ttl=3600)
        await until(first.done)
        replaced = first.cancelled()
        await until(lambda: len(beat.keys) >= 1)
        scheduler.stop_all()
        await asyncio.sleep(0.01)
        return replaced
    assert asyncio.run(scenario()) is True
    assert not scheduler.running("d1") and scheduler.tasks == {}
