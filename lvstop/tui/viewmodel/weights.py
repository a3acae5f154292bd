"""What a weight edit would do to its service, for the confirmation dialog."""

from __future__ import annotations

from dataclasses import dataclass

from lvstop.model import DestKey, Service


@dataclass(frozen=True, slots=True)
class WeightEffect:
    """What a weight edit would do to its service, for the confirmation dialog."""

    old: int
    new: int
    live_before: int
    live_after: int
    live_dests_after: int
    dests: int

    @property
    def takes_last_weight(self) -> bool:
        return self.live_before > 0 and self.live_after == 0


def weight_effect(svc: Service, dkey: DestKey, new: int) -> WeightEffect:
    d = svc.dest(dkey)
    old = d.weight if d is not None else 0
    after = [new if x.key == dkey else x.weight for x in svc.dests]
    return WeightEffect(old, new, svc.live_weight, sum(after), sum(1 for w in after if w > 0), len(svc.dests))
