"""Crash and replica trials with humans in them (issue 11): the live daemon, SIGKILLed at a seeded
random point while operators pause and resume, an incident opens and closes, a human takes traffic
over, the kill switch goes on and off and a service is redeployed mid-rollout; restarted on the same
config and journal; every service must end as an uninterrupted run ends.

Used by tests/reliability/test_story_trials.py. Each daemon is `run_live` in a subprocess on the
test's shared virtual clock (tests/integration/live_harness.py `LiveProcess`) with the real
google-cloud clients, the Pub/Sub emulator and the Cloud Run / Monitoring / Logging fakes. Operators
use `rollbackd ctl` (`daemon.ctl.ctl_main`, publishing to the events topic), the incident is a native
`alert` event on the same topic, the human's traffic change goes straight to the Cloud Run fake
(`set_traffic_by_hand`), as gcloud would. A command reaches one daemon: with replicas the others
only learn it from the service's `rollbackd.dev/*` record.

The stories (one service each; the scenario script `Script` drives them in a thread, the world
going on while a daemon is dead):

  steady    healthy canary, left alone                       completed, 5 → 25 → 50 → 100
  broken    bad canary                                       rolled-back, 5 → 0
  paused    `ctl pause` at 5%, `ctl resume` 4 minutes later  completed, 5 → 25 → 50 → 100
  alerted   incident opened at 25% (policy: hold), closed    completed, 5 → 25 → 50 → 100
  halted    a human sets the canary to 20% at 5%             halted, the human's 80/20 stays
  redeploy  a third revision deployed at 25%                 new canary completed, the old one at 0%

and, for all of them, `ctl kill-switch-on '*'` once every story has been started, `kill-switch-off`
4 minutes later: nothing may change traffic in between.

`outcome()` is what is compared with the uninterrupted run: per service the status annotation, the
canary annotation, the final traffic (revisions with a share), and the walk of traffic changes the
Cloud Run fake accepted (each canary's share, in order), so a change applied twice shows up.
`problems()` adds the safety checks that do not depend on where the kill fell: no traffic change
while the record said paused, held on the alert or kill-switched; none inside the measured pause,
alert and kill-switch windows; and decision numbers 1..N per rollout in a daemon's journal.
"""
from __future__ import annotations

import random
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from daemon.core.commands import ANNOTATION_PREFIX as P
from tests.integration.live_harness import (PRINCIPAL, SHORT_POLICY, START, TOKENS, Fakes, LiveProcess, Publisher,
                                            RevisionProfile, incident_notification,
                                            SharedClock, Topics, TrafficFeeder, audit_replace_service,
                                            journal_records, live_settings, monitoring_sink, wait_until,
                                            write_config)

SPEED = 120.0  # a virtual minute is half a wall second
HEALTHY = RevisionProfile(error_ratio=0.0005, latency_median_ms=90)
BROKEN = RevisionProfile(error_ratio=0.08, latency_median_ms=90)
OPERATOR = "alice@example.com"  # the short policy authorises *@example.com
HELD_MINUTES = 4.0  # how long a pause, an incident and the kill switch last (virtual minutes)
STEP_WAIT_S = 120.0  # a script step waits this long (wall) for its moment; a restart is inside it
FINISH_S = 150.0
SERVICES = ("steady", "broken", "paused", "alerted", "halted", "redeploy")
BY_HAND = 20  # the canary share the human sets on `halted`

