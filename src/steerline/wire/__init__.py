"""The wire protocol (SPEC §3.1-3.2): ValueCell-compatible envelopes.

``envelope`` defines the JSON shapes; ``translate`` is the one place where
native runtime events become wire events.
"""

from steerline.wire.envelope import (
    EventName,
    UnifiedResponseData,
    encode_unsealed,
)
from steerline.wire.translate import RunTranslator

__all__ = ["EventName", "RunTranslator", "UnifiedResponseData", "encode_unsealed"]
