"""``redis://``: the shared store for several server processes (docs/scaling.md)."""

from steerline.log.redis.options import RedisOptions
from steerline.log.redis.store import RedisEventLog

__all__ = ["RedisEventLog", "RedisOptions"]