# What every service ends with when nothing is killed (`test_uninterrupted_run_ends_as_expected`
# checks that this is what an uninterrupted run does): status, canary, traffic, canary walks.
WALK = (5, 25, 50, 100)
EXPECTED: dict[str, dict[str, Any]] = {
    "steady": {"status": "completed", "canary": "steady-00042-cnry", "traffic": {"steady-00042-cnry": 100},
               "walks": {"steady-00042-cnry": WALK}},
    "broken": {"status": "rolled-back", "canary": "broken-00042-cnry", "traffic": {"broken-00041-base": 100},
               "walks": {"broken-00042-cnry": (5, 0)}},
    "paused": {"status": "completed", "canary": "paused-00042-cnry", "traffic": {"paused-00042-cnry": 100},
               "walks": {"paused-00042-cnry": WALK}},
    "alerted": {"status": "completed", "canary": "alerted-00042-cnry", "traffic": {"alerted-00042-cnry": 100},
                "walks": {"alerted-00042-cnry": WALK}},
    "halted": {"status": "halted", "canary": "halted-00042-cnry",
               "traffic": {"halted-00041-base": 100 - BY_HAND, "halted-00042-cnry": BY_HAND},
               "walks": {"halted-00042-cnry": (5,)}},
    "redeploy": {"status": "completed", "canary": "redeploy-00043-next",
                 "traffic": {"redeploy-00043-next": 100},
                 "walks": {"redeploy-00042-cnry": (5, 25, 0), "redeploy-00043-next": WALK}},
}

_OVERRIDES = """\
  - match: {service: halted}     # stays at 5% until the human acts: no race with a promotion
    policy:
      phases:
        - {name: phase 1, traffic: 5%, duration: 30m, max_extension: 4m, criteria: [error_rate, error_ratio]}
        - {name: phase 2, traffic: 25%, duration: 2m, max_extension: 4m, criteria: [error_rate, error_ratio]}
        - {name: phase 3, traffic: 50%, duration: 2m, max_extension: 4m, criteria: [error_rate, error_ratio]}
        - {name: phase 4, traffic: 100%}
  - match: {service: redeploy}   # stays at 25% long enough for the redeploy to land there
    policy:
      phases:
        - {name: phase 1, traffic: 5%, duration: 2m, max_extension: 4m, criteria: [error_rate, error_ratio]}
        - {name: phase 2, traffic: 25%, duration: 6m, max_extension: 4m, criteria: [error_rate, error_ratio]}
        - {name: phase 3, traffic: 50%, duration: 2m, max_extension: 4m, criteria: [error_rate, error_ratio]}
        - {name: phase 4, traffic: 100%}
  - match: {service: alerted}    # an incident holds this one (the short policy rolls back on one)
    policy:
      alerts: {on_open: hold}
"""


def revisions(service: str) -> tuple[str, str, str]:
    """baseline, canary, and the redeploy's new canary."""
    return f"{service}-00041-base", f"{service}-00042-cnry", f"{service}-00043-next"


def write_policy(tmp: Path) -> str:
    text = Path(SHORT_POLICY).read_text(encoding="utf-8")
    assert "overrides: []" in text
    path = tmp / "stories-policy.yaml"
    path.write_text(text.replace("overrides: []", "overrides:\n" + _OVERRIDES), encoding="utf-8")
    return str(path)


# --- the world and its script ---------------------------------------------------------------------

REPLAY_S = 3.0  # wall seconds: what was sent this long before a kill may not have been acknowledged


