"""``redis://``: the shared store for several server processes (docs/scaling.md)."""

from steerline.log.redis.store import RedisEventLog, RedisOptions

__all__ = ["RedisEventLog", "RedisOptions"]
