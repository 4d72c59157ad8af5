"""Parts shared by requestors and workers: settings, errors, the wire envelope, JSON."""

from reqrep.common.config import DEFAULT_URL, Settings, redact_url
from reqrep.common.errors import (
    AccessRefused,
    AppError,
    BadRequest,
    BrokerUnreachable,
    CallError,
    CallTimeout,
    ClosedError,
    ConfigError,
    ConnectionLost,
    ForeignReply,
    MessageTooLarge,
    MethodNotFound,
    NoSuchService,
    NoWorkers,
    PoisonRequest,
    PublishRejected,
    RemoteError,
    ReqrepConnectionError,
    ReqrepError,
    SerializationError,
    StartupError,
    TooManyPending,
    TopologyConflict,
)
from reqrep.common.observe import Observer
from reqrep.common.tracecontext import CorrelationFilter

__all__ = [
    "DEFAULT_URL",
    "AccessRefused",
    "AppError",
    "BadRequest",
    "BrokerUnreachable",
    "CallError",
    "CallTimeout",
    "ClosedError",
    "ConfigError",
    "ConnectionLost",
    "CorrelationFilter",
    "ForeignReply",
    "MessageTooLarge",
    "MethodNotFound",
    "NoSuchService",
    "NoWorkers",
    "Observer",
    "PoisonRequest",
    "PublishRejected",
    "RemoteError",
    "ReqrepConnectionError",
    "ReqrepError",
    "SerializationError",
    "Settings",
    "StartupError",
    "TooManyPending",
    "TopologyConflict",
    "redact_url",
]

# Last, so that the real package is what the imports above load.
if __name__ != "reqrep.common":  # a checkout's common/ folder, imported by its bare name
    raise ImportError(
        f"this folder is the package reqrep.common: import reqrep.common, not {__name__} "
        "(importing it under a second name would load a second copy of every module)"
    )