class Sent:
    """Every message the humans publish, per topic, so a restarted daemon's fresh subscription can
    get again what its predecessor may not have acknowledged (see `run_trial`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.messages: list[tuple[float, str, bytes, str, dict[str, str]]] = []

    def wrap(self, client: Any) -> Any:
        sent = self

        class Recording:
            def publish(self, topic: str, data: bytes, ordering_key: str = "", **attributes: str) -> Any:
                with sent._lock:
                    sent.messages.append((time.monotonic(), topic, data, ordering_key, dict(attributes)))
                return client.publish(topic, data, ordering_key=ordering_key, **attributes)

            def __getattr__(self, name: str) -> Any:
                return getattr(client, name)

        return Recording()

    def replay(self, topic: str, since: float) -> int:
        """Publish again, in order, what went to `topic` since `since` (monotonic wall time)."""
        with self._lock:
            again = [m for m in self.messages if m[1] == topic and m[0] >= since]
        publisher = Publisher(topic)
        for _, _, data, key, attributes in again:
            publisher.client.publish(topic, data, ordering_key=key, **attributes).result(timeout=30)
        return len(again)


@dataclass
class Windows:
    """Moments the script measured, as positions in the Cloud Run fake's traffic log (`changes`): a
    window (start, end) must contain no traffic change (of its service, or of any for the switch)."""

    pause: list[tuple[int, int]] = field(default_factory=list)
    alert: list[tuple[int, int]] = field(default_factory=list)
    kill_switch: list[tuple[int, int]] = field(default_factory=list)


class Script:
    """The humans of the scenario, in a thread: each step waits (on the Cloud Run fake) for its
    moment, then acts. `done[i]` is set when step i has acted (the trials kill a daemon after one)."""

    STEPS = ("pause", "halt by hand", "open incident", "redeploy", "kill switch on", "kill switch off",
             "close incident", "resume")

    def __init__(self, clock: SharedClock, fakes: Fakes, topics: list[Topics], rng: random.Random) -> None:
        self.clock, self.fakes, self.topics, self.rng = clock, fakes, topics, rng
        self.run = fakes.cloud_run
        self.publishers = [Publisher(t.events) for t in topics]
        self.incidents = [Publisher(t.incidents) for t in topics]
        self.sent = Sent()
        for publisher in self.publishers + self.incidents:
            publisher.client = self.sent.wrap(publisher.client)
        self.run.tokens, self.run.anonymous_principal, self.run.clock = dict(TOKENS), PRINCIPAL, clock
        self.run.audit_sink = self.sink
        self.windows = Windows()
        self.done = [threading.Event() for _ in self.STEPS]
        # Which daemons are up (cleared while one is dead): messages go only to a live one's topic.
        self.alive = [threading.Event() for _ in topics]
        for event in self.alive:
            event.set()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="story-script", daemon=True)

    def start(self) -> "Script":
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise AssertionError("the scenario script did not finish")
        if self.error is not None:
            raise AssertionError(f"scenario script: {self.error}")

    # -- helpers
    def share(self, service: str, revision: str | None = None) -> int:
        return self.run.traffic_of(service).get(revision or revisions(service)[1], 0)

    def note(self, service: str) -> dict[str, str]:
        return self.run.annotations_of(service)

    def position(self) -> int:
        return len(changes(self.run))

    def minutes_later(self, minutes: float) -> float:
        return self.clock.now().timestamp() + minutes * 60

    def wait_virtual(self, until: float) -> None:
        wait_until(lambda: self.clock.now().timestamp() >= until, STEP_WAIT_S, "virtual time")

    def publisher(self) -> Publisher:
        """The events topic of one live daemon, chosen at random: a message reaches one replica.
        With every daemon dead (one daemon, killed) the message waits for the restart; the rollouts
        cannot move meanwhile. See `run_trial` for why nothing is sent to a dead daemon's topic."""
        up = wait_until(lambda: [n for n, event in enumerate(self.alive) if event.is_set()], STEP_WAIT_S,
                        "a daemon to be up")
        return self.publishers[self.rng.choice(up)]

    def ctl(self, action: str, service: str, reason: str) -> None:
        """`rollbackd ctl` as the operator: the annotation on the Cloud Run fake, whose audit entry
        reaches one live replica's audit topic (`sink`). The kill switch is written on any service."""
        from tests.integration.live_harness import ctl_as

        token = next(token for token, email in TOKENS.items() if email == OPERATOR)
        code, _, err = ctl_as(token, [action, SERVICES[0] if service == "*" else service, "--reason", reason],
                              self.fakes, self.clock)
        assert code == 0, err

    def sink(self, entry: dict[str, Any]) -> None:
        """The Logging sink, for the humans' updates (rollbackd's own entries are ignored anyway)."""
        if entry["protoPayload"].get("authenticationInfo", {}).get("principalEmail") == PRINCIPAL:
            return
        self.publisher().publish_json(entry, attributes={"logging.googleapis.com/timestamp": entry["timestamp"]})

    def alert(self, state: str) -> None:
        up = wait_until(lambda: [n for n, event in enumerate(self.alive) if event.is_set()], STEP_WAIT_S,
                        "a daemon to be up")
        self.incidents[self.rng.choice(up)].publish_json(
            incident_notification("alerted", "inc-11", state, self.clock.now(), policy_name="alerted 5xx"))

    def _step(self, index: int, condition: Callable[[], Any], what: str, act: Callable[[], None]) -> None:
        wait_until(condition, STEP_WAIT_S, f"step '{self.STEPS[index]}': {what}")
        act()
        self.done[index].set()

    # -- the scenario
    def _main(self) -> None:
        try:
            self._scenario()
        except BaseException as error:  # noqa: BLE001 - reported by join()
            self.error = error
            for event in self.done:
                event.set()  # nobody waits forever on a step that will not come

    def _scenario(self) -> None:
        run = self.run
        self._step(0, lambda: self.share("paused") == 5, "paused at 5%",
                   lambda: self.ctl("pause", "paused", "INC-11: looking at logs"))
        base, canary, _ = revisions("halted")
        self._step(1, lambda: self.share("halted") == 5, "halted at 5%",
                   lambda: run.set_traffic_by_hand("halted", {base: 100 - BY_HAND, canary: BY_HAND}))
        self._step(2, lambda: self.share("alerted") == 25, "alerted at 25%", lambda: self.alert("open"))
        base, canary, new = revisions("redeploy")

        def redeploy() -> None:
            self.fakes.deploy_canary("redeploy", new)
            self.publisher().publish_deploy(audit_replace_service("redeploy", new, base, self.clock.now()))
        self._step(3, lambda: self.share("redeploy") == 25, "redeploy at 25%", redeploy)
        # The pause and the incident are on the services before the switch goes on.
        wait_until(lambda: self.note("paused").get(f"{P}paused") == "true", STEP_WAIT_S, "the pause recorded")
        pause_from = self.position()
        paused_until = self.minutes_later(HELD_MINUTES)
        wait_until(lambda: self.note("alerted").get(f"{P}hold-reason") == "alert", STEP_WAIT_S,
                   "the incident's hold recorded")
        alert_from = self.position()
        alerted_until = self.minutes_later(HELD_MINUTES)
        self._step(4, lambda: True, "", lambda: self.ctl("kill-switch-on", "*", "stop everything"))
        wait_until(lambda: all(self.note(s).get(f"{P}kill-switch") == "on" for s in SERVICES), STEP_WAIT_S,
                   "the kill switch recorded on every service")
        switch_from = self.position()
        self.wait_virtual(self.minutes_later(HELD_MINUTES))
        # Each window ends where the command that ends it is sent (the daemon may act at once).
        self.windows.kill_switch.append((switch_from, self.position()))
        self._step(5, lambda: True, "", lambda: self.ctl("kill-switch-off", "*", "all clear"))
        self.wait_virtual(alerted_until)
        self.windows.alert.append((alert_from, self.position()))
        self._step(6, lambda: True, "", lambda: self.alert("closed"))
        self.wait_virtual(paused_until)
        self.windows.pause.append((pause_from, self.position()))
        self._step(7, lambda: True, "", lambda: self.ctl("resume", "paused", "logs are fine"))


