"""The guard of a stage holding stream state (an analyzer, a tracker): its state is lost with it, so a restarted
one refuses every call (`StateLost`) until the monitor loads its state again, and the calls made for its
predecessor, which Ray would otherwise run on it, cannot go on from nothing. The calls that change its state are
numbered from the last load (`step`); one that does not follow the last (a call before it failed: its batch's
features were lost with a node) is refused too, and so is every call after it until the next load, so the stage
never goes on over a gap."""

from __future__ import annotations

from pipeline.live.analyzer import StateLost


class CallOrder:
    def __init__(self, stage: str):
        self.stage = stage
        self.loaded = False
        self.next_step = 0

    def load(self) -> None:
        """The stage's state was loaded: calls are numbered from 0 again."""
        self.loaded, self.next_step = True, 0

    def check_loaded(self) -> None:
        if not self.loaded:
            raise StateLost(f"the {self.stage} was restarted and holds no state yet")

    def check_step(self, step: int) -> None:
        self.check_loaded()
        if step != self.next_step:
            self.loaded = False
            raise StateLost(f"call {step} came where call {self.next_step} was due: a call before it was lost")
        self.next_step += 1
