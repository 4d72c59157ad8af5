"""reqrep: request-reply (RPC) over RabbitMQ.

The package face: everything a user needs is importable from here::

    from reqrep import AsyncRequestor, Requestor, Service, Worker, current, Settings, ReqrepError

The layers below point one way: ``reqrep.common`` (settings, errors, the wire envelope) imports
neither side; ``reqrep.requestor`` and ``reqrep.worker`` import ``common`` and never each other;
``reqrep.cli`` alone imports both.
"""

from reqrep.common import (
    DEFAULT_URL,
    AccessRefused,
    BadRequest,
    BrokerUnreachable,
    CallError,
    CallTimeout,
    ClosedError,
    ConfigError,
    ConnectionLost,
    CorrelationFilter,
    ForeignReply,
    MessageTooLarge,
    MethodNotFound,
    NoSuchService,
    NoWorkers,
    Observer,
    PoisonRequest,
    PublishRejected,
    RemoteError,
    ReqrepConnectionError,
    ReqrepError,
    SerializationError,
    Settings,
    TooManyPending,
    TopologyConflict,
    redact_url,
)
from reqrep.requestor import (
    Admin,
    AsyncRequestor,
    BroadcastReply,
    BroadcastResult,
    DeadLetter,
    Replayed,
    ReplyStats,
    Requestor,
    ServiceStatus,
    WorkerInfo,
)
from reqrep.worker import (
    CallContext,
    ConsumerStats,
    Handler,
    PlainService,
    Service,
    Worker,
    current,
)

__version__ = "0.2.0"

__all__ = [
    "DEFAULT_URL",
    "AccessRefused",
    "Admin",
    "AsyncRequestor",
    "BadRequest",
    "BroadcastReply",
    "BroadcastResult",
    "BrokerUnreachable",
    "CallContext",
    "CallError",
    "CallTimeout",
    "ClosedError",
    "ConfigError",
    "ConnectionLost",
    "ConsumerStats",
    "CorrelationFilter",
    "DeadLetter",
    "ForeignReply",
    "Handler",
    "MessageTooLarge",
    "MethodNotFound",
    "NoSuchService",
    "NoWorkers",
    "Observer",
    "PlainService",
    "PoisonRequest",
    "PublishRejected",
    "RemoteError",
    "Replayed",
    "ReplyStats",
    "ReqrepConnectionError",
    "ReqrepError",
    "Requestor",
    "SerializationError",
    "Service",
    "ServiceStatus",
    "Settings",
    "TooManyPending",
    "TopologyConflict",
    "Worker",
    "WorkerInfo",
    "__version__",
    "current",
    "redact_url",
]