# --- what a run ends with, and its safety checks ---------------------------------------------------

def changes(run: Any) -> list[tuple[str, dict[str, int], dict[str, str]]]:
    """The Cloud Run fake's log of accepted updates that changed a split: (service, split, record).
    Named `traffic_changes` on main since 6f57522 (`traffic_updates` became a request filter there);
    `traffic_updates` before."""
    log = getattr(run, "traffic_changes", None)
    return list(log if isinstance(log, list) else run.traffic_updates)


def outcome(run: Any) -> dict[str, dict[str, Any]]:
    """Per service: status and canary annotations, final traffic (shares > 0), each canary's walk."""
    out: dict[str, dict[str, Any]] = {}
    for service in SERVICES:
        notes = run.annotations_of(service)
        walks: dict[str, list[int]] = {}
        previous: dict[str, int] = {}
        for name, split, _ in changes(run):
            if name != service:
                continue
            for revision in revisions(service)[1:]:
                share = split.get(revision, 0)
                if share != previous.get(revision, 0):
                    walks.setdefault(revision, []).append(share)
                previous[revision] = share
        out[service] = {"status": notes.get(f"{P}status", ""), "canary": notes.get(f"{P}canary", ""),
                        "traffic": {r: p for r, p in run.traffic_of(service).items() if p},
                        "walks": {r: tuple(w) for r, w in walks.items()}}
    return out


