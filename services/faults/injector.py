"""The faults of a run: a seeded plan of SIGKILLs (every service process and the portal)
and restarts of Kafka, PostgreSQL and Redis, carried out against a running fleet, and a
supervisor that restarts whatever exits on its own, as Kubernetes would."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass, field

from services.demo import PORTAL, SERVICES, Fleet
from services.faults.infra import OwnInfra

VICTIMS = (*SERVICES, PORTAL)  # every process of the fleet
INFRA = ("kafka", "postgres", "redis")


@dataclass(frozen=True, slots=True)
class Fault:
    """One injection: `target` (a process, or an infrastructure server) at `at_s` seconds
    after the traffic started."""

    at_s: float
    target: str


def plan_faults(seed: int, kills: int, span_s: float, infra_restarts: int = 1) -> list[Fault]:
    """`kills` SIGKILLs at seeded random times within `span_s` (every process at least once
    when `kills` allows), and `infra_restarts` restarts of each of Kafka, PostgreSQL and
    Redis at seeded times between 15 % and 85 % of the span; in time order."""
    rng = random.Random(seed)
    victims = list(VICTIMS)
    rng.shuffle(victims)
    victims = victims[:kills] + [rng.choice(VICTIMS) for _ in range(kills - len(victims))]
    rng.shuffle(victims)
    times = sorted(rng.uniform(0.02, 1.0) * span_s for _ in range(kills))
    faults = [Fault(t, v) for t, v in zip(times, victims, strict=True)]
    for _ in range(infra_restarts):
        faults += [Fault(rng.uniform(0.15, 0.85) * span_s, server) for server in INFRA]
    return sorted(faults, key=lambda f: (f.at_s, f.target))


@dataclass
class FaultLog:
    """What was injected, and what the processes did on their own."""

    kills: Counter[str] = field(default_factory=Counter)
    infra_restarts: Counter[str] = field(default_factory=Counter)
    infra_away_s: list[tuple[str, float]] = field(default_factory=list)
    exited_on_their_own: Counter[str] = field(default_factory=Counter)  # restarted too
    kills_during_traffic: int = 0
    last_fault_at_s: float = 0.0

    @property
    def total_kills(self) -> int:
        """Every SIGKILL sent."""
        return sum(self.kills.values())


@dataclass
class Injector:
    """Carries out a plan against `fleet` and `infra`, and keeps every process running."""

    fleet: Fleet
    infra: OwnInfra
    plan: list[Fault]
    log: FaultLog = field(default_factory=FaultLog)
    traffic_done: asyncio.Event = field(default_factory=asyncio.Event)
    _killing: set[str] = field(default_factory=set)
    _infra_tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _started: float = 0.0

    async def run(self) -> None:
        """Every fault of the plan at its time (an infrastructure restart runs beside the
        kills that follow it); returns once all are done and every process serves."""
        self._started = time.monotonic()
        supervisor = asyncio.create_task(self._supervise())
        try:
            for fault in self.plan:
                delay = self._started + fault.at_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if fault.target in INFRA:
                    self._infra_tasks.append(asyncio.create_task(self._restart_infra(fault)))
                else:
                    await self._kill(fault.target)
                self.log.last_fault_at_s = time.monotonic() - self._started
            await asyncio.gather(*self._infra_tasks)
            await self.all_serving()
        finally:
            supervisor.cancel()
            await asyncio.gather(supervisor, return_exceptions=True)

    async def all_serving(self, timeout_s: float = 180.0) -> None:
        """Until every process answers its readiness probe."""
        for name in VICTIMS:
            deadline = time.monotonic() + timeout_s
            while not await self.fleet.wait_ready(name, 5.0):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{name} not serving {timeout_s:.0f} s after the faults")
                await asyncio.sleep(0.5)  # the supervisor restarts it if it exited

    async def _kill(self, name: str) -> None:
        self._killing.add(name)
        try:
            if self.fleet.processes[name].poll() is None:
                await asyncio.to_thread(self.fleet.kill, name)
                self.log.kills[name] += 1
                self.log.kills_during_traffic += int(not self.traffic_done.is_set())
            self.fleet.restart(name)
        finally:
            self._killing.discard(name)

    async def _restart_infra(self, fault: Fault) -> None:
        away = await asyncio.to_thread(self.infra.restart, fault.target)
        self.log.infra_restarts[fault.target] += 1
        self.log.infra_away_s.append((fault.target, away))

    async def _supervise(self) -> None:
        """Restart a process that exited without being killed (a start that failed while
        Kafka or PostgreSQL was away exits non-zero), after a second."""
        while True:
            await asyncio.sleep(1.0)
            for name, proc in list(self.fleet.processes.items()):
                if name in self._killing or proc.poll() is None:
                    continue
                self.log.exited_on_their_own[name] += 1
                self.fleet.restart(name)
