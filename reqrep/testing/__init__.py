"""Testing support: exercise services and the code that calls them.

- ``LocalRequestor(service)``: the ``Requestor`` call API (and an ``async`` one, ``acall``;
  ``LocalAsyncRequestor`` has ``AsyncRequestor``'s), served in this process by the real
  ``Worker`` over an in-memory broker: no RabbitMQ needed.
- ``MemoryBroker``: that in-memory broker. Pass ``broker.transport`` to ``Requestor``,
  ``AsyncRequestor``, ``Worker`` or ``Admin`` (``transport=``) to run them against it; it has
  methods to make faults (``close_connections``, ``block``, ``stop``/``start``).
- ``reqrep.testing.pytest_plugin`` (registered with pytest as ``reqrep``): fixtures that run a
  real ``Worker`` against a broker and hand out a ``Requestor`` (``reqrep_worker``,
  ``reqrep_requestor``; override ``reqrep_service`` with your Service), and broker-free ones
  (``reqrep_local``, ``reqrep_memory_broker``).

This package is the one place besides the CLI that imports both sides (requestor and worker).
"""

from reqrep.testing._local import LocalAsyncRequestor, LocalRequestor, MemoryBroker

__all__ = ["LocalAsyncRequestor", "LocalRequestor", "MemoryBroker"]