def differences(got: dict[str, dict[str, Any]], want: dict[str, dict[str, Any]] = EXPECTED) -> list[str]:
    return [f"{service}: ended {got.get(service)}, uninterrupted {want[service]}"
            for service in want if got.get(service) != want[service]]


def safety_problems(run: Any, windows: Windows) -> list[str]:
    problems: list[str] = []
    updates = list(changes(run))
    for start, end in windows.kill_switch:
        moved = [(s, split) for s, split, _ in updates[start:end]]
        if moved:
            problems.append(f"traffic changed while the kill switch was on: {moved}")
    for label, service, spans in (("paused", "paused", windows.pause), ("held on the incident", "alerted",
                                                                          windows.alert)):
        for start, end in spans:
            moved = [split for s, split, _ in updates[start:end] if s == service]
            if moved:
                problems.append(f"{service}: traffic changed while {label}: {moved}")
    # Every accepted update of a service was written over the record its previous update left
    # (etag-guarded): a traffic change over a paused, alert-held or kill-switched record is a
    # promotion the record forbade.
    record: dict[str, dict[str, str]] = {}
    share: dict[str, dict[str, int]] = {}
    for service, split, notes in run.accepted_updates:
        before, was = record.get(service, {}), share.get(service)
        if was is not None and split != was and any(split.get(r, 0) > was.get(r, 0) for r in split
                                                     if r != revisions(service)[0]):
            why = [k for k, v in ((f"{P}paused", "true"), (f"{P}kill-switch", "on")) if before.get(k) == v]
            if before.get(f"{P}hold-reason") == "alert":
                why.append("held on an incident")
            if why:
                problems.append(f"{service}: promoted {was} -> {split} over a record saying {why}")
        record[service], share[service] = notes, split
    return problems


def journal_problems(path: Path) -> list[str]:
    """Decision numbers 1..N per rollout in one daemon's journal (none lost, none twice)."""
    problems: list[str] = []
    by_rollout: dict[str, set[int]] = {}
    for record in journal_records(path):
        if record.get("type") == "decision" and record.get("service") in SERVICES:
            rollout, _, number = record["decision_id"].rpartition("#")
            by_rollout.setdefault(rollout, set()).add(int(number))
    for rollout, numbers in sorted(by_rollout.items()):
        if sorted(numbers) != list(range(1, max(numbers) + 1)):
            problems.append(f"{rollout}: decision numbers {sorted(numbers)} have a gap")
    return problems


# --- a trial ---------------------------------------------------------------------------------------

@dataclass
class Trial:
    """What happened: the outcome, problems found, and where the daemons were killed."""

    outcome: dict[str, dict[str, Any]]
    problems: list[str]
    kills: list[str]


def fresh_subscription(topics: Topics, incarnation: int) -> str:
    """A new subscription on a daemon's events topic, for one incarnation of that daemon (see
    `run_trial` for why a restarted daemon does not reuse its predecessor's)."""
    from daemon.adapters.pubsub_source import ensure_subscription, make_publisher, make_subscriber

    path = f"{topics.subscription}-{incarnation}"
    publisher, subscriber = make_publisher(), make_subscriber()
    try:
        ensure_subscription(publisher, subscriber, topics.events, path, ordering=True)
        ensure_subscription(publisher, subscriber, topics.incidents, f"{topics.incidents_subscription}-{incarnation}",
                            ordering=True)
    finally:
        subscriber.close()
    return path


