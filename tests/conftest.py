"""Suite order: unit tests first, then the integration modules that start their own engines,
then the modules that share the session's relay applications.

The session fixture ``relay_server`` (tests/integration/conftest.py) keeps eight engines alive
until the last test. A module that starts its own Ray instance or tier servers (autoscaling,
multi-node, the trained and scaled models) used to run beside them: on 2 cores and 24 GiB the
trained tier servers started with memory at 21 GiB used and the multi-node cluster ran 1.6x
slower. Run before the session starts, they have the machine to themselves.

Only whole modules move (module-scoped fixtures stay in one block), and the order within each
group is pytest's own.
"""

from __future__ import annotations

SESSION_FIXTURE = "relay_server"


def _group(module_path: str, uses_session: bool) -> int:
    if "/tests/unit/" in module_path:
        return 0
    return 2 if uses_session else 1


def pytest_collection_modifyitems(session, config, items):
    uses_session: dict[str, bool] = {}
    for item in items:
        path = str(item.path)
        uses_session[path] = uses_session.get(path, False) or SESSION_FIXTURE in item.fixturenames
    # A stable sort keeps each module's tests contiguous and in their collected order.
    items.sort(key=lambda item: _group(str(item.path), uses_session[str(item.path)]))
