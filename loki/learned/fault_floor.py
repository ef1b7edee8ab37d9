"""GCC's estimate as a floor for a learned controller through a network fault and its recovery.

A network knows the conditions it was trained on. Faults are rare there and their aftermath
rarer: measured in ``bench/faults.py`` (session 3), the learned controllers cut too deep or came
back slower than GCC after a 5 s outage, a 30 % loss burst or an RTT jump from 40 ms to 1 s (``rl``
held 30 kbps for 10 s on a 3 Mbps link because it read the 960 ms delay step as congestion). GCC's
rules were written for exactly those events, so from a detected fault until the controller has
climbed back, GCC's target is a floor under the controller's (a quarter of it while the fault
lasts, all of it after). Elsewhere the network is free: the floor costs nothing where the
networks do well.

OnRL (MobiCom'20) switches from its learned policy to a rule-based one when the policy behaves
abnormally, and back when things are normal again; this floor is that idea made narrow: it only
raises the target, and only from a detected fault until GCC's recovery.

A fault is detected when any of these holds (each threshold is a figure GCC itself uses, or a
margin far outside normal operation):

* no feedback report for :data:`FEEDBACK_GAP_US` (an outage or a feedback blackout; the
  receiver reports every 100 ms);
* a receiver report with more than :data:`HIGH_LOSS_SHARE` loss (GCC's own high-loss threshold,
  above which it cuts its rate);
* the input guard refused the observation (inputs outside the training range);
* the network's target fell below :data:`COLLAPSE_SHARE` of GCC's (the network is acting far from
  the reference; the threshold is loose on purpose, so normal caution stays the network's);
* (session 9) a capacity drop: GCC's target fell below :data:`DROP_SHARE` of its highest in the
  last :data:`DROP_WINDOW_US` (a fifth within 5 s: a link that lost most of its capacity; GCC's
  cut keeps the loss under its threshold, so nothing else fires). Its onset level is that
  highest target. After it the floor keeps a controller that scales GCC down (the hybrid, by
  0.75 while GCC climbed back after issue 7's 10x drop) climbing with GCC.

While a fault is under way (feedback still missing, or another detection less than
:data:`QUIET_US` ago) the network handles it: cutting deeper than GCC is caution, not harm, so
the floor is only :data:`COLLAPSE_SHARE` of the reference. Once the fault is over (for a
feedback gap: at the first report after it), the floor is the reference itself, until the
controller's target is back to :data:`RECOVERED_SHARE` of what it was when the fault began and
at least :data:`HOLD_US` after the fault ended; it lapses :data:`MAX_FLOOR_US` after the last
detection in any case (a lasting capacity drop is not a fault to wait out). The reference is
GCC's target, but never above the controller's own target when the fault began: GCC runs beside
the network without setting the send rate, so its estimate may sit above what was being sent,
and a fault is no reason to send more.

The other direction (session 6): once :data:`LOSS_CAP_REPORTS` receiver reports in a row say
more than :data:`HIGH_LOSS_SHARE` is lost, the network's target is also *capped* by GCC's loss
rule applied to the rate actually sent (x (1 - loss / 2) per such report, the cap never rising
while the loss lasts, gone :data:`LOSS_CAP_US` after the last one). A network that overshoots
the link out of its training conditions otherwise has nothing that makes it stop: a discarded
PPO run sat at 1.6 x a constant link after an outage, a third of its packets lost and no frame
rendered for a minute. On the shipped models the cap changes the development set's figures by
at most 3 points; it costs them stall on links whose short queues lose more than 10 % for
seconds at a time (loki/LEARNING.md).

A path change (session 9): the one-way delay steps up by :data:`PATH_STEP_100MS` or more
between two reports (no queue grows that fast while packets keep arriving) and then stays at
the new level, with no loss, for :data:`PATH_CONFIRM_REPORTS` reports. That is a longer path
(a handover, a reroute), not congestion: GCC, which reads only delay *gradients*, holds its
rate through it, while the networks read the level as a queue and cut (issue 7's RTT jump
from 40 ms to 1 s, where every learned controller recovered slower than GCC). Once confirmed,
and for :data:`PATH_HOLD_US` after the delay last sat at that level or stepped back down, the
target is kept at or above what the controller sent when the change began, also when the
input guard refuses the observations (it does at the step back down). An outage's backlog
also steps the delay up, but it drains or overflows (loss) afterwards, so it is not confirmed;
a queue growing on top of the new level lowers the floor to the rate that got through; and a
confirmed change is held for :data:`PATH_MAX_US` at most (a standing queue can mimic one).
"""