def run_trial(tmp: Path, *, seed: int, replicas: int = 1, kills: int = 1) -> Trial:
    """One run of the scenario with `replicas` daemons. `kills` times, a seeded random replica is
    SIGKILLed a seeded random 0-1.5 s after a seeded random script step has acted, left dead up to
    1 s while virtual time, traffic and metrics go on, and restarted on the same config and journal.
    kills=0 is the uninterrupted run.

    Each replica reads its own events topic and every message goes to one of them, chosen at random:
    a command reaches one replica, the others learn it from the service's record. (Two replicas on
    one subscription would model the same, but the Pub/Sub emulator does not notice a SIGKILLed
    subscriber's stream: it keeps pushing to it, and the ordering keys that stream had seen were
    never redelivered in 80 s when measured. So nothing is published to a dead daemon's topic, and a
    restarted daemon gets a fresh subscription on its topic, on which what was sent to that topic in
    the REPLAY_S seconds before the kill is published again, in order: Pub/Sub's redelivery of what
    the dead daemon may not have acknowledged, with the duplicates at-least-once delivery allows.)"""
    rng = random.Random(seed)
    clock = SharedClock(START, speed=SPEED)
    problems: list[str] = []
    killed: list[str] = []
    with Fakes(clock) as fakes:
        for service in SERVICES:
            fakes.add_managed_service(service, revisions(service)[0])
        topics = [Topics.create(f"stories{seed}r{n}") for n in range(replicas)]
        policy = write_policy(tmp)
        journals = [tmp / f"journal-{n}.jsonl" for n in range(replicas)]
        incarnations = [0] * replicas

        def config(n: int) -> str:
            subscription = topics[n].subscription if incarnations[n] == 0 else \
                fresh_subscription(topics[n], incarnations[n])
            incidents = topics[n].incidents_subscription + ("" if incarnations[n] == 0 else f"-{incarnations[n]}")
            settings = live_settings(fakes, topics[n], journals[n], policy=policy, audit_subscription=subscription,
                                     incidents_subscription=incidents)
            return write_config(settings, tmp / f"rollbackd-{n}-{incarnations[n]}.yaml")

        feeder = TrafficFeeder(clock, fakes.cloud_run, monitoring_sink(fakes.monitoring), seed=seed)
        # One log per incarnation: `LiveProcess.port()` reads the last "started" line of its log.
        daemons = [LiveProcess(config(n), tmp / f"daemon-{n}-0.log", clock).start() for n in range(replicas)]
        script: Script | None = None
        try:
            for daemon in daemons:
                daemon.port(60)
            script = Script(clock, fakes, topics, random.Random(seed + 1000))
            for service in SERVICES:
                base, canary, new = revisions(service)
                fakes.deploy_canary(service, canary)
                feeder.add(service, {base: HEALTHY, new: HEALTHY,
                                     canary: BROKEN if service == "broken" else HEALTHY})
            feeder.start()
            for service in SERVICES:
                base, canary, _ = revisions(service)
                script.publisher().publish_deploy(audit_replace_service(service, canary, base, clock.now()))
            script.start()
            after_steps = sorted(rng.randrange(len(Script.STEPS)) for _ in range(kills))
            for after in after_steps:
                script.done[after].wait(STEP_WAIT_S)
                time.sleep(rng.uniform(0.0, 1.5))
                victim = rng.randrange(replicas)
                script.alive[victim].clear()
                killed_at = time.monotonic()
                daemons[victim].kill()
                killed.append(f"replica {victim} after '{Script.STEPS[after]}' at {clock.now():%H:%M:%S}")
                time.sleep(rng.uniform(0.0, 1.0))  # the world goes on while it is dead
                incarnations[victim] += 1
                restart_config = config(victim)
                script.sent.replay(topics[victim].events, killed_at - REPLAY_S)
                script.sent.replay(topics[victim].incidents, killed_at - REPLAY_S)
                log = tmp / f"daemon-{victim}-{incarnations[victim]}.log"
                daemons[victim] = LiveProcess(restart_config, log, clock).start()
                daemons[victim].port(60)
                script.alive[victim].set()
            script.join(STEP_WAIT_S * 3)
            try:
                wait_until(lambda: {s: o["status"] for s, o in outcome(fakes.cloud_run).items()}
                           == {s: e["status"] for s, e in EXPECTED.items()}, FINISH_S, "every story to end")
            except AssertionError as error:
                problems.append(str(error))
        except AssertionError as error:
            problems.append(str(error))
        finally:
            feeder.stop()
            for daemon in daemons:
                daemon.kill()
        result = outcome(fakes.cloud_run)
        problems += differences(result)
        if script is not None:
            problems += safety_problems(fakes.cloud_run, script.windows)
        if replicas == 1:
            problems += journal_problems(journals[0])
        problems += [f"feeder: {e}" for e in feeder.errors[:3]]
    return Trial(result, problems, killed)
