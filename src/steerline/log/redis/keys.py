"""Key names. A conversation's keys share the hash tag ``{id}`` (one slot)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = "steerline"

    def conversation(self, conversation_id: str) -> ConversationKeys:
        return ConversationKeys(f"{self.prefix}:{{{conversation_id}}}")

    def tenant(self, tenant: str) -> str:
        """Sorted set of a tenant's conversations by last update (listing)."""
        return f"{self.prefix}:tenant:{tenant}"

    @property
    def running(self) -> str:
        """Set of conversations whose record says running (for the sweeper)."""
        return f"{self.prefix}:running"

    @property
    def aging(self) -> str:
        """Sorted set of conversations by the time of their oldest recorded
        commit (ms): the retention sweep visits those past the cutoff."""
        return f"{self.prefix}:aging"

    def process(self, owner: str) -> str:
        """A process's own stream: control replies and reader wake-ups."""
        return f"{self.prefix}:proc:{owner}"


@dataclass(frozen=True, slots=True)
class ConversationKeys:
    base: str

    @property
    def record(self) -> str:
        return f"{self.base}:rec"

    @property
    def log(self) -> str:
        return f"{self.base}:log"

    @property
    def state(self) -> str:
        return f"{self.base}:state"

    @property
    def lease(self) -> str:
        return f"{self.base}:lease"

    @property
    def control(self) -> str:
        return f"{self.base}:ctl"

    @property
    def collections(self) -> str:
        return f"{self.base}:colls"

    @property
    def times(self) -> str:
        """Commit times by retention tick (see ``scripts._TIMES``)."""
        return f"{self.base}:times"

    @property
    def watchers(self) -> str:
        """On a cluster: the processes that read this log (owner → expiry, ms)."""
        return f"{self.base}:watchers"

    @property
    def fixed(self) -> list[str]:
        """The keys every commit and delete script gets first, in this order:
        record, log, state, lease, control, collections, times."""
        return [
            self.record,
            self.log,
            self.state,
            self.lease,
            self.control,
            self.collections,
            self.times,
        ]

    def items(self, collection: str) -> tuple[str, str]:
        """The items hash and its insertion-order sorted set."""
        return f"{self.base}:items:{collection}", f"{self.base}:order:{collection}"