from __future__ import annotations

from collections import deque

#: No feedback for this long is an outage or a blackout (ten report intervals).
FEEDBACK_GAP_US = 1_000_000
#: A receiver report with more than this share of packets lost (GCC's high-loss threshold).
HIGH_LOSS_SHARE = 0.10
#: A network target below this share of GCC's is a collapse.
COLLAPSE_SHARE = 0.25
#: A fault seen in one report (loss, guard, collapse) is over when nothing was detected for
#: this long; a feedback gap is over at the first report after it.
QUIET_US = 1_000_000
#: The floor lasts at least this long after the fault ended.
HOLD_US = 5_000_000
#: The controller has recovered at this share of its target at the fault's start.
RECOVERED_SHARE = 0.9
#: The floor lapses this long after the last detection, recovered or not.
MAX_FLOOR_US = 60_000_000
#: After a high-loss receiver report the network's target is capped for this long (two
#: receiver-report intervals: the cap holds while loss stays high, and ends soon after).
LOSS_CAP_US = 2_000_000
#: The cap starts at this many receiver reports in a row with high loss: loss that lasts (the
#: failure it is for), not one burst. Chosen on the training families' RTT x queue sweep,
#: where starting at the first report cost loki 9.5 points of mean stall against no cap and
#: starting at the second 3.6 (loki/LEARNING.md, session 6).
LOSS_CAP_REPORTS = 2
#: A rise of the report's mean queueing delay by this much (100 ms units) from one report to
#: the next starts a path-change candidate.
PATH_STEP_100MS = 5.0
#: The candidate is confirmed when this many reports in a row keep the delay within
#: :data:`PATH_LEVEL_TOL_100MS` of the level it stepped to, each losing at most
#: :data:`PATH_LOSS_SHARE` of its packets.
PATH_CONFIRM_REPORTS = 5
PATH_LEVEL_TOL_100MS = 1.0
PATH_LOSS_SHARE = 0.02
#: The path floor holds this long after the delay last sat at the changed level (or stepped
#: back down): the guard refuses the step back for about ten reports.
PATH_HOLD_US = 2_000_000
#: A fall by this much below the level (half a step: a report can straddle the return) is the
#: path coming back.
PATH_RETURN_100MS = PATH_STEP_100MS / 2
#: A level this high is not a candidate: the feature is clipped at 3 s, and a clipped delay
#: cannot show whether it stays level (a 5 s outage's backlog reads as 3 s throughout).
PATH_MAX_LEVEL_100MS = 25.0
#: A path floor lasts at most this long after it was confirmed: a standing queue that
#: mimics a path change (a short outage's backlog with the rate held at capacity) is not held
#: on to for longer.
PATH_MAX_US = 15_000_000
#: A capacity drop: the GCC beside the network falls below this share of its highest target
#: within :data:`DROP_WINDOW_US`. (On the development set it moved every learned controller's
#: figures by at most 2 points; loki/LEARNING.md, session 9.)
DROP_SHARE = 0.2
DROP_WINDOW_US = 5_000_000


