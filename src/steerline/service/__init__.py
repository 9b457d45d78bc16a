"""Conversations as a service: agents bound to the event log.

This layer is where the runtime meets the log: it translates each agent's
native events to wire events and appends them, persists inbox and context,
starts runs, and recovers runs a crashed process left behind. Transports and
the HTTP server only call into it and read the log.
"""

from steerline.service.agents import AgentRegistry, AgentSpec
from steerline.service.conversation import Acceptance, Conversation, SubmitMode
from steerline.service.service import ConversationService, ServiceLimits

__all__ = [
    "Acceptance",
    "AgentRegistry",
    "AgentSpec",
    "Conversation",
    "ConversationService",
    "ServiceLimits",
    "SubmitMode",
]
