"""Testing support: exercise services and the code that calls them.

- ``LocalRequestor(service)``: the ``Requestor`` call API (and an ``async`` one, ``acall``;
  ``LocalAsyncRequestor`` has ``AsyncRequestor``'s)
  served in this process by the service's handlers, through the same JSON envelope, admission
  rules, size limits, deadlines and error mapping as a real worker; no broker needed.
- ``reqrep.testing.pytest_plugin`` (registered with pytest as ``reqrep``): fixtures that run a
  real ``Worker`` against a broker and hand out a ``Requestor`` (``reqrep_worker``,
  ``reqrep_requestor``; override ``reqrep_service`` with your Service).

This package is the one place besides the CLI that imports both sides (requestor and worker).
"""

from reqrep.testing._local import LocalAsyncRequestor, LocalRequestor

__all__ = ["LocalAsyncRequestor", "LocalRequestor"]