class FaultFloor:
    """Detects faults from the controller's inputs; says when GCC's target is the floor and
    when high loss caps the network's target."""

    __slots__ = (
        "_gap_open",
        "_high_loss_run",
        "_last_fault_us",
        "_last_report_us",
        "_loss_cap_bps",
        "_loss_cap_until_us",
        "_onset_bps",
        "_path_count",
        "_path_level",
        "_path_onset_bps",
        "_path_since_us",
        "_path_until_us",
        "_point_until_us",
        "_prev_qdelay",
        "_prev_target_bps",
        "_recent_gcc",
        "capped",
        "causes",
        "faults",
        "floored",
    )

    def __init__(self) -> None:
        self._last_report_us: int | None = None
        self._last_fault_us: int | None = None
        self._onset_bps = 0
        #: Feedback is missing now (a gap detected and no report since).
        self._gap_open = False
        #: A fault seen in one report is under way until then.
        self._point_until_us = 0
        #: Fault detections that started a floor.
        self.faults = 0
        #: Decisions whose target the floor raised.
        self.floored = 0
        #: Decisions whose target the loss cap lowered.
        self.capped = 0
        self._loss_cap_until_us = 0
        self._loss_cap_bps = 0
        self._high_loss_run = 0
        #: Detections by cause (every one, also while a floor holds).
        self.causes: dict[str, int] = {
            "gap": 0,
            "loss": 0,
            "guard": 0,
            "collapse": 0,
            "path": 0,
            "drop": 0,
        }
        #: (time, GCC's target) at the decisions of the last DROP_WINDOW_US that no later one
        #: matched or exceeded: targets decrease from the front, which is the window's highest.
        self._recent_gcc: deque[tuple[int, int]] = deque()
        self._prev_qdelay: float | None = None
        self._prev_target_bps = 0
        #: The delay level of a path-change candidate (or of a confirmed change), else None.
        self._path_level: float | None = None
        self._path_count = 0
        self._path_onset_bps = 0
        self._path_until_us = 0
        self._path_since_us = 0

    # -- detection ------------------------------------------------------------------------------
    def _fault(self, cause: str, at_us: int, target_bps: int) -> None:
        self.causes[cause] += 1
        if self._last_fault_us is None:
            self.faults += 1
            self._onset_bps = target_bps
        self._last_fault_us = at_us
        if cause != "gap":
            self._point_until_us = at_us + QUIET_US

    def on_report(self, at_us: int) -> None:
        """A non-empty feedback report arrived."""
        if self._gap_open:
            # The gap is over: what follows is its aftermath, the floor's time.
            self._gap_open = False
            self._last_fault_us = at_us
        self._last_report_us = at_us

    def on_tick(self, at_us: int, target_bps: int) -> None:
        """Time passes (the controller's process interval): checks for a feedback gap."""
        last = self._last_report_us
        if last is not None and at_us - last >= FEEDBACK_GAP_US:
            self._gap_open = True
            self._fault("gap", at_us, target_bps)

    def on_loss_report(self, lost: int, expected: int, at_us: int, target_bps: int) -> None:
        if expected <= 0:
            return  # an empty report says nothing
        if lost <= HIGH_LOSS_SHARE * expected:
            self._high_loss_run = 0
        else:
            self._fault("loss", at_us, target_bps)
            self._high_loss_run += 1
            if self._high_loss_run < LOSS_CAP_REPORTS:
                return
            # GCC's loss rule (x (1 - loss / 2) per report above 10 %), applied to the rate
            # actually sent: the GCC beside the network has its own rate, not this one.
            # (A report claiming more lost than expected is garbage, not 100 % loss.)
            cut_bps = round(target_bps * (1.0 - 0.5 * min(lost / expected, 1.0)))
            if at_us < self._loss_cap_until_us:
                cut_bps = min(cut_bps, self._loss_cap_bps)
            self._loss_cap_bps = cut_bps
            self._loss_cap_until_us = at_us + LOSS_CAP_US

    def on_delay(
        self, at_us: int, queue_delay_100ms: float, loss: float, recv_bps: float, target_bps: int
    ) -> None:
        """A report's mean queueing delay (100 ms units), loss share and received rate: the
        path-change detector."""
        prev, q = self._prev_qdelay, float(queue_delay_100ms)
        before_bps, self._prev_target_bps = self._prev_target_bps, target_bps
        self._prev_qdelay = q
        if prev is None or q != q:  # NaN: the report says nothing about delay
            return
        level = self._path_level
        confirmed = level is not None and self._path_count >= PATH_CONFIRM_REPORTS
        if level is not None and q <= level - PATH_RETURN_100MS:
            # Back down (a report can straddle the return, so half a step counts): if the
            # change was confirmed, hold through the guard's refusals of the step.
            if confirmed:
                self._path_until_us = at_us + PATH_HOLD_US
            self._path_level = None
            return
        if q >= prev + PATH_STEP_100MS or (
            level is not None and not confirmed and q > level + PATH_LEVEL_TOL_100MS
        ):
            # A step up, or a candidate still rising (the report after a step can straddle
            # it): the level is this report's.
            if q >= PATH_MAX_LEVEL_100MS:
                self._path_level = None
                return
            if level is None:
                # What was sent before the step: a step this large arrives after a feedback
                # gap, through which GCC's rules may have cut.
                self._path_onset_bps = before_bps
            self._path_level = q
            self._path_count = 0
            return
        if level is None:
            return
        if loss > PATH_LOSS_SHARE or q < level - PATH_LEVEL_TOL_100MS:
            # A queue overflowing or draining: not a path change (or no longer one).
            self._path_level = None
            self._path_count = 0
            self._path_until_us = min(self._path_until_us, at_us)
            return
        if q > level + PATH_LEVEL_TOL_100MS:
            # A queue growing on top of the changed path: the rate held was more than the
            # link carries; hold only what got through, from the new level on.
            self._path_onset_bps = min(self._path_onset_bps, round(recv_bps))
            self._path_level = q
        self._path_count += 1
        if self._path_count == PATH_CONFIRM_REPORTS:
            self.causes["path"] += 1
            self._path_since_us = at_us
        if self._path_count >= PATH_CONFIRM_REPORTS and at_us - self._path_since_us < PATH_MAX_US:
            self._path_until_us = at_us + PATH_HOLD_US

    def path_floor_bps(self, proposed_bps: int, at_us: int, *, count: bool = True) -> int:
        """``proposed_bps``, or what was sent before a path change while one holds.

        ``count=False`` where the decision is already a fallback (the guard's): one decision,
        one count."""
        if at_us < self._path_until_us and proposed_bps < self._path_onset_bps:
            self.floored += int(count)
            return self._path_onset_bps
        return proposed_bps

    def on_refused(self, at_us: int, target_bps: int) -> None:
        """The input guard refused an observation."""
        self._fault("guard", at_us, target_bps)

    # -- the floor ------------------------------------------------------------------------------
    def floor_bps(self, proposed_bps: int, gcc_bps: int, at_us: int) -> int:
        """The target to use after a decision: ``proposed_bps``, or the floor where it holds.

        A collapse is measured against GCC's target, so GCC's target is its onset level: the
        network slid there over several decisions, and the target at the last of them says
        nothing about where it was.
        """
        if proposed_bps < COLLAPSE_SHARE * gcc_bps:
            self._fault("collapse", at_us, gcc_bps)
        self._check_drop(gcc_bps, at_us)
        if not self.active(proposed_bps, at_us):
            return proposed_bps
        floor = min(gcc_bps, self._onset_bps)
        if self.under_way(at_us):
            floor = round(COLLAPSE_SHARE * floor)
        if proposed_bps < floor:
            self.floored += 1
            return floor
        return proposed_bps

    def _check_drop(self, gcc_bps: int, at_us: int) -> None:
        """A capacity drop: GCC's target below DROP_SHARE of its highest in DROP_WINDOW_US."""
        # A running maximum over the window (a monotonic queue): O(1) per decision, where a
        # scan of 5 s of decisions cost a tenth of loki's decision time.
        recent = self._recent_gcc
        while recent and recent[0][0] < at_us - DROP_WINDOW_US:
            recent.popleft()
        while recent and recent[-1][1] <= gcc_bps:
            recent.pop()
        recent.append((at_us, gcc_bps))
        high = recent[0][1]
        if gcc_bps < DROP_SHARE * high:
            self._fault("drop", at_us, high)

    def cap_bps(self, proposed_bps: int, at_us: int) -> int:
        """The target to use after a decision: ``proposed_bps``, or the loss cap while loss is
        high.

        Why a cap as well as a floor: a network that keeps sending above the link under heavy
        loss never sees its frames complete, and nothing in the inputs it was trained on may
        say stop (measured: a PPO run that sat at 1.6 x a constant link after an outage, with
        a third of its packets lost and no frame rendered for a minute). GCC cuts by rule
        under loss above 10 %: at each such receiver report the cap is the rate then sent x
        (1 - loss / 2), never rising while the loss lasts. (Capping at the parallel GCC's
        target instead was tried: that GCC can sit near its minimum while the network sends,
        and it held the clone at 44 kbps after a 10x capacity drop.)
        """
        if at_us < self._loss_cap_until_us and proposed_bps > self._loss_cap_bps:
            self.capped += 1
            return self._loss_cap_bps
        return proposed_bps

    def path_holds(self, at_us: int) -> bool:
        """Whether the floor of a path change is in force now."""
        return at_us < self._path_until_us

    def under_way(self, at_us: int) -> bool:
        """Whether a fault is going on now (as opposed to being recovered from)."""
        return self._last_fault_us is not None and (self._gap_open or at_us < self._point_until_us)

    def active(self, target_bps: int, at_us: int) -> bool:
        """Whether the floor holds now (ends it when its time is up)."""
        last = self._last_fault_us
        if last is None:
            return False
        since = at_us - last
        if since < HOLD_US:
            return True
        if since < MAX_FLOOR_US and target_bps < RECOVERED_SHARE * self._onset_bps:
            return True
        self._last_fault_us = None
        return False
